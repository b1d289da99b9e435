"""A forged first mail (no tag, no reply chain) under a customer's address, against a real Dovecot and SMTP sink.

With ``trusted_authserv_ids``, a mail whose From: our trusted MX checked and could not authenticate is marked
unverified: it lands on the address's contact (the address is theirs) but learns nothing of that contact's other
tickets, links no address to it, gets no answers copied to its Cc, is joined by none of the contact's later
follow-ups, and the ticket it opens says so to agents. Without a trusted server, email stays as it was.
"""

from __future__ import annotations

import asyncio
import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from gateway.app import GATEWAY
from gateway.intake import BotSetup
from tests.conftest import Gateway, started
from tests.email.conftest import Dovecot, SmtpSink, email_config, mail, stored_inbound

TRUSTED = "mx.example.test"
GENUINE = (
    f"{TRUSTED}; spf=pass smtp.mailfrom=example.org; dkim=pass header.d=example.org; dmarc=pass header.from=example.org"
)
# What our MX writes on the forgeries: the domain publishes no DMARC policy here, so only the alignment failed.
UNALIGNED = f"{TRUSTED}; spf=softfail smtp.mailfrom=evil.example; dkim=none; dmarc=none header.from=example.org"
DMARC_FAIL = f"{TRUSTED}; spf=fail smtp.mailfrom=example.org; dkim=none; dmarc=fail (p=reject) header.from=example.org"


async def _handled(gw: Gateway, message_ids: list[str]) -> None:
    """Until intake has finished with these messages (their answers, if any, are stored and sent)."""
    store = gw.server.app[GATEWAY].store
    async with asyncio.timeout(20):
        while True:
            pending = {m.external_id for m in await store.unhandled_messages()}
            if not pending & set(message_ids):
                break
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the outbox's send follows the handling


def _to(sent: EmailMessage) -> str:
    return str(sent["To"]) + " " + str(sent["Cc"] or "")


async def _ticket(gw: Gateway, ticket_id: str | None) -> dict[str, Any]:
    status, body = await gw.api("GET", f"/tickets/{ticket_id}")
    assert status == 200, body
    ticket = body.get("ticket", body)
    assert isinstance(ticket, dict)
    return ticket


