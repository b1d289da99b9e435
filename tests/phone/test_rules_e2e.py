"""Phone end to end with the sample rules: a missed call's ticket has the caller's number, a queue and an SLA."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from bot.setup import BotSetup
from tests.conftest import make_config, started
from tests.phone.conftest import call_message, cti, phone_inbox, settled, tickets_of
from tests.rules.sample import sample_rules


async def test_missed_call_ticket_has_fields_queue_and_sla(tmp_path: Path, bot_setup: BotSetup) -> None:
    config = await asyncio.to_thread(make_config, tmp_path, inboxes=[phone_inbox("tel")], **sample_rules())
    async with started(config, bot_setup) as gw:
        call = {"direction": "in", "from": "13800138000", "to": "4008001234", "callId": "c1"}
        assert await cti(gw, "tel", {"event": "newCall", **call}) == (200, {})
        assert await cti(gw, "tel", {"event": "hangup", "cause": "noAnswer", **call}) == (200, {})
        await settled(gw)
        message = await call_message(gw, "tel", "c1")
        assert message is not None
        (ticket,) = await tickets_of(gw, message)
        assert ticket.fields["phone"] == "+8613800138000"  # from the call summary the customer "said"
        assert ticket.queue == "general" and ticket.assignee is None  # the general queue has no agents
        assert ticket.routing[0] == "general"
        assert ticket.sla is not None and ticket.sla.policy == "default"
        assert ticket.sla.first_response_due_at is not None and ticket.sla.first_response_due_at > ticket.created_at
        status, body = await gw.api("GET", f"/tickets/{ticket.number}")
        assert status == 200 and body["queue"] == "general" and body["sla"]["policy"] == "default"
        assert datetime.fromisoformat(body["sla"]["resolution_due_at"]) > ticket.created_at
