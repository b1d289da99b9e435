"""Auto-close: a pending ticket with no answer gets one reminder after 2 business days and closes after 3."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.setup import BotSetup
from core.config import ConfigError, parse_config
from core.rules_config import SlaConfig
from gateway.app import GATEWAY
from normalizer.rules.calendar import calendar_for
from tests.conftest import ChatClient, Gateway, make_config, started
from tests.test_api import open_ticket, settle

FRIDAY = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


class _Clock:
    def __init__(self) -> None:
        self.now = FRIDAY

    def __call__(self) -> datetime:
        return self.now


def test_business_days_are_the_service_calendar_s_working_days() -> None:
    calendar = calendar_for("default", SlaConfig())  # working hours in Shanghai, China's holidays and 调休
    assert calendar.add(FRIDAY, 2 * calendar.day_seconds) == FRIDAY + timedelta(days=4)  # Tuesday, same hour
    national_day_eve = datetime(2026, 9, 30, 2, 0, tzinfo=UTC)
    assert calendar.add(national_day_eve, calendar.day_seconds) > national_day_eve + timedelta(days=7)


def test_the_reminder_must_come_before_the_close() -> None:
    with pytest.raises(ConfigError, match=r"customer\.autoclose.*remind_after_days must be less"):
        parse_config({"customer": {"autoclose": {"remind_after_days": 3, "after_days": 3}}})


async def _system_texts(chat: ChatClient) -> list[str]:
    await settle(chat)
    return [f["text"] for f in chat.frames if f["type"] == "message" and f["author"] == "system"]


async def _events(gw: Gateway, kind: str) -> list[dict[str, Any]]:
    _, body = await gw.api("GET", "/events", params={"limit": "1000"})
    return [e for e in body["events"] if e["type"] == kind]


async def test_a_silent_pending_ticket_is_reminded_once_then_closed(tmp_path: Path, bot_setup: BotSetup) -> None:
    clock = _Clock()
    async with started(make_config(tmp_path), bot_setup, clock=clock) as gw:
        runner = gw.server.app[GATEWAY].sla
        chat, ticket = await open_ticket(gw)
        await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "pending"})
        assert len(await _system_texts(chat)) == 1  # the pending notice

        clock.now += timedelta(days=3)  # Monday: one business day only
        await runner.run_once()
        assert len(await _system_texts(chat)) == 1
        clock.now += timedelta(days=1)  # Tuesday: two business days
        await asyncio.gather(runner.run_once(), runner.run_once())  # two instances: one reminder
        texts = await _system_texts(chat)
        assert len(texts) == 2 and ticket["number"] in texts[-1] and "自动关闭" in texts[-1]
        assert (await gw.api("GET", f"/tickets/{ticket['id']}"))[1]["status"] == "pending"

        clock.now += timedelta(days=1)  # Wednesday: three business days
        await runner.run_once()
        _, closed = await gw.api("GET", f"/tickets/{ticket['id']}")
        assert closed["status"] == "closed" and "auto-closed" in closed["tags"]
        assert "关闭" in (await _system_texts(chat))[-1]  # the closed notice
        changes = [e["data"]["changes"] for e in await _events(gw, "ticket.updated")]
        assert {"from": "pending", "to": "closed"} in [c.get("status") for c in changes]
        clock.now += timedelta(days=10)
        assert await runner.run_once() == 0  # nothing left behind


async def test_a_ticket_that_leaves_pending_is_not_closed(tmp_path: Path, bot_setup: BotSetup) -> None:
    clock = _Clock()
    async with started(make_config(tmp_path), bot_setup, clock=clock) as gw:
        runner = gw.server.app[GATEWAY].sla
        chat, ticket = await open_ticket(gw)
        await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "pending"})
        await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "open"})
        clock.now += timedelta(days=7)
        assert await runner.run_once() == 0
        assert (await gw.api("GET", f"/tickets/{ticket['id']}"))[1]["status"] == "open"
        await chat.close()


async def test_the_clock_survives_a_restart(tmp_path: Path, bot_setup: BotSetup) -> None:
    clock = _Clock()
    config = make_config(tmp_path)
    async with started(config, bot_setup, clock=clock) as gw:
        chat, ticket = await open_ticket(gw)
        await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "pending"})
        await chat.close()
    clock.now += timedelta(days=6)  # Thursday: down over both due times
    async with started(config, bot_setup, clock=clock) as gw:
        await gw.server.app[GATEWAY].tasks.drain(5)  # the start-up catch-up: the reminder, late
        runner = gw.server.app[GATEWAY].sla
        await runner.run_once()
        # The reminder promised a business day: the close waits for it, not for the stale due time.
        assert (await gw.api("GET", f"/tickets/{ticket['id']}"))[1]["status"] == "pending"
        _, full = await gw.api("GET", f"/tickets/{ticket['id']}")
        assert [m["meta"].get("kind") for m in full["messages"]].count("autoclose_reminder") == 1
        clock.now += timedelta(days=1)  # Friday
        await runner.run_once()
        assert (await gw.api("GET", f"/tickets/{ticket['id']}"))[1]["status"] == "closed"
