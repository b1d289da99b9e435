"""Business hours decide which handoff message the customer gets."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path

from bot.handoff import handoff_message, in_business_hours
from core.config import BotMessages, BusinessHours
from gateway.intake import BotSetup
from tests.conftest import make_config, started

HOURS = BusinessHours(timezone="Asia/Shanghai", days=("mon", "tue", "wed", "thu", "fri"), start=time(9), end=time(18))


def test_business_hours_are_read_in_the_configured_timezone() -> None:
    # Monday 2026-11-23 02:00 UTC is 10:00 in Shanghai: open.
    assert in_business_hours(HOURS, datetime(2026, 11, 23, 2, 0, tzinfo=UTC))
    # Monday 10:30 UTC is 18:30 in Shanghai: closed, though it is office time in London.
    assert not in_business_hours(HOURS, datetime(2026, 11, 23, 10, 30, tzinfo=UTC))
    # Saturday 2026-11-21 at noon in Shanghai: closed.
    assert not in_business_hours(HOURS, datetime(2026, 11, 21, 4, 0, tzinfo=UTC))
    # No configured hours: agents are always reachable.
    assert in_business_hours(None, datetime(2026, 11, 21, 4, 0, tzinfo=UTC))


def test_handoff_message_has_an_off_hours_variant() -> None:
    messages = BotMessages(handoff="马上为您转接", handoff_off_hours="客服已下班")
    assert handoff_message(messages, HOURS, datetime(2026, 11, 23, 2, 0, tzinfo=UTC)) == "马上为您转接"
    assert handoff_message(messages, HOURS, datetime(2026, 11, 21, 4, 0, tzinfo=UTC)) == "客服已下班"


async def test_visitor_gets_the_off_hours_message_on_a_saturday(tmp_path: Path, bot_setup: BotSetup) -> None:
    config = make_config(
        tmp_path,
        bot={"business_hours": {"timezone": "Asia/Shanghai"}, "messages": {"handoff_off_hours": "客服已下班"}},
    )
    saturday = datetime(2026, 11, 21, 4, 0, tzinfo=UTC)
    setup = BotSetup(
        index=bot_setup.index, policy=bot_setup.policy, messages=config.bot.messages, hours=config.bot.business_hours
    )
    async with started(config, setup, clock=lambda: saturday) as gw:
        chat = await gw.chat()
        _, reply = await chat.say("转人工")
        off_hours, number = reply["text"].split("\n")
        assert off_hours == "客服已下班" and "HL-000001" in number  # then the ticket's number
        await chat.expect("status")
        status, body = await gw.api("GET", "/tickets")
        assert status == 200 and body["tickets"][0]["created_at"] == saturday.isoformat()
