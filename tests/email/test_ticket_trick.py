"""The email ticket trick, against a real Dovecot and SMTP sink: a forged From: plus a ticket number in the subject
must not join the victim's ticket nor get the agent's answer copied to an attacker; real colleagues still join."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from gateway.intake import BotSetup
from tests.conftest import Gateway, started
from tests.email.conftest import Dovecot, SmtpSink, email_config, mail, stored_inbound

TRUSTED = "mx.example.test"


async def _reply(gw: Gateway, ticket_id: str, text: str, key: str) -> None:
    status, body = await gw.api(
        "POST", f"/tickets/{ticket_id}/replies", json={"text": text, "agent": "wang"}, headers={"Idempotency-Key": key}
    )
    assert status in (200, 201), body


def _copied(sent: object) -> list[str]:
    cc = sent["Cc"]  # type: ignore[index]
    return [a.addr_spec for a in cc.addresses] if cc else []


async def test_a_forged_sender_with_the_ticket_number_gets_a_new_ticket_and_no_copy_of_the_answer(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(
        tmp_path, dovecot, smtp_sink, user, imap={"poll_interval_s": 600}, trusted_authserv_ids=[TRUSTED]
    )
    async with started(config, bot_setup) as gw:
        await asyncio.to_thread(dovecot.append, user, mail(message_id="<v1@example.org>"))
        [ack] = await smtp_sink.wait_for(1)
        signed = re.search(r"\[(HL-\d+-[0-9a-f]+)\]", ack["Subject"]).group(1)  # type: ignore[union-attr]
        number = signed.rsplit("-", 1)[0]
        # The attack as it was found: the victim's address forged in From:, the bare number, the attacker in Cc.
        forged = mail(
            subject=f"Re: 订单 12345 退款问题 [{number}]",
            body="请把我的订单地址和电话发给我。",
            message_id="<f1@evil.example>",
            headers={"Cc": "mallory@evil.example"},
        )
        # The same with the signed tag (leaked, say): our trusted MX says the forged From fails DMARC.
        leaked = mail(
            subject=f"Re: 订单 12345 退款问题 [{signed}]",
            message_id="<f2@evil.example>",
            headers={
                "Cc": "mallory@evil.example",
                "Authentication-Results": f"{TRUSTED}; dkim=none; dmarc=fail (p=reject) header.from=example.org",
            },
        )
        await asyncio.to_thread(dovecot.append, user, forged)
        await asyncio.to_thread(dovecot.append, user, leaked)
        by_id = await stored_inbound(gw, settle_s=0.3, n=3)
        victim = by_id["v1@example.org"]
        for attack in ("f1@evil.example", "f2@evil.example"):
            assert by_id[attack].conversation_id != victim.conversation_id
            assert by_id[attack].ticket_id not in (None, victim.ticket_id)
            assert by_id[attack].meta["email"]["thread_via"] == "new"
        assert by_id["f2@evil.example"].meta["email"]["auth"] == "fail"
        _status, tickets = await gw.api("GET", "/tickets?limit=10")
        assert len(tickets["tickets"]) == 3

        # The agent answers the victim's ticket: only the victim gets it.
        await _reply(gw, victim.ticket_id or "", "您的订单已发货。", "v-r1")
        # And answers the forger's ticket whose sender failed DMARC: its Cc is nobody we know.
        await _reply(gw, by_id["f2@evil.example"].ticket_id or "", "请提供订单号。", "f-r1")
        sent = await smtp_sink.wait_for(5)  # three acknowledgements, two answers
        answers = [m for m in sent if "Auto-Submitted" not in m]
        assert len(answers) == 2
        for m in sent:
            assert "mallory@evil.example" not in str(m["To"]) + str(m["Cc"] or "")
        assert {m["In-Reply-To"] for m in answers} == {"<v1@example.org>", "<f2@evil.example>"}


async def test_colleagues_on_the_thread_or_authenticated_join_by_the_signed_tag_and_strangers_do_not(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(
        tmp_path, dovecot, smtp_sink, user, imap={"poll_interval_s": 600}, trusted_authserv_ids=[TRUSTED]
    )
    async with started(config, bot_setup) as gw:
        first = mail(message_id="<c1@example.org>", headers={"Cc": "老板 <boss@example.org>"})
        await asyncio.to_thread(dovecot.append, user, first)
        [ack] = await smtp_sink.wait_for(1)
        tag = re.search(r"\[(HL-\d+-[0-9a-f]+)\]", ack["Subject"]).group(0)  # type: ignore[union-attr]
        subject = f"Re: 订单 12345 退款问题 {tag}"
        # The boss, copied on the customer's first mail, writes a fresh mail (no reply headers) with the tag,
        # copying someone new in: the boss joins, the newcomer is not on the ticket for that.
        boss = mail(
            sender="老板 <boss@example.org>",
            subject=subject,
            body="请尽快处理。",
            message_id="<c2@example.org>",
            headers={"Cc": "finance@example.org"},
        )
        # A colleague nobody copied, whose mail our MX authenticated (DMARC pass), joins too.
        colleague = mail(
            sender="li@example.org",
            subject=subject,
            body="补充：发票抬头是公司。",
            message_id="<c3@example.org>",
            headers={"Authentication-Results": f"{TRUSTED}; spf=pass; dmarc=pass (p=none) header.from=example.org"},
        )
        # The same claim from a server we do not trust proves nothing: a new ticket.
        stranger = mail(
            sender="zhao@example.org",
            subject=subject,
            message_id="<c4@example.org>",
            headers={"Authentication-Results": "mx.evil.example; dmarc=pass header.from=example.org"},
        )
        for raw in (boss, colleague, stranger):
            await asyncio.to_thread(dovecot.append, user, raw)
        by_id = await stored_inbound(gw, settle_s=0.3, n=4)
        customer = by_id["c1@example.org"]
        for joined in ("c2@example.org", "c3@example.org"):
            assert by_id[joined].conversation_id == customer.conversation_id
            assert by_id[joined].ticket_id == customer.ticket_id
            assert by_id[joined].meta["email"]["thread_via"] == "tag"
            assert by_id[joined].meta["email"]["participant"] is True
        assert by_id["c3@example.org"].meta["email"]["auth"] == "pass"
        assert by_id["c4@example.org"].conversation_id != customer.conversation_id
        assert by_id["c4@example.org"].meta["email"]["auth"] == "none"

        # Reply all to the boss's mail: the boss is copied, the newcomer they added is not.
        await _reply(gw, customer.ticket_id or "", "已安排退款。", "c-r1")
        sent = await smtp_sink.wait_for(3)  # the customer's and the stranger's acknowledgements, the answer
        [answer] = [m for m in sent if "Auto-Submitted" not in m]
        assert answer["To"] == "customer@example.org"
        assert answer["In-Reply-To"] == "<c3@example.org>"
        assert _copied(answer) == ["li@example.org"]
