"""SLA timers in the store: a warning then a breach, each once; a breach due while down fires at start; two
instances fire it once. Time is the controllable clock; the runner is the one the gateway runs."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bot.setup import BotSetup
from core.model import Channel, DownstreamEvent, Identity, IdentityKind, InboundMessage, Ticket
from core.store import Store
from gateway.app import GATEWAY
from tests.conftest import Gateway, make_config, started
from tests.redis_util import REDIS_URL, redis_store

SH = ZoneInfo("Asia/Shanghai")
TUESDAY_9 = datetime(2026, 12, 1, 9, 0, tzinfo=SH)

RULES: dict[str, Any] = {
    "queues": [{"name": "general"}],
    "routing": [{"name": "general", "set": {"queue": "general"}}],
    "sla": {
        "hours": {"lunch": {"start": "12:00", "end": "13:00"}},
        "scan_interval_s": 5,
        "policies": [
            {
                "name": "default",
                "first_response": "2h",
                "resolution": "2d",
                "on_breach": {"priority": "high", "tags": ["sla-breached"]},
            }
        ],
    },
}


class ManualClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, now: datetime) -> None:
        self.now = now


def visitor_message(n: int, text: str, at: datetime) -> InboundMessage:
    return InboundMessage(
        channel=Channel.WEBCHAT,
        inbox="web",
        external_id=f"m{n}",
        sender=Identity(IdentityKind.WEBCHAT_VISITOR, f"{n:032x}"),
        text=text,
        received_at=at,
    )


async def handed_off(gw: Gateway, n: int = 1) -> Ticket:
    app = gw.server.app[GATEWAY]
    result = await app.intake.receive(visitor_message(n, "转人工", app.intake._clock()))
    assert result.handled is not None
    await result.handled
    conversation = await app.store.get_conversation(result.message.conversation_id)
    assert conversation is not None and conversation.ticket_id is not None
    ticket = await app.store.get_ticket(conversation.ticket_id)
    assert ticket is not None
    return ticket


async def sla_events(store: Store) -> list[DownstreamEvent]:
    return [e for e in await store.events_after(0, 1000) if e.type.startswith("ticket.sla_")]


async def test_warning_then_breach_each_once_and_the_breach_escalates(tmp_path: Path, bot_setup: BotSetup) -> None:
    clock = ManualClock(TUESDAY_9)
    async with started(make_config(tmp_path, **RULES), bot_setup, clock) as gw:
        app = gw.server.app[GATEWAY]
        ticket = await handed_off(gw)
        assert ticket.sla is not None and ticket.sla.first_response_due_at == TUESDAY_9 + timedelta(hours=2)
        clock.set(TUESDAY_9 + timedelta(minutes=90))
        await app.sla.run_once()
        assert await sla_events(app.store) == []
        clock.set(TUESDAY_9 + timedelta(minutes=96))  # 80 % of two hours
        await app.sla.run_once()
        await app.sla.run_once()
        assert [(e.type, e.data["target"]) for e in await sla_events(app.store)] == [
            ("ticket.sla_warning", "first_response")
        ]
        status, at_risk = await gw.api("GET", "/tickets?sla=at_risk")
        assert status == 200 and [t["number"] for t in at_risk["tickets"]] == [ticket.number]

        clock.set(TUESDAY_9 + timedelta(hours=2))
        await asyncio.gather(app.sla.run_once(), app.sla.run_once())
        fired = await sla_events(app.store)
        assert [(e.type, e.data["target"]) for e in fired] == [
            ("ticket.sla_warning", "first_response"),
            ("ticket.sla_breached", "first_response"),
        ]
        assert datetime.fromisoformat(fired[1].data["due_at"]) == TUESDAY_9 + timedelta(hours=2)
        escalated = await app.store.get_ticket(ticket.id)
        assert escalated is not None and escalated.sla is not None
        assert escalated.priority == "high" and "sla-breached" in escalated.tags
        assert escalated.sla.breached == ("first_response",)
        updates = [e for e in await app.store.events_after(0, 1000) if e.type == "ticket.updated"]
        assert [sorted(e.data["changes"]) for e in updates] == [["priority", "tags"]]
        status, breached = await gw.api("GET", "/tickets?sla=breached")
        assert [t["number"] for t in breached["tickets"]] == [ticket.number]
        assert breached["tickets"][0]["sla"]["breached"] == ["first_response"]

        # The agent answers late: the response target is met (still recorded as breached), nothing more fires.
        status, _ = await gw.api("POST", f"/tickets/{ticket.number}/replies", json={"text": "您好", "agent": "li"})
        assert status == 201
        clock.set(TUESDAY_9 + timedelta(hours=3))
        await app.sla.run_once()
        assert len(await sla_events(app.store)) == 2


async def test_a_breach_due_while_the_gateway_was_down_fires_once_at_start(tmp_path: Path, bot_setup: BotSetup) -> None:
    clock = ManualClock(TUESDAY_9)
    config = make_config(tmp_path, **RULES)
    async with started(config, bot_setup, clock) as gw:
        ticket = await handed_off(gw)
    clock.set(TUESDAY_9 + timedelta(days=1))  # down overnight: warning and breach both fell due
    for _ in range(2):  # started twice: the breach still fires once
        async with started(config, bot_setup, clock) as gw:
            store = gw.server.app[GATEWAY].store
            async with asyncio.timeout(10):
                while not await sla_events(store):  # noqa: ASYNC110 - the store has no event to wait on
                    await asyncio.sleep(0.05)
            await gw.server.app[GATEWAY].tasks.drain(5)
            fired = await sla_events(store)
            assert [(e.type, e.ticket_id) for e in fired] == [("ticket.sla_breached", ticket.id)]


async def test_two_instances_fire_each_warning_and_breach_once(tmp_path: Path, bot_setup: BotSetup) -> None:
    prefix = redis_store().tag  # skips without Redis
    clock = ManualClock(TUESDAY_9)
    config = make_config(tmp_path, store={"backend": "redis", "url": REDIS_URL, "prefix": prefix}, **RULES)
    try:
        async with started(config, bot_setup, clock) as a, started(config, bot_setup, clock) as b:
            one, two = a.server.app[GATEWAY], b.server.app[GATEWAY]
            tickets = [await handed_off(a, n) for n in range(3)]
            for minutes in (96, 120):
                clock.set(TUESDAY_9 + timedelta(minutes=minutes))
                await asyncio.gather(*(app.sla.run_once() for app in (one, two, one, two)))
            fired = await sla_events(one.store)
            assert sorted((e.ticket_id or "", str(e.type)) for e in fired) == sorted(
                (t.id, kind) for t in tickets for kind in ("ticket.sla_warning", "ticket.sla_breached")
            )
    finally:
        cleanup = redis_store()
        cleanup.tag = prefix
        await cleanup.open()
        await cleanup.close()
