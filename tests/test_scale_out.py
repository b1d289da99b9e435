"""Two real ``huiliu serve`` processes on one Redis: no sticky sessions, nothing cached in one process."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from connectors.wechat.signature import sign
from tests.conftest import API_TOKEN
from tests.processes import ready, serve
from tests.redis_util import REDIS_URL, redis_store
from tests.tcp_proxy import TcpProxy
from tests.test_serve import write_config
from tests.wechat.conftest import APP_ID, APP_SECRET, TOKEN, text_xml
from tests.wechat.conftest import inbox as wechat_inbox
from tests.wechat.fake_api import FakeWechat

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@asynccontextmanager
async def _instances(tmp_path: Path, inboxes: list[dict[str, Any]]) -> AsyncIterator[tuple[str, str]]:
    store = redis_store()  # skips without Redis; removes the prefix's keys afterwards
    config = write_config(tmp_path, store={"backend": "redis", "url": REDIS_URL, "prefix": store.tag}, inboxes=inboxes)
    # Started together: they also race to create the inbox's shared session key.
    (a, url_a), (b, url_b) = await asyncio.gather(serve(config), serve(config))
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(ready(http, url_a), ready(http, url_b))
        yield url_a, url_b
    finally:
        for proc in (a, b):
            if proc.returncode is None:
                proc.terminate()
        for proc in (a, b):
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await store.open()
        await store.close()


@pytest.fixture
async def two_instances(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    async with _instances(tmp_path, [{"name": "web", "channel": "webchat", "allowed_origins": ["*"]}]) as urls:
        yield urls


Socket = aiohttp.ClientWebSocketResponse


async def _hello(http: aiohttp.ClientSession, url: str, token: str | None) -> tuple[Socket, dict[str, Any]]:
    ws = await http.ws_connect(url.replace("http://", "ws://") + "/chat/ws")
    await ws.send_json({"type": "hello", "token": token, "last_seq": 0})
    welcome: dict[str, Any] = await ws.receive_json(timeout=10)
    assert welcome["type"] == "welcome"
    return ws, welcome


async def _until(ws: aiohttp.ClientWebSocketResponse, kind: str, **match: Any) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            frame: dict[str, Any] = await ws.receive_json()
            if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                return frame


async def _both(ws: aiohttp.ClientWebSocketResponse, *kinds: str) -> dict[str, dict[str, Any]]:
    """The next frame of each kind, whatever order they come in."""
    got: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(15):
        while set(kinds) - got.keys():
            frame: dict[str, Any] = await ws.receive_json()
            if frame["type"] in kinds and frame["type"] not in got:
                got[frame["type"]] = frame
    return got


async def test_a_reply_posted_to_one_instance_reaches_the_visitor_on_the_other(two_instances: tuple[str, str]) -> None:
    url_a, url_b = two_instances
    async with aiohttp.ClientSession() as http:
        ws, welcome = await _hello(http, url_b, None)
        await ws.send_json({"type": "message", "id": "c1", "text": "转人工"})
        await _until(ws, "status", status="waiting_for_agent")
        async with http.get(url_a + "/api/v1/tickets?status=new", headers=AUTH) as resp:
            (ticket,) = (await resp.json())["tickets"]
        async with http.post(url_a + f"/api/v1/tickets/{ticket['id']}/typing", json={"on": True}, headers=AUTH) as resp:
            assert resp.status == 202 and (await resp.json()) == {"delivered": True}
        assert (await _until(ws, "typing"))["on"] is True
        async with http.post(
            url_a + f"/api/v1/tickets/{ticket['id']}/replies",
            json={"text": "您好，我是客服小王", "agent": "wang"},
            headers={**AUTH, "Idempotency-Key": "reply-1"},
        ) as resp:
            body = await resp.json()
            assert resp.status == 201 and body["delivery"] == "sent"  # live, on the other instance
        reply = await _until(ws, "message", author="agent")
        assert reply["text"] == "您好，我是客服小王"
        # A helpdesk retry with the same key, on the other instance this time: not sent twice.
        async with http.post(
            url_b + f"/api/v1/tickets/{ticket['id']}/replies",
            json={"text": "您好，我是客服小王", "agent": "wang"},
            headers={**AUTH, "Idempotency-Key": "reply-1"},
        ) as resp:
            assert resp.status == 200 and (await resp.json())["duplicate"] is True
        await ws.send_json({"type": "ping"})
        await _until(ws, "pong")
        frames_after, _ = await _hello(http, url_a, welcome["token"])  # reconnect elsewhere: the same history
        replayed = []
        async with asyncio.timeout(10):
            while not any(f.get("author") == "agent" for f in replayed):
                replayed.append(await frames_after.receive_json())
        assert [f["seq"] for f in replayed] == list(range(1, len(replayed) + 1))
        await ws.close()
        await frames_after.close()


async def test_a_reply_announced_while_an_instance_lost_redis_still_reaches_its_visitor(tmp_path: Path) -> None:
    store = redis_store()  # skips without Redis; removes the prefix's keys afterwards
    host, port = urlsplit(REDIS_URL).hostname or "127.0.0.1", urlsplit(REDIS_URL).port or 6379
    proxy = TcpProxy(host, port)  # instance B reaches Redis only through it
    await proxy.start()
    inboxes = [{"name": "web", "channel": "webchat", "allowed_origins": ["*"]}]
    url_via_proxy = urlunsplit(urlsplit(REDIS_URL)._replace(netloc=f"127.0.0.1:{proxy.port}"))
    configs = []
    for name, url in (("a", REDIS_URL), ("b", url_via_proxy)):
        (tmp_path / name).mkdir()
        configs.append(
            write_config(tmp_path / name, store={"backend": "redis", "url": url, "prefix": store.tag}, inboxes=inboxes)
        )
    (a, url_a), (b, url_b) = await asyncio.gather(*(serve(c) for c in configs))
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(ready(http, url_a), ready(http, url_b))
            ws, _ = await _hello(http, url_b, None)
            await ws.send_json({"type": "message", "id": "c1", "text": "转人工"})
            await _until(ws, "status", status="waiting_for_agent")
            async with http.get(url_a + "/api/v1/tickets?status=new", headers=AUTH) as resp:
                (ticket,) = (await resp.json())["tickets"]
            proxy.cut()  # B's pub/sub connection is gone, and stays gone while A announces the reply
            async with http.post(
                url_a + f"/api/v1/tickets/{ticket['id']}/replies",
                json={"text": "您好，久等了", "agent": "wang"},
                headers=AUTH,
            ) as resp:
                assert resp.status == 201
            await asyncio.sleep(1.0)
            proxy.heal()
            # No later frame comes to carry it: B's reconnect alone must bring it.
            reply = await _until(ws, "message", author="agent")
            assert reply["text"] == "您好，久等了"
            await ws.close()
    finally:
        for proc in (a, b):
            proc.terminate()
        await asyncio.gather(a.wait(), b.wait())
        await proxy.close()
        await store.open()
        await store.close()


async def test_one_message_sent_to_both_instances_at_once_is_stored_and_answered_once(
    two_instances: tuple[str, str],
) -> None:
    url_a, url_b = two_instances
    async with aiohttp.ClientSession() as http:
        first, welcome = await _hello(http, url_a, None)
        second, _ = await _hello(http, url_b, welcome["token"])  # the same visitor, a second tab, other instance
        for n in range(5):
            frame = {"type": "message", "id": f"dup-{n}", "text": "怎么开发票"}
            await asyncio.gather(first.send_json(frame), second.send_json(frame))
            # The answer may overtake a tab's own ack (it comes from the other instance): take both, in any order.
            got = await asyncio.gather(_both(first, "ack", "message"), _both(second, "ack", "message"))
            acks = [g["ack"] for g in got]
            assert [a["id"] for a in acks] == [f"dup-{n}"] * 2
            assert sorted(a["duplicate"] for a in acks) == [False, True]
            assert acks[0]["message_id"] == acks[1]["message_id"]
            answers = [g["message"] for g in got]
            assert answers[0] == answers[1] and "发票" in answers[0]["text"]  # both tabs, one answer, one seq
        async with http.get(url_b + "/api/v1/events?limit=1000", headers=AUTH) as resp:
            events = (await resp.json())["events"]
        inbound = [e for e in events if e["data"].get("message", {}).get("direction") == "inbound"]
        replies = [e for e in events if e["data"].get("message", {}).get("author") == "bot"]
        assert len(inbound) == 5 and len(replies) == 5
        await first.close()
        await second.close()


async def test_wechat_retries_split_across_instances_make_one_message(tmp_path: Path) -> None:
    """WeChat retries a push it got no answer to within 5 s, and a load balancer spreads the retries."""
    fake = await FakeWechat(app_id=APP_ID, app_secret=APP_SECRET).start()
    try:
        async with _instances(tmp_path, [{**wechat_inbox(), "api_base": fake.url}]) as (url_a, url_b):
            xml = text_xml("怎么开发票", openid="oRetry0001", msg_id="6100000000000000777")

            async def push(url: str) -> int:
                timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
                params = {"timestamp": timestamp, "nonce": nonce, "signature": sign(TOKEN, timestamp, nonce)}
                async with http.post(f"{url}/wechat/oa", params=params, data=xml) as resp:
                    await resp.read()
                    return resp.status

            async with aiohttp.ClientSession() as http:
                statuses = await asyncio.gather(*(push(url) for url in [url_a, url_b] * 4))
                assert statuses == [200] * 8
                async with asyncio.timeout(20):
                    while True:
                        async with http.get(url_a + "/api/v1/events?limit=1000", headers=AUTH) as resp:
                            events = (await resp.json())["events"]
                        messages = [e["data"]["message"] for e in events if e["type"] == "message.created"]
                        if any(m["author"] == "bot" for m in messages):
                            break
                        await asyncio.sleep(0.1)
            inbound = [m for m in messages if m["direction"] == "inbound"]
            assert [m["external_id"] for m in inbound] == ["6100000000000000777"]
            assert len([m for m in messages if m["author"] == "bot"]) == 1
    finally:
        await fake.close()


async def test_web_chat_abuse_limits_and_revocation_hold_across_instances(tmp_path: Path) -> None:
    inbox = {"name": "web", "channel": "webchat", "allowed_origins": ["*"], "new_visitors_per_address_per_hour": 3}
    async with _instances(tmp_path, [inbox]) as (url_a, url_b), aiohttp.ClientSession() as http:

        async def hello(url: str) -> tuple[Socket, dict[str, Any]]:
            ws = await http.ws_connect(url.replace("http://", "ws://") + "/chat/ws")
            await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
            return ws, await ws.receive_json(timeout=10)

        opened = [await hello(url) for url in (url_b, url_a, url_b)]
        assert [frame["type"] for _, frame in opened] == ["welcome"] * 3
        for url in (url_a, url_b):  # the count is in Redis: neither instance lets a fourth in
            ws, frame = await hello(url)
            assert frame["code"] == "rate_limited" and frame["retry_after_s"] > 3500
            closing = await ws.receive(timeout=10)
            assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4429
            await ws.close()
        socket_b, welcome = opened[0]
        async with http.delete(f"{url_a}/api/v1/webchat/web/sessions/{welcome['visitor_id']}", headers=AUTH) as resp:
            assert resp.status == 200
        frame = await socket_b.receive_json(timeout=10)  # revoked on A, closed on B
        assert frame["code"] == "bad_token"
        closing = await socket_b.receive(timeout=10)
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4401
        for ws, _ in opened:
            await ws.close()
