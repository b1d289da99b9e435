"""Web chat with Redis unreachable or its pool exhausted: the visitor is told to retry later (not ``internal``),
the log says so once (no traceback per frame), and the resent messages are stored once each."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from connectors.webchat.connector import CLOSE_TRY_AGAIN_LATER, WebchatConnector
from connectors.wechat.connector import WechatConnector
from core.outage import RETRY_AFTER_S
from gateway.app import GATEWAY
from gateway.intake import BotSetup
from gateway.wiring import build_gateway
from tests.conftest import ChatClient, Gateway, make_config, started
from tests.redis_util import REDIS_URL, redis_store
from tests.tcp_proxy import TcpProxy


async def _stored_texts(gw: Gateway, conversation_id: str) -> list[str]:
    store = gw.server.app[GATEWAY].store
    return [m.text for m in await store.messages(conversation_id) if str(m.author) == "customer"]


async def test_with_redis_unreachable_a_visitor_is_told_to_retry_and_the_resend_is_stored_once(
    tmp_path: Path, bot_setup: BotSetup, caplog: pytest.LogCaptureFixture
) -> None:
    store = redis_store()  # skips without Redis; removes the prefix's keys afterwards
    target = urlsplit(REDIS_URL)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    url = urlunsplit(target._replace(netloc=f"127.0.0.1:{proxy.port}"))
    redis = {"backend": "redis", "url": url, "prefix": store.tag, "socket_timeout_s": 1, "pool_timeout_s": 1}
    try:
        async with started(make_config(tmp_path, store=redis), bot_setup) as gw:
            chat = ChatClient(await gw.http.ws_connect(gw.ws_url()))
            conversation_id = (await chat.hello(None, 0))["conversation_id"]
            assert (await chat.say("我想退款", "before"))[0]["duplicate"] is False
            await _delivered(gw, conversation_id)  # the bot's answer is settled before the cut
            unwelcomed = await gw.http.ws_connect(gw.ws_url())  # open, no hello yet
            proxy.cut()
            caplog.clear()
            texts = [f"断网时的第{n}条消息" for n in range(5)]
            with caplog.at_level(logging.INFO):
                for n, text in enumerate(texts):
                    await chat.ws.send_json({"type": "message", "id": f"down-{n}", "text": text})
                    error = await chat.expect("error")
                    assert error["code"] == "store_unavailable", error
                    assert error["id"] == f"down-{n}" and error["retry_after_s"] == RETRY_AFTER_S
                # A hello cannot be answered meanwhile: told so, and the socket closes "try again later" (a new
                # socket is refused at the upgrade already: 503 with Retry-After, as any HTTP request).
                await unwelcomed.send_json({"type": "hello", "token": None, "last_seq": 0})
                refused = await unwelcomed.receive_json(timeout=10)
                assert refused["type"] == "error" and refused["code"] == "store_unavailable", refused
                closed = await unwelcomed.receive(timeout=10)
                assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == CLOSE_TRY_AGAIN_LATER
                with pytest.raises(aiohttp.WSServerHandshakeError) as upgrade:
                    await gw.http.ws_connect(gw.ws_url())
                assert upgrade.value.status == 503 and upgrade.value.headers is not None
                assert upgrade.value.headers["Retry-After"] == str(RETRY_AFTER_S)
            failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(failures) == 1 and "store unavailable" in failures[0].getMessage(), failures
            assert not any(r.exc_info for r in caplog.records)  # no traceback per frame
            assert not chat.ws.closed  # the visitor's socket stays open through the outage

            proxy.heal()
            acks = await _resend(chat, texts)
            assert all(not a["duplicate"] for a in acks)
            again = await _resend(chat, texts)  # the client resends again (it never saw the acks, say)
            assert [a["message_id"] for a in again] == [a["message_id"] for a in acks]
            assert all(a["duplicate"] for a in again)
            stored = await _stored_texts(gw, conversation_id)
            assert stored == ["我想退款", *texts]  # nothing lost, nothing doubled, in order
    finally:
        await proxy.close()
        await store.open()
        await store.close()


async def _delivered(gw: Gateway, conversation_id: str) -> None:
    store = gw.server.app[GATEWAY].store
    for _ in range(500):
        if all(m.delivery is not None for m in await store.messages(conversation_id) if str(m.author) == "bot"):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the bot's answer was never recorded as delivered")


async def _resend(chat: ChatClient, texts: list[str]) -> list[dict[str, Any]]:
    acks = []
    for n, text in enumerate(texts):
        await chat.ws.send_json({"type": "message", "id": f"down-{n}", "text": text})
        acks.append(await chat.expect("ack"))
    return acks


async def test_a_full_pool_queues_web_chat_frames_at_the_gate_instead_of_failing_them(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    """Two pooled connections and a fifth of a second to get one: 40 visitors asking three questions each at once
    get every ack and answer. Without the gate on messages (3 of 3 runs) their store calls raced for the two
    connections, some timed out, and visitors got ``store_unavailable``."""
    store = redis_store()
    redis = {"backend": "redis", "url": REDIS_URL, "prefix": store.tag, "max_connections": 2, "pool_timeout_s": 0.2}
    try:
        async with started(make_config(tmp_path, store=redis), bot_setup) as gw:
            chats = await asyncio.gather(*(gw.chat() for _ in range(40)))
            outcomes = await asyncio.gather(*(_ask_three(c) for c in chats), return_exceptions=True)
            errors = [f for c in chats for f in c.frames if f["type"] == "error"]
            assert not errors, errors[:3]
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            assert not failed, failed[:3]
            await asyncio.gather(*(c.ws.close() for c in chats))
    finally:
        await store.open()
        await store.close()


async def _ask_three(chat: ChatClient) -> None:
    for text in ("我想退款", "怎么开发票", "运费怎么算"):
        ack, reply = await chat.say(text)
        assert ack["duplicate"] is False and reply["author"] == "bot"


def test_web_chat_and_wechat_share_the_process_intake_gate(tmp_path: Path, bot_setup: BotSetup) -> None:
    wechat = {"name": "oa", "channel": "wechat", "token": "t" * 8, "app_id": "wx1", "app_secret": "s" * 16}
    config = make_config(tmp_path, inboxes=[{"name": "web", "channel": "webchat"}, wechat])
    gw = build_gateway(config, bot_setup)
    webchat = next(c for c in gw.connectors.values() if isinstance(c, WebchatConnector))
    oa = next(c for c in gw.connectors.values() if isinstance(c, WechatConnector))
    assert webchat._gate is oa._active
    assert webchat._outage is gw.outage
