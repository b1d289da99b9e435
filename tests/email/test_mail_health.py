"""A mailbox that fetches is healthy in /readyz and /metrics; one that cannot log in turns stale."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.app import GATEWAY
from gateway.intake import BotSetup
from tests.conftest import started
from tests.email.conftest import Dovecot, SmtpSink, connector_of, email_config
from tests.test_metrics import parse, scrape, value


async def test_a_fetching_mailbox_reports_its_last_fetch(
    tmp_path: Path, bot_setup: BotSetup, dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    config = email_config(tmp_path, dovecot, smtp_sink, dovecot.user())
    before = datetime.now(UTC)
    async with started(config, bot_setup) as gw:
        await asyncio.wait_for(connector_of(gw).synced.wait(), 10)
        async with asyncio.timeout(10):  # written right after the sync
            while True:
                if (await gw.server.app[GATEWAY].health.snapshot()).mail_fetched["support"] is not None:
                    break
                await asyncio.sleep(0.05)
        async with gw.http.get(gw.url + "/readyz") as resp:
            body = await resp.json()
        assert datetime.fromisoformat(body["components"]["inbox:support"]["last_fetch"]) >= before
        assert body["alarms"] == []
        m = parse((await scrape(gw))[1])
        assert value(m, "huiliu_imap_last_fetch_timestamp_seconds", inbox="support") >= before.timestamp()


async def test_a_mailbox_that_cannot_log_in_goes_stale(
    tmp_path: Path, bot_setup: BotSetup, dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    config = email_config(tmp_path, dovecot, smtp_sink, dovecot.user(), imap={"password": "wrong-password"})
    now = [datetime.now(UTC)]
    async with started(config, bot_setup, clock=lambda: now[0]) as gw:
        await asyncio.sleep(0.5)  # a few failed logins
        health = gw.server.app[GATEWAY].health
        assert (await health.snapshot()).alarms == ()
        now[0] += timedelta(minutes=16)
        (alarm,) = (await health.snapshot()).alarms
        assert (alarm.name, alarm.subject, alarm.detail) == ("mailbox_stale", "support", "last successful fetch: never")
