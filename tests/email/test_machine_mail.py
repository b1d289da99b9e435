"""Machine mail that once got acknowledgements (fml, OpenSMTPD, Verizon, KDDI, Microsoft complaints): it is
recognised, and a person's mail that looks like it (a forwarded bounce, a list post) is not.

The bounces are sisimai's real samples (tests/fixtures/email/sisimai/README.md names their source and license).
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path

import pytest

from connectors.email.auto import AutoKind
from connectors.email.parse import parse_mail
from core.model import Direction, Message
from gateway.app import GATEWAY
from gateway.intake import BotSetup
from tests.conftest import Gateway, started
from tests.email.conftest import Dovecot, SmtpSink, email_config, mail

SAMPLES = Path(__file__).parent.parent / "fixtures" / "email" / "sisimai"

# file -> (kind, failed recipient, its reason as sisimai names it, hard)
EXPECTED = {
    "lhost-opensmtpd-05.eml": (AutoKind.BOUNCE, "kijitora@mail.example.co.jp", "expired", False),
    "lhost-fml-01.eml": (AutoKind.BOUNCE, "2ndml@example.com", "onhold", False),
    "lhost-verizon-01.eml": (AutoKind.BOUNCE, "0000000000@vzwpix.com", "userunknown", True),
    "lhost-kddi-02.eml": (AutoKind.BOUNCE, "kijitora@00000000000000.dion.ne.jp", "mailboxfull", False),
    "arf-22.eml": (AutoKind.COMPLAINT, "kijitora@example.com", "", False),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sisimai_samples_are_machine_mail(name: str) -> None:
    kind, recipient, reason, hard = EXPECTED[name]
    report = parse_mail((SAMPLES / name).read_bytes()).auto
    assert report.kind is kind
    found = {r.recipient: r for r in report.recipients}
    assert recipient in found, report.recipients
    assert (found[recipient].reason, found[recipient].hard) == (reason, hard)


def test_a_header_without_a_space_after_its_colon_is_still_a_header() -> None:
    """Verizon writes "From:MMSC NDR Administrator <...>"; it used to be folded into the Received line above it,
    so the mail lost its From and Subject."""
    parsed = parse_mail((SAMPLES / "lhost-verizon-01.eml").read_bytes())
    assert parsed.sender.email == "sysadmin@m01.vzwpix.com"
    assert parsed.subject == "Undeliverable Message"


def test_a_url_on_a_broken_fold_is_not_taken_for_a_header() -> None:
    raw = b"From: a@example.org\nSubject: see\nhttp://example.org/x\nTo: b@example.org\n\nhi\n"
    parsed = parse_mail(raw)
    assert parsed.subject == "see http://example.org/x"


_OPENSMTPD_BODY = (
    "    Hi!\n\n    This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail.\n\n"
    "    An error has occurred while attempting to deliver a message for\n    the following list of recipients:\n\n"
    "kijitora@example.jp: Envelope expired\n\n    Below is a copy of the original message:\n\nSubject: Nyaan\n"
)


def test_a_customer_forwarding_a_bounce_is_a_person() -> None:
    """Their own address, "Fwd:", the bounce quoted: a question for us, which gets a ticket and an answer."""
    raw = mail(
        subject="Fwd: Delivery status notification: error",
        body="My mail to your sales team bounced, see below. 550 5.1.1 was the code.\n\n" + _OPENSMTPD_BODY,
    )
    assert parse_mail(raw).auto.kind is AutoKind.NONE


def test_mail_sent_through_opensmtpd_by_a_person_is_a_person() -> None:
    raw = mail(
        headers={"Received": "from localhost (localhost [local]) by localhost (OpenSMTPD) with ESMTPA id 425e5057"},
        body="Hi, where is my order? It was due last week.",
    )
    assert parse_mail(raw).auto.kind is AutoKind.NONE


def test_a_post_an_fml_list_passes_on_is_not_a_list_manager_notice() -> None:
    """A member's post carries X-MLServer too, but the member's From and Message-ID."""
    raw = mail(headers={"X-MLServer": "fml [fml 4.0.3 release (20011202/4.0.3)]", "X-ML-Name": "users"})
    assert parse_mail(raw).auto.kind is AutoKind.NONE


def test_the_null_reverse_path_alone_does_not_make_a_bounce() -> None:
    """Spam uses the null reverse-path too (two of Zammad's samples): the body has to agree."""
    raw = b"Return-Path: <>\n" + mail(subject="Darlehen bieten jetzt bewerben", body="Kredit zu 2%!")
    assert parse_mail(raw).auto.kind is AutoKind.NONE
    bounced = b"Return-Path: <>\n" + mail(subject="Mail", body="Could not be delivered to: <x@example.jp>\n")
    assert parse_mail(bounced).auto.kind is AutoKind.BOUNCE


def test_an_out_of_office_reply_from_the_null_reverse_path_stays_an_auto_reply() -> None:
    """Quoting our mail back does not make it a bounce, whose recipients would be flagged as dead addresses."""
    ooo = b"Return-Path: <>\n" + mail(
        subject="Automatic reply: 订单 12345",
        body="I am out of office until Monday.\n\nOriginal mail as follows:\nFrom: support@example.test\n",
        headers={"Auto-Submitted": "auto-replied"},
    )
    report = parse_mail(ooo).auto
    assert report.kind is AutoKind.AUTO_REPLY and report.recipients == ()


def test_a_read_receipt_is_an_automatic_answer() -> None:
    msg = EmailMessage()
    msg["From"] = "customer@example.org"
    msg["To"] = "support@example.test"
    msg["Subject"] = "Read: 订单 12345"
    msg.set_content("Your message was displayed on the recipient's computer.")
    notification = b"Final-Recipient: rfc822; customer@example.org\r\nDisposition: manual-action/MDN-sent-manually\r\n"
    msg.add_attachment(notification, maintype="message", subtype="disposition-notification")
    msg.replace_header("Content-Type", msg["Content-Type"].replace("multipart/mixed", "multipart/report"))
    msg.set_param("report-type", "disposition-notification")
    assert parse_mail(bytes(msg)).auto.kind is AutoKind.AUTO_REPLY


async def _inbound(gw: Gateway) -> list[Message]:
    store = gw.server.app[GATEWAY].store
    events = await store.events_after(0, limit=10_000)
    out: list[Message] = []
    for conversation_id in dict.fromkeys(e.conversation_id for e in events if e.conversation_id):
        out += [m for m in await store.messages(conversation_id) if m.direction is Direction.INBOUND]
    return out


async def test_machine_mail_through_dovecot_gets_no_acknowledgement_and_no_ticket(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    """Each sample is kept (for the transcript) but opens no ticket and is never answered; a person's mail after
    them still is."""
    user = dovecot.user()
    for name in sorted(EXPECTED):
        await asyncio.to_thread(dovecot.append, user, (SAMPLES / name).read_bytes())
    await asyncio.to_thread(dovecot.append, user, mail(message_id="<person@example.org>"))
    config = email_config(tmp_path, dovecot, smtp_sink, user)
    async with started(config, bot_setup) as gw:
        async with asyncio.timeout(20):
            while len(messages := await _inbound(gw)) < len(EXPECTED) + 1:  # noqa: ASYNC110 - polling the store
                await asyncio.sleep(0.05)
        [ack] = await smtp_sink.wait_for(1)
        await asyncio.sleep(0.5)  # a second acknowledgement would show up now
        assert len(smtp_sink.received) == 1 and ack["To"] == "customer@example.org"
        kinds = sorted(m.meta.get("auto", {}).get("kind", "person") for m in messages)
        assert kinds == ["bounce"] * 4 + ["complaint", "person"]
        _status, page = await gw.api("GET", "/tickets")
        [ticket] = page["tickets"]
        assert ticket["subject"] == "订单 12345 退款问题"
