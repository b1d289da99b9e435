"""The ticket acknowledgement survives a temporary SMTP failure: retried like any reply, stored and sent once."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from core.model import DeliveryStatus, Direction, EventType, Message
from gateway.app import GATEWAY
from gateway.intake import BotSetup
from tests.conftest import Gateway, started
from tests.email.conftest import Dovecot, LateSmtp, SmtpSink, email_config, mail
from tests.email.test_imap_intake import _conversation_ids, _count_inbound, _until

FAST_RETRIES = (0.2, 0.2, 0.2, 0.2, 0.2)  # seconds between attempts (the default backoff starts at 1 s)


async def _acknowledgements(gw: Gateway) -> list[Message]:
    store = gw.server.app[GATEWAY].store
    return [
        m
        for conv_id in await _conversation_ids(gw)
        for m in await store.messages(conv_id)
        if m.direction is Direction.OUTBOUND and m.meta.get("kind") == "acknowledgement"
    ]


async def _until_delivery(gw: Gateway, status: DeliveryStatus) -> Message:
    found: list[Message] = []

    async def reached() -> bool:
        found[:] = [m for m in await _acknowledgements(gw) if m.delivery is status]
        return bool(found)

    await _until(reached, 15)
    return found[0]


async def _assert_acknowledged_once(gw: Gateway, sink: SmtpSink, message_id: str) -> None:
    [sent] = await sink.wait_for(1)
    sent_ack = await _until_delivery(gw, DeliveryStatus.SENT)
    await asyncio.sleep(0.6)  # longer than the remaining retry delays: a second send would arrive now
    assert len(sink.received) == 1
    assert sent["In-Reply-To"] == f"<{message_id}>"
    assert sent["Message-ID"] == f"<{sent_ack.id}@example.test>"
    [ack] = await _acknowledgements(gw)  # stored once, under its unique external id
    assert ack.id == sent_ack.id
    _status, tickets = await gw.api("GET", "/tickets")
    [ticket] = tickets["tickets"]
    assert ack.external_id == f"ack:{ticket['id']}"
    assert re.search(rf"\[{ticket['number']}-[0-9a-f]{{6}}\]", sent["Subject"])  # the signed tag
    events = await gw.server.app[GATEWAY].store.events_after(0, limit=1000)
    assert [e for e in events if e.type == EventType.MESSAGE_DELIVERY_FAILED] == []


async def test_greylisted_acknowledgement_is_retried_and_arrives_once(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    smtp_sink.greylist = 1  # the first attempt gets 451 4.7.1, the next one is accepted
    user = dovecot.user()
    config = email_config(tmp_path, dovecot, smtp_sink, user)
    async with started(config, bot_setup, retry_delays_s=FAST_RETRIES) as gw:
        await asyncio.to_thread(dovecot.append, user, mail(message_id="<grey@example.org>"))
        await _count_inbound(gw, 1)
        await _assert_acknowledged_once(gw, smtp_sink, "grey@example.org")
        assert smtp_sink.refused == 1


async def test_acknowledgement_waits_out_an_smtp_server_that_is_down(
    tmp_path: Path, dovecot: Dovecot, smtp_late: LateSmtp, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(tmp_path, dovecot, smtp_late.sink, user)
    async with started(config, bot_setup, retry_delays_s=FAST_RETRIES) as gw:
        await asyncio.to_thread(dovecot.append, user, mail(message_id="<down@example.org>"))
        await _count_inbound(gw, 1)
        refused = await _until_delivery(gw, DeliveryStatus.RETRYABLE)  # connection refused: recorded, not lost
        assert "Connect" in (refused.delivery_error or "") or "refused" in (refused.delivery_error or "").lower()
        await smtp_late.start()
        await _assert_acknowledged_once(gw, smtp_late.sink, "down@example.org")
