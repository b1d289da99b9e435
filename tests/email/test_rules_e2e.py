"""Email end to end with the sample rules: an invoice mail lands in billing with its order number and an SLA."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from bot.setup import BotSetup
from core.config import Config
from tests.conftest import make_config, started
from tests.email.conftest import Dovecot, SmtpSink, connector_of, email_config, mail
from tests.rules.sample import sample_rules


def with_rules(tmp_path: Path, config: Config) -> Config:
    inboxes = [box.model_dump(mode="json") for box in config.inboxes]
    return make_config(tmp_path, inboxes=inboxes, **sample_rules())


async def test_email_ticket_has_fields_queue_assignee_and_sla(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    base = email_config(tmp_path, dovecot, smtp_sink, user, imap={"poll_interval_s": 600})
    config = await asyncio.to_thread(with_rules, tmp_path, base)
    async with started(config, bot_setup) as gw:
        connector = connector_of(gw)
        await asyncio.wait_for(connector.synced.wait(), 10)
        await asyncio.sleep(0.3)
        body = "您好，订单号: 20261128777777 需要开增值税发票，金额 1,580 元。联系邮箱 finance@customer.example.com"
        await asyncio.to_thread(dovecot.append, user, mail(subject="开发票", body=body))
        async with asyncio.timeout(15):
            while not (await gw.api("GET", "/tickets"))[1]["tickets"]:  # noqa: ASYNC110 - polling the API is the test
                await asyncio.sleep(0.05)
        [ticket] = (await gw.api("GET", "/tickets"))[1]["tickets"]
        assert ticket["fields"]["order_number"] == "20261128777777"
        assert ticket["fields"]["amount"] == "1580.00 CNY"
        assert ticket["fields"]["email"] == "finance@customer.example.com"
        assert ticket["queue"] == "billing" and ticket["assignee"] == "li"
        assert ticket["routing"] == ["general", "invoices"]
        assert ticket["sla"]["policy"] == "default"
        assert datetime.fromisoformat(ticket["sla"]["first_response_due_at"]) > datetime.fromisoformat(
            ticket["created_at"]
        )
