"""Web chat abuse limits over real sockets: per address, per visitor, per instance, and session tokens that end."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.intake import BotSetup
from tests.conftest import Gateway, make_config, started


def _inbox(**limits: Any) -> dict[str, Any]:
    return {"name": "web", "channel": "webchat", "allowed_origins": ["*"], **limits}


async def _refused(gw: Gateway, headers: dict[str, str] | None = None) -> aiohttp.WSServerHandshakeError:
    try:
        ws = await gw.http.ws_connect(gw.ws_url(), headers=headers or {})
    except aiohttp.WSServerHandshakeError as exc:
        return exc
    await ws.close()
    raise AssertionError("the connection should have been refused")


async def _hello(ws: aiohttp.ClientWebSocketResponse, token: str | None = None) -> dict[str, Any]:
    await ws.send_json({"type": "hello", "token": token, "last_seq": 0})
    frame: dict[str, Any] = await ws.receive_json(timeout=5)
    return frame


async def _closed_with(ws: aiohttp.ClientWebSocketResponse) -> int:
    """The code in the server's close frame: what a browser's CloseEvent.code reports."""
    closing = await ws.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE, closing
    return int(closing.data)


async def test_new_visitors_from_one_address_are_capped_and_told_when_to_retry(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    async with started(make_config(tmp_path, inboxes=[_inbox(new_visitors_per_address_per_hour=3)]), bot_setup) as gw:
        chats = [await gw.chat() for _ in range(3)]
        async with gw.http.ws_connect(gw.ws_url()) as ws:
            frame = await _hello(ws)
            assert frame["type"] == "error" and frame["code"] == "rate_limited"
            assert 3500 < frame["retry_after_s"] <= 3600
            assert await _closed_with(ws) == 4429
        # Returning visitors resume with their token: they are not new, and the cap does not touch them.
        again = await gw.chat(token=chats[0].token)
        _, reply = await again.say("怎么开发票")
        assert "发票" in reply["text"]


async def test_connections_per_address_per_minute_get_429_with_retry_after(tmp_path: Path, bot_setup: BotSetup) -> None:
    async with started(make_config(tmp_path, inboxes=[_inbox(connections_per_address_per_minute=3)]), bot_setup) as gw:
        for _ in range(3):
            ws = await gw.http.ws_connect(gw.ws_url())
            await ws.close()
        refused = await _refused(gw)
        assert refused.status == 429
        assert refused.headers is not None and 0 < int(refused.headers["Retry-After"]) <= 60


async def test_open_sockets_per_address_are_capped_and_freed_on_close(tmp_path: Path, bot_setup: BotSetup) -> None:
    async with started(make_config(tmp_path, inboxes=[_inbox(sockets_per_address=2)]), bot_setup) as gw:
        first, second = await gw.chat(), await gw.chat()
        refused = await _refused(gw)
        assert refused.status == 429 and refused.headers is not None and "Retry-After" in refused.headers
        await first.ws.close()
        await asyncio.sleep(0.1)  # the server sees the close
        third = await gw.chat()
        _, reply = await third.say("where is my order")
        assert reply["author"] == "bot"
        await second.ws.close()


async def test_the_instance_wide_socket_cap_refuses_with_503_whatever_the_address(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    inbox = _inbox(max_sockets=2, trusted_proxies=["127.0.0.1/32", "::1/128"])
    async with started(make_config(tmp_path, inboxes=[inbox]), bot_setup) as gw:
        held = [await gw.http.ws_connect(gw.ws_url(), headers={"X-Forwarded-For": f"198.51.100.{i}"}) for i in (1, 2)]
        refused = await _refused(gw, {"X-Forwarded-For": "198.51.100.3"})
        assert refused.status == 503 and refused.headers is not None and "Retry-After" in refused.headers
        for ws in held:
            await ws.close()


@pytest.mark.parametrize("trusted", [False, True])
async def test_forwarded_addresses_count_only_behind_a_trusted_proxy(
    tmp_path: Path, bot_setup: BotSetup, trusted: bool
) -> None:
    proxies = ["127.0.0.1/32", "::1/128"] if trusted else []
    inbox = _inbox(new_visitors_per_address_per_hour=1, trusted_proxies=proxies)
    async with started(make_config(tmp_path, inboxes=[inbox]), bot_setup) as gw:
        answers = []
        for i in (1, 2):  # two visitors claiming two addresses; a spoofer prepends anything it likes
            headers = {"X-Forwarded-For": f"10.9.9.9, 203.0.113.{i}"}
            async with gw.http.ws_connect(gw.ws_url(), headers=headers) as ws:
                answers.append((await _hello(ws))["type"])
        assert answers == (["welcome", "welcome"] if trusted else ["welcome", "error"])
        if trusted:  # the forged left-hand hop counts for nothing: the same right-hand address is capped
            async with gw.http.ws_connect(gw.ws_url(), headers={"X-Forwarded-For": "10.1.1.1, 203.0.113.1"}) as ws:
                assert (await _hello(ws))["code"] == "rate_limited"


async def test_tickets_per_visitor_per_hour_are_capped(tmp_path: Path, bot_setup: BotSetup) -> None:
    async with started(make_config(tmp_path, inboxes=[_inbox(tickets_per_visitor_per_hour=1)]), bot_setup) as gw:
        chat = await gw.chat()
        await chat.say("转人工")
        assert (await chat.expect("status"))["status"] == "waiting_for_agent"
        status, page = await gw.api("GET", "/tickets?channel=webchat")
        assert status == 200 and len(page["tickets"]) == 1
        ticket = page["tickets"][0]
        status, _ = await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved"})
        assert status == 200
        assert (await chat.expect("status"))["status"] == "resolved"
        ack, reply = await chat.say("转人工")  # stored and acknowledged, but no second ticket this hour
        assert ack["duplicate"] is False
        assert reply["author"] == "bot" and "Too many new tickets from you" in reply["text"]
        status, page = await gw.api("GET", "/tickets?channel=webchat")
        assert [t["id"] for t in page["tickets"]] == [ticket["id"]]
        other = await gw.chat()  # the cap is per visitor: someone else still reaches a human
        await other.say("转人工")
        assert (await other.expect("status"))["status"] == "waiting_for_agent"


async def test_an_idle_session_token_expires(tmp_path: Path, bot_setup: BotSetup) -> None:
    async with started(make_config(tmp_path, inboxes=[_inbox(session_idle_s=0.5)]), bot_setup) as gw:
        chat = await gw.chat()
        await chat.ws.close()
        resumed = await gw.chat(token=chat.token)  # within the idle time: resumes, and pushes it back
        await resumed.ws.close()
        await asyncio.sleep(0.8)
        async with gw.http.ws_connect(gw.ws_url()) as ws:
            frame = await _hello(ws, chat.token)
            assert frame["code"] == "bad_token" and "expired" in frame["message"]
            assert await _closed_with(ws) == 4401


async def test_an_admin_revokes_a_session_and_the_write_is_audited(tmp_path: Path, bot_setup: BotSetup) -> None:
    async with started(make_config(tmp_path, inboxes=[_inbox()]), bot_setup) as gw:
        chat = await gw.chat()
        bystander = await gw.chat()
        visitor = chat.token.split(".")[1]
        status, body = await gw.api("DELETE", f"/webchat/web/sessions/{visitor}")
        assert status == 200 and body == {"inbox": "web", "visitor_id": visitor, "revoked": True, "was_live": True}
        frame = await chat.expect("error")
        assert frame["code"] == "bad_token"
        assert await _closed_with(chat.ws) == 4401
        async with gw.http.ws_connect(gw.ws_url()) as ws:
            frame = await _hello(ws, chat.token)
            assert frame["code"] == "bad_token" and "revoked" in frame["message"]
        _, reply = await bystander.say("where is my order")  # nobody else is affected
        assert reply["author"] == "bot"
        status, audit = await gw.api("GET", "/audit?action=webchat.session.revoke")
        assert status == 200
        [entry] = audit["entries"]
        assert entry["target"] == f"webchat:web:{visitor}" and entry["after"] == {"session": "revoked"}
        assert (await gw.api("DELETE", "/webchat/web/sessions/not-a-visitor"))[0] == 400
        assert (await gw.api("DELETE", f"/webchat/nope/sessions/{visitor}"))[0] == 404


async def test_revoking_needs_the_admin_scope(tmp_path: Path, bot_setup: BotSetup) -> None:
    reader = {"name": "agent", "token": "agent-token-0123456789abc", "scopes": ["tickets:write"]}
    config = make_config(tmp_path, inboxes=[_inbox()], api={"tokens": [reader]})
    async with started(config, bot_setup) as gw:
        chat = await gw.chat()
        status, body = await gw.api(
            "DELETE", f"/webchat/web/sessions/{chat.token.split('.')[1]}", token="agent-token-0123456789abc"
        )
        assert status == 403, json.dumps(body)
        _, reply = await chat.say("where is my order")
        assert reply["author"] == "bot"
