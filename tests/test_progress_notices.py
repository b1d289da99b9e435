"""Progress notices: the statuses an operator announces reach the customer on their channel, live or on the
next visit; the others say nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.setup import BotSetup
from core.config import ConfigError, parse_config
from tests.conftest import Gateway, make_config, started
from tests.test_api import open_ticket, settle


async def test_pending_asks_the_customer_and_open_says_nothing(gateway: Gateway) -> None:
    chat, ticket = await open_ticket(gateway)
    await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "open"})
    await settle(chat)
    assert [f for f in chat.frames if f["type"] == "message" and f["author"] == "system"] == []
    await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "pending"})
    notice = await chat.expect("message")
    assert notice["author"] == "system" and ticket["number"] in notice["text"] and "补充" in notice["text"]
    _, full = await gateway.api("GET", f"/tickets/{ticket['id']}")
    assert full["messages"][-1]["meta"] == {"kind": "notice", "status": "pending", "ticket_number": ticket["number"]}


async def test_a_notice_while_the_customer_is_away_waits_for_the_next_visit(gateway: Gateway) -> None:
    chat, ticket = await open_ticket(gateway)
    await settle(chat)
    seen = max(f["seq"] for f in chat.durable)
    token = chat.token
    await chat.close()
    status, _ = await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "closed"})
    assert status == 200
    back = await gateway.chat(token, last_seq=seen)
    notice = await back.expect("message")
    assert notice["author"] == "system" and ticket["number"] in notice["text"] and "关闭" in notice["text"]


async def test_notices_are_configurable_per_status(tmp_path: Path, bot_setup: BotSetup) -> None:
    config = make_config(tmp_path, customer={"notices": {"open": "工单 {number} 已由客服接手。"}})
    async with started(config, bot_setup) as gw:
        chat, ticket = await open_ticket(gw)
        await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "open"})
        notice = await chat.expect("message")
        assert notice["text"] == f"工单 {ticket['number']} 已由客服接手。"
        await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "pending"})  # not configured: silent
        await settle(chat)
        await asyncio.sleep(0.1)
        assert sum(f["type"] == "message" and f["author"] == "system" for f in chat.frames) == 1


def test_a_notice_for_an_unknown_status_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"customer\.notices.*unknown ticket status 'done'"):
        parse_config({"customer": {"notices": {"done": "x"}}})
