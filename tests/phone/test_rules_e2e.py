"""Phone end to end with the sample rules: a missed call's ticket has the caller's number, a queue and an SLA."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from bot.setup import BotSetup
from core.config import load_config
from core.model import Channel
from core.store import TicketQuery, open_store
from gateway.cli import main
from tests.conftest import ROOT, make_config, started
from tests.phone.conftest import call_message, cti, phone_inbox, settled, tickets_of
from tests.phone.rows import asterisk
from tests.phone.test_cdr_import import MISSED
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


def test_calls_imported_from_cdr_get_the_rules_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = {
        "data_dir": str(tmp_path / "data"),
        "bot": {"kb": str(ROOT / "kb" / "faq.yaml")},
        "inboxes": [{"name": "tel", "channel": "phone", "cti_enabled": False}],
        **sample_rules(),
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    cdr = tmp_path / "Master.csv"
    cdr.write_text(asterisk(uniqueid="9.1", **MISSED) + "\n", encoding="utf-8")
    assert main(["calls", "import", str(cdr), "--format", "asterisk-csv", "-c", str(config_path)]) == 0
    capsys.readouterr()

    async def check() -> None:
        loaded = await asyncio.to_thread(load_config, config_path)
        store = open_store(loaded)
        await store.open()
        try:
            [ticket] = (await store.list_tickets(TicketQuery(channel=Channel.PHONE))).tickets
            assert ticket.queue == "general" and ticket.routing[0] == "general"
            assert ticket.sla is not None and ticket.sla.policy == "default"
        finally:
            await store.close()

    asyncio.run(check())