async def test_a_forged_first_mail_learns_nothing_of_the_customer_and_is_flagged_for_agents(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(
        tmp_path, dovecot, smtp_sink, user, imap={"poll_interval_s": 600}, trusted_authserv_ids=[TRUSTED]
    )
    async with started(config, bot_setup) as gw:
        # The customer's own mail, which our MX authenticated: their ticket.
        await asyncio.to_thread(
            dovecot.append, user, mail(message_id="<own@example.org>", headers={"Authentication-Results": GENUINE})
        )
        [ack] = await smtp_sink.wait_for(1)
        own_number = re.search(r"\[(HL-\d+)-[0-9a-f]+\]", ack["Subject"]).group(1)  # type: ignore[union-attr]

        # Three forgeries in the customer's name, none a reply, none with a tag.
        asks_status = mail(
            subject="工单进度", body="我的工单进度怎么样了？", message_id="<s@evil.example>",
            headers={"Authentication-Results": UNALIGNED},
        )  # fmt: skip
        links = mail(
            subject="绑定", body="绑定邮箱 mallory@evil.example", message_id="<l@evil.example>",
            headers={"Authentication-Results": DMARC_FAIL},
        )  # fmt: skip
        copies = mail(
            subject="请把我的订单改寄到新地址", body="新地址见附件，请回复确认。", message_id="<c@evil.example>",
            headers={"Authentication-Results": UNALIGNED, "Cc": "mallory@evil.example"},
        )  # fmt: skip
        for raw in (asks_status, links, copies):
            await asyncio.to_thread(dovecot.append, user, raw)
        by_id = await stored_inbound(gw, 4)
        await _handled(gw, ["s@evil.example", "l@evil.example", "c@evil.example"])
        own = by_id["own@example.org"]
        assert own.meta["email"]["sender_check"] == "authenticated"
        for forged in ("s@evil.example", "l@evil.example", "c@evil.example"):
            assert by_id[forged].meta["email"]["sender_check"] == "unverified"
            assert by_id[forged].meta["sender_check"] == "unverified"

        # The status question is answered from the forged thread alone: the customer's ticket is not named.
        [status_answer] = [m for m in smtp_sink.received if m["In-Reply-To"] == "<s@evil.example>"]
        body = status_answer.get_content()
        assert own_number not in body and "没有工单" in body
        # Asking to link an address is no linking step: no code went to the forger's address, and it is a ticket.
        assert not any("mallory@evil.example" in _to(m) for m in smtp_sink.received)
        assert by_id["l@evil.example"].ticket_id is not None
        store = gw.server.app[GATEWAY].store
        conversation = await store.get_conversation(own.conversation_id)
        assert conversation is not None
        contact = await store.get_contact(conversation.contact_id)
        assert contact is not None and [str(i) for i in contact.identities] == ["email:customer@example.org"]

        # The tickets the forgeries opened are flagged for agents (the API and the ticket.created event say so).
        forged_ticket = await _ticket(gw, by_id["c@evil.example"].ticket_id)
        assert forged_ticket["sender_unverified"] is True
        assert (await _ticket(gw, own.ticket_id))["sender_unverified"] is False
        created = [e for e in await store.events_after(0, limit=10_000) if e.type == "ticket.created"]
        flags = {e.data["ticket"]["id"]: e.data["ticket"]["sender_unverified"] for e in created}
        assert flags == {own.ticket_id: False, by_id["l@evil.example"].ticket_id: True, forged_ticket["id"]: True}

        # The agent answers the forged change of address: the Cc it brought along gets nothing.
        status, _body = await gw.api(
            "POST", f"/tickets/{forged_ticket['id']}/replies", json={"text": "请提供订单号。", "agent": "wang"},
            headers={"Idempotency-Key": "forged-r1"},
        )  # fmt: skip
        assert status in (200, 201)
        async with asyncio.timeout(15):
            while not [m for m in smtp_sink.received if "Auto-Submitted" not in m]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        [answer] = [m for m in smtp_sink.received if "Auto-Submitted" not in m]
        assert answer["To"] == "customer@example.org" and answer["Cc"] is None

        # The customer writes again, authenticated: the follow-up joins their own ticket, not a newer forged one.
        again = mail(
            subject="还有一个问题", body="另外发票抬头请写公司名。", message_id="<again@example.org>",
            headers={"Authentication-Results": GENUINE},
        )  # fmt: skip
        await asyncio.to_thread(dovecot.append, user, again)
        by_id = await stored_inbound(gw, 5)
        assert by_id["again@example.org"].meta["email"]["sender_check"] == "authenticated"
        await _handled(gw, ["again@example.org"])
        joined = (await stored_inbound(gw, 5))["again@example.org"]
        assert joined.ticket_id == own.ticket_id


async def test_without_a_trusted_server_a_claimed_address_is_taken_as_written(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    """As before (and as the README says): nothing checked the From:, so nothing is flagged and the mail is the
    contact's. Only a trusted Authentication-Results server can tell a forgery."""
    user = dovecot.user()
    config = email_config(tmp_path, dovecot, smtp_sink, user, imap={"poll_interval_s": 600})
    async with started(config, bot_setup) as gw:
        forged = mail(message_id="<c@evil.example>", headers={"Authentication-Results": UNALIGNED})
        await asyncio.to_thread(dovecot.append, user, forged)
        message = (await stored_inbound(gw, 1))["c@evil.example"]
        assert message.meta["email"]["sender_check"] == "channel" and "sender_check" not in message.meta
        await smtp_sink.wait_for(1)
        assert (await _ticket(gw, message.ticket_id))["sender_unverified"] is False
