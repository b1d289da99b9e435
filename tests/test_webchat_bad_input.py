"""Bad frames get a clear error frame; the socket, other visitors and the server keep going."""

from __future__ import annotations

import io
import json
from pathlib import Path

import aiohttp

from gateway.intake import BotSetup
from tests.conftest import Gateway, make_config, started


async def test_malformed_frames_get_error_frames_and_the_session_goes_on(gateway: Gateway) -> None:
    bystander = await gateway.chat()
    chat = await gateway.chat()
    cases = [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_frame"),
        (json.dumps({"type": "message", "id": "x"}), "bad_frame"),
        (json.dumps({"type": "message", "id": "bad id!", "text": "hi"}), "bad_frame"),
        (json.dumps({"type": "message", "id": "x", "text": "x" * 4001}), "bad_frame"),
        (json.dumps({"type": "teleport"}), "unknown_type"),
        (json.dumps({"type": 7}), "bad_frame"),
        (json.dumps({"type": "typing", "on": "yes"}), "bad_frame"),
        (json.dumps({"type": "hello", "token": None}), "bad_frame"),  # hello twice
        (json.dumps({"type": "pick", "id": "p", "faq_id": "no_such_entry"}), "bad_frame"),
    ]
    for raw, code in cases:
        await chat.send_raw(raw)
        frame = await chat.expect("error")
        assert frame["code"] == code, raw
        assert frame["message"]
    await chat.ws.send_bytes(b'{"type": "ping"}')
    assert (await chat.expect("error"))["code"] == "bad_frame"
    await chat.send_raw(json.dumps({"type": "message", "id": "empty", "text": "  "}))
    assert (await chat.expect("error"))["id"] == "empty"  # the widget can mark that message unsent
    _, reply = await chat.say("我想退款")
    assert "退款" in reply["text"]
    _, other = await bystander.say("怎么开发票")
    assert "发票" in other["text"]


async def test_oversized_frame_gets_an_error_not_a_disconnect(gateway: Gateway) -> None:
    chat = await gateway.chat()
    await chat.send_raw(json.dumps({"type": "message", "id": "big", "text": "x" * 20000}))
    frame = await chat.expect("error")
    assert frame["code"] == "frame_too_large"
    assert "8192" in frame["message"]
    _, reply = await chat.say("where is my order")
    assert reply["author"] == "bot"


async def test_frames_before_hello_are_refused(gateway: Gateway) -> None:
    async with gateway.http.ws_connect(gateway.ws_url()) as ws:
        await ws.send_json({"type": "message", "id": "a", "text": "hi"})
        frame = await ws.receive_json(timeout=5)
        assert frame["type"] == "error" and frame["code"] == "hello_required"
        await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"


async def test_forged_session_token_is_refused_and_closed(gateway: Gateway) -> None:
    chat = await gateway.chat()
    visitor = chat.token.split(".")[1]
    forged = f"v1.{'0' * 32}.{chat.token.split('.')[2]}"
    async with gateway.http.ws_connect(gateway.ws_url()) as ws:
        await ws.send_json({"type": "hello", "token": forged, "last_seq": 0})
        frame = await ws.receive_json(timeout=5)
        assert frame["type"] == "error" and frame["code"] == "bad_token"
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 4401
    assert visitor != "0" * 32
    _, reply = await chat.say("where is my order")  # the real visitor is unaffected
    assert reply["author"] == "bot"


async def test_origin_not_allowed_is_refused(tmp_path: Path, bot_setup: BotSetup) -> None:
    inbox = {"name": "web", "channel": "webchat", "allowed_origins": ["https://shop.example.com"]}
    async with started(make_config(tmp_path, inboxes=[inbox]), bot_setup) as gw:
        try:
            await gw.http.ws_connect(gw.ws_url(), origin="https://evil.example.net")
            raise AssertionError("a foreign origin must be refused")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 403
        async with gw.http.ws_connect(gw.ws_url(), origin="https://shop.example.com") as ws:
            await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
            assert (await ws.receive_json(timeout=5))["type"] == "welcome"


async def test_same_origin_only_by_default(tmp_path: Path, bot_setup: BotSetup) -> None:
    inbox = {"name": "web", "channel": "webchat"}
    async with started(make_config(tmp_path, inboxes=[inbox]), bot_setup) as gw:
        try:
            await gw.http.ws_connect(gw.ws_url(), origin="https://elsewhere.example")
            raise AssertionError("a foreign origin must be refused")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 403
        async with gw.http.ws_connect(gw.ws_url(), origin=gw.url) as ws:
            await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
            assert (await ws.receive_json(timeout=5))["type"] == "welcome"


async def test_flooding_visitor_is_rate_limited(tmp_path: Path, bot_setup: BotSetup) -> None:
    inbox = {"name": "web", "channel": "webchat", "allowed_origins": ["*"], "frames_per_minute": 5}
    async with started(make_config(tmp_path, inboxes=[inbox]), bot_setup) as gw:
        chat = await gw.chat()
        for _ in range(10):
            await chat.ws.send_json({"type": "ping"})
        codes = []
        for _ in range(10):
            frame = await chat.recv()
            codes.append(frame.get("code", frame["type"]))
        assert "rate_limited" in codes and "pong" in codes


async def test_unknown_routes_and_bodies_get_json_errors(gateway: Gateway) -> None:
    async with gateway.http.get(gateway.url + "/nope") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
    big = io.BytesIO(b"x" * (2 << 20))
    async with gateway.http.patch(
        gateway.url + "/api/v1/tickets/HL-000001",
        data=big,
        headers={"Authorization": "Bearer test-token-0123456789", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 413


async def test_the_chat_page_forbids_foreign_scripts_and_framing_and_no_response_names_versions(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    web = {"name": "web", "channel": "webchat", "allowed_origins": ["https://shop.example.com"]}
    async with started(make_config(tmp_path, inboxes=[web]), bot_setup) as gw:
        async with gw.http.get(f"{gw.url}/chat/") as resp:
            assert resp.status == 200
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp
            assert "frame-ancestors 'self' https://shop.example.com" in csp
            assert resp.headers["X-Frame-Options"] == "SAMEORIGIN"
        for path in ("/chat/", "/healthz", "/nope", "/api/v1/tickets"):
            async with gw.http.get(gw.url + path) as resp:
                assert resp.headers["Server"] == "huiliu", path


async def test_forwarded_headers_count_only_from_a_configured_proxy(tmp_path: Path, bot_setup: BotSetup) -> None:
    """Behind a TLS proxy the page's origin is https://, the gateway sees http://: the same-origin check refused
    the demo page. X-Forwarded-* fix that, but only from a proxy the config trusts (anyone can send them)."""
    behind_proxy = {"Origin": "https://chat.example.com", "X-Forwarded-Proto": "https",
                    "X-Forwarded-Host": "chat.example.com"}  # fmt: skip
    for trusted, expected in ((["127.0.0.1/32"], 101), ([], 403), (["10.0.0.0/8"], 403)):
        web = {"name": "web", "channel": "webchat", "trusted_proxies": trusted}
        async with started(make_config(tmp_path, inboxes=[web]), bot_setup) as gw:
            try:
                async with gw.http.ws_connect(gw.ws_url(), headers=behind_proxy) as ws:
                    status = 101
                    await ws.close()
            except aiohttp.WSServerHandshakeError as exc:
                status = exc.status
            assert status == expected, trusted
