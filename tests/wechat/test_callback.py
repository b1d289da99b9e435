"""The callback URL through the real gateway: verification, signatures, replays, limits, every sample, safe mode."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from connectors.base import ConnectorDeps, IntakeResult, Rejected
from connectors.wechat.connector import WechatConnector
from connectors.wechat.parse import read_xml
from connectors.wechat.signature import sign
from core.config import WechatInbox
from core.model import Channel, Direction, InboundMessage
from core.store.sqlite import SqliteStore
from core.store.types import AdmissionRefused
from core.tasks import TaskTracker
from gateway.app import GATEWAY
from gateway.intake import BotSetup
from tests.conftest import SHARED, Gateway, make_config, need, started
from tests.wechat.conftest import AES_KEY, CORPUS, TOKEN, WechatClient, inbox, manifest, text_xml, wechat_config
from tests.wechat.fake_api import FakeWechat
from tests.wechat.test_parse import BOMB, XXE


async def inbound(gw: Gateway, external_id: str, box: str = "oa") -> Any:
    store = gw.server.app[GATEWAY].store
    return await store.find_message(
        channel=Channel.WECHAT, inbox=box, direction=Direction.INBOUND, external_id=external_id
    )


async def count_messages(gw: Gateway) -> int:
    page = await gw.api("GET", "/events", params={"after": "0", "limit": "1000"})
    return sum(1 for e in page[1]["events"] if e["type"] == "message.created")


async def test_url_verification_echoes_echostr_only_when_signed(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    async with started(wechat_config(tmp_path, fake_wechat), bot_setup) as gw:
        client = WechatClient(gw)
        url = f"{gw.url}/wechat/oa"
        async with gw.http.get(url, params={**client.query(), "echostr": "8734590012"}) as resp:
            assert (resp.status, await resp.text()) == (200, "8734590012")
        forged = {**client.query(), "echostr": "x"}
        forged["signature"] = "0" * 40
        async with gw.http.get(url, params=forged) as resp:
            assert resp.status == 403


async def test_every_plain_sample_is_stored_once_and_answered(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    need(SHARED.exists(), "the shared corpus is not present")
    async with started(wechat_config(tmp_path, fake_wechat), bot_setup) as gw:
        client = WechatClient(gw)
        keys = set()
        for entry in manifest():
            xml = (CORPUS / entry["file"]).read_bytes()
            pushed = await client.push(xml)
            assert pushed.status == 200, (entry["file"], pushed.text)
            assert pushed.text == "success" or read_xml(pushed.text)["MsgType"] == "text", entry["file"]
            fields = read_xml(xml)
            key = (
                f"{fields['FromUserName']}:{fields['CreateTime']}:{fields['Event']}"
                if fields["MsgType"] == "event"
                else fields["MsgId"]
            )
            stored = await inbound(gw, key)
            assert stored is not None, entry["file"]
            if key not in keys:  # a later sample with the same key is a repeat delivery: the first one stays
                assert stored.raw == xml.decode(), entry["file"]
            keys.add(key)
        # Samples sharing a key (the corpus repeats some pushes) are one message: nothing doubled.
        inbound_created = [
            e
            for e in (await gw.api("GET", "/events", params={"limit": "1000"}))[1]["events"]
            if e["type"] == "message.created" and e["data"]["message"]["direction"] == "inbound"
        ]
        assert len(inbound_created) == len(keys)
        unknown = await inbound(gw, "1234567890123456")
        assert unknown is not None


async def test_forged_signature_is_403_and_nothing_is_stored(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    async with started(wechat_config(tmp_path, fake_wechat), bot_setup) as gw:
        client = WechatClient(gw)
        params = client.query()
        forged = [
            {**params, "signature": sign("wrong-token", params["timestamp"], params["nonce"])},
            {**params, "signature": ""},
            {k: v for k, v in params.items() if k != "signature"},
            {**params, "nonce": params["nonce"] + "1"},
        ]
        for query in forged:
            pushed = await client.post(text_xml("你好", msg_id="777"), query)
            assert pushed.status == 403, query
        assert await inbound(gw, "777") is None
        assert await count_messages(gw) == 0
        assert await gw.server.app[GATEWAY].store.quarantined() == []


async def test_replayed_nonce_and_stale_timestamp_are_refused(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    async with started(wechat_config(tmp_path, fake_wechat), bot_setup) as gw:
        client = WechatClient(gw)
        first = await client.push(text_xml("你好", msg_id="801"), nonce="424242")
        assert first.status == 200
        params = client.query(nonce="424242", timestamp=None)
        # The exact same signed request again (an attacker replaying it), with a different body even:
        replay = await client.post(text_xml("再来一次", msg_id="802"), params)
        assert replay.status == 403 and "replay" in replay.text
        assert await inbound(gw, "802") is None
        stale = await client.push(text_xml("旧的", msg_id="803"), timestamp="1458300676")
        assert stale.status == 403 and "timestamp" in stale.text
        assert await inbound(gw, "803") is None


async def test_oversized_body_is_413(tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat) -> None:
    config = wechat_config(tmp_path, fake_wechat, inbox(max_body_bytes=2048))
    async with started(config, bot_setup) as gw:
        client = WechatClient(gw)
        pushed = await client.push(text_xml("长" * 4000, msg_id="901"))
        assert pushed.status == 413

        # Streamed without a Content-Length the cap still holds.
        async def chunks() -> Any:
            for _ in range(10):
                yield b"<xml>" + b" " * 1000

        streamed = await client.post(chunks(), client.query())
        assert streamed.status == 413
        assert await inbound(gw, "901") is None


@pytest.mark.parametrize("body", [BOMB, XXE], ids=["billion-laughs", "xxe"])
async def test_xml_bombs_are_refused_and_quarantined_not_stored(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat, body: bytes
) -> None:
    async with started(wechat_config(tmp_path, fake_wechat), bot_setup) as gw:
        pushed = await WechatClient(gw).push(body)
        assert pushed.status == 400
        assert await count_messages(gw) == 0
        (item,) = await gw.server.app[GATEWAY].store.quarantined()
        assert item.raw == body and item.reason.startswith("xml_forbidden")


async def test_a_signed_push_nested_a_thousand_deep_is_400_and_quarantined(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    """Deep nesting is refused like any unreadable push, and kept: it used to overflow the stack (a 500)."""
    body = text_xml("hi", msg_id="deep1", extra="<a>" * 1000 + "x" + "</a>" * 1000).encode()
    async with started(wechat_config(tmp_path, fake_wechat), bot_setup) as gw:
        pushed = await WechatClient(gw).push(body)
        assert pushed.status == 400 and "nested" in pushed.text
        assert await inbound(gw, "deep1") is None
        (item,) = await gw.server.app[GATEWAY].store.quarantined()
        assert item.raw == body and item.reason.startswith("bad_xml")


async def test_the_shared_encrypted_vector_goes_end_to_end(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    need((CORPUS / "encrypted").exists(), "the shared corpus is not present")
    box = inbox(
        token="pamtest",
        app_id="wxb11529c136998cb6",
        encoding_aes_key="abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        mode="safe",
        timestamp_window_s=10**10,  # the vector was signed in 2016
    )
    async with started(wechat_config(tmp_path, fake_wechat, box), bot_setup) as gw:
        client = WechatClient(gw, token="pamtest")
        body = (CORPUS / "encrypted/oa_easywechat_pamtest.post_body.xml").read_bytes()
        params = client.query(timestamp="1458300676", nonce="260774613")
        params |= {"encrypt_type": "aes", "msg_signature": "4f3ad57b6989f09f4eb392acce4f9e93942ed890"}
        pushed = await client.post(body, params)
        assert pushed.status == 200, pushed.text
        stored = await inbound(gw, "12345")
        expected = (CORPUS / "encrypted/oa_easywechat_pamtest.decrypted.xml").read_text(encoding="utf-8").strip()
        assert stored is not None and stored.text == "hello" and stored.raw == expected
        # A wrong msg_signature on the same (already used) body and a fresh nonce: refused, nothing new.
        params = client.query(timestamp="1458300676", nonce="1") | {"encrypt_type": "aes", "msg_signature": "0" * 40}
        assert (await client.post(body, params)).status == 403
        # Safe mode takes no plaintext pushes.
        assert (await client.push(text_xml("plain", msg_id="55"))).status == 403


@pytest.mark.parametrize("mode", ["safe", "compatible"])
async def test_encrypted_push_for_a_new_appid_gets_an_encrypted_passive_reply(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat, mode: str
) -> None:
    config = wechat_config(tmp_path, fake_wechat, inbox(encoding_aes_key=AES_KEY, mode=mode, reply_budget_s=3))
    async with started(config, bot_setup) as gw:
        client = WechatClient(gw, aes_key=AES_KEY)
        pushed = await client.push(text_xml("怎么开发票", openid="oEnc1", msg_id="3001"))
        assert pushed.status == 200
        envelope = read_xml(pushed.text)
        assert set(envelope) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
        reply = read_xml(client.open_reply(pushed.text))
        assert reply["ToUserName"] == "oEnc1" and reply["FromUserName"] == "gh_huiliu"
        assert reply["MsgType"] == "text" and "发票" in reply["Content"]
        # Encrypted for another AppID: refused, never stored.
        other = WechatClient(gw, aes_key=AES_KEY, app_id="wx-other-app")
        assert (await other.push(text_xml("hi", msg_id="3002"))).status == 400
        assert await inbound(gw, "3002") is None
        assert fake_wechat.sent == []


async def test_malformed_but_signed_push_is_quarantined_with_a_clear_error(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    async with started(wechat_config(tmp_path, fake_wechat), bot_setup) as gw:
        pushed = await WechatClient(gw).push(b"<xml><MsgType>text</MsgType>")
        assert pushed.status == 400
        (item,) = await gw.server.app[GATEWAY].store.quarantined()
        assert item.reason.startswith("bad_xml")


async def test_a_signed_push_whose_ciphertext_is_not_base64_is_quarantined_not_a_server_error(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    config = wechat_config(tmp_path, fake_wechat, inbox(encoding_aes_key=AES_KEY, mode="safe"))
    async with started(config, bot_setup) as gw:
        client = WechatClient(gw)
        encrypt = "密文" + "A" * 42  # not ASCII: base64 cannot even start on it
        params = client.query()
        params |= {
            "encrypt_type": "aes",
            "msg_signature": sign(TOKEN, params["timestamp"], params["nonce"], encrypt),
        }
        body = f"<xml><ToUserName><![CDATA[gh_huiliu]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        pushed = await client.post(body.encode(), params)
        assert pushed.status == 400 and "decrypt" in pushed.text
        (item,) = await gw.server.app[GATEWAY].store.quarantined()
        assert item.reason.startswith("undecryptable") and item.raw == body.encode()


async def test_a_byte_identical_retry_of_a_push_that_died_before_it_was_stored_is_taken_in(tmp_path: Path) -> None:
    """The nonce used to be claimed before the message was stored: when the process died in between, WeChat's
    retries (the same signed request) got 403 and the push was lost."""
    config = make_config(tmp_path, inboxes=[inbox()])
    box = config.inboxes[0]
    assert isinstance(box, WechatInbox)
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    connector = WechatConnector(box, ConnectorDeps(store=store, tasks=TaskTracker(), data_dir=tmp_path))
    app = web.Application()
    app.router.add_routes(connector.routes())
    taken: list[InboundMessage] = []

    async def dies_once(message: InboundMessage) -> IntakeResult:
        admit = message.admission  # the replay guard, taken as intake takes it (with its first store call)
        assert admit is not None
        if not await store.lease(admit.key, admit.holder, admit.ttl_s):
            raise AdmissionRefused(admit.key)
        if not taken:
            taken.append(message)
            raise asyncio.CancelledError  # the process went down mid-request: nothing stored
        raise Rejected("stored now")  # the retry reached intake

    timestamp, nonce = str(int(time.time())), secrets.token_hex(4)
    query = {"timestamp": timestamp, "nonce": nonce, "signature": sign(TOKEN, timestamp, nonce)}
    xml = text_xml("在吗", openid="oDied", msg_id="8888").encode()
    try:
        async with (
            TestServer(app, host="127.0.0.1") as server,
            aiohttp.ClientSession() as http,
            connector.running(dies_once),
        ):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.post(server.make_url("/wechat/oa"), params=query, data=xml):
                    pass
            async with http.post(server.make_url("/wechat/oa"), params=query, data=xml) as resp:
                assert resp.status == 400 and "stored now" in await resp.text()  # reached intake, not 403
            other = text_xml("别的", openid="oDied", msg_id="8889").encode()
            async with http.post(server.make_url("/wechat/oa"), params=query, data=other) as resp:
                assert resp.status == 403  # the same signed query with another body is still a replay
    finally:
        await store.close()


async def test_pushes_to_two_inboxes_are_checked_with_each_inbox_token(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    config = wechat_config(tmp_path, fake_wechat, inbox("oa"), inbox("oa2", token="othertoken"))
    async with started(config, bot_setup) as gw:
        assert (await WechatClient(gw, inbox="oa2").push(text_xml("hi", msg_id="1"))).status == 403
        pushed = await WechatClient(gw, inbox="oa2", token="othertoken").push(text_xml("hi", msg_id="1"))
        assert pushed.status == 200
        results = await asyncio.gather(inbound(gw, "1", "oa2"), inbound(gw, "1", "oa"))
        assert results[0] is not None and results[1] is None


async def test_a_push_that_intake_fails_on_is_kept_for_replay_while_wechat_retries(tmp_path: Path) -> None:
    """The connector on its own, on a real server, with an intake that breaks (a bug): WeChat gets a 500 and
    will retry, and the push is in the quarantine already, so it survives WeChat giving up."""
    config = make_config(tmp_path, inboxes=[inbox()])
    box = config.inboxes[0]
    assert isinstance(box, WechatInbox)
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    connector = WechatConnector(box, ConnectorDeps(store=store, tasks=TaskTracker(), data_dir=tmp_path))
    app = web.Application()
    app.router.add_routes(connector.routes())

    async def broken(message: InboundMessage) -> IntakeResult:
        raise RuntimeError("intake bug")

    stored: list[InboundMessage] = []

    async def working(message: InboundMessage) -> IntakeResult:
        stored.append(message)
        raise Rejected("enough to see it arrive")

    xml = text_xml("在吗", openid="oBug", msg_id="7777")
    try:
        async with (
            TestServer(app, host="127.0.0.1") as server,
            aiohttp.ClientSession() as http,
            connector.running(broken),
        ):
            for _ in range(2):  # the first delivery and a retry
                timestamp, nonce = str(int(time.time())), secrets.token_hex(4)
                query = {"timestamp": timestamp, "nonce": nonce, "signature": sign(TOKEN, timestamp, nonce)}
                async with http.post(server.make_url("/wechat/oa"), params=query, data=xml.encode()) as resp:
                    assert resp.status == 500
        (item,) = await store.quarantined()  # once, however often WeChat retried
        assert item.raw == xml.encode() and item.reason == "intake failed: RuntimeError: intake bug"
        assert await connector.replay(item, working) is None  # this sink refuses it: still not taken in
        assert [m.external_id for m in stored] == ["7777"] and stored[0].text == "在吗"
    finally:
        await store.close()
