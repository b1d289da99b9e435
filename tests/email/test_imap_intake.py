"""End to end against a real Dovecot and SMTP sink: IDLE, threading, acknowledgements, crash and resync safety."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from connectors.email.connector import LEASE_TTL_S
from connectors.email.parse import parse_mail
from core.model import Author, Channel, Direction, Message
from gateway.app import GATEWAY
from gateway.intake import BotSetup
from tests.conftest import Gateway, started
from tests.email.conftest import Dovecot, SmtpSink, connector_of, email_config, mail
from tests.tcp_proxy import TcpProxy


async def _inbound(gw: Gateway) -> list[Message]:
    store = gw.server.app[GATEWAY].store
    out: list[Message] = []
    for ticket_page in [await gw.api("GET", "/tickets?limit=100")]:
        assert ticket_page[0] == 200
    # Every stored inbound email message, whatever its conversation.
    for conv_id in await _conversation_ids(gw):
        out += [m for m in await store.messages(conv_id) if m.direction is Direction.INBOUND]
    return out


async def _conversation_ids(gw: Gateway) -> list[str]:
    store = gw.server.app[GATEWAY].store
    events = await store.events_after(0, limit=10_000)
    return list(dict.fromkeys(e.conversation_id for e in events if e.conversation_id))


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 20) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - polling the store is what we test against
            await asyncio.sleep(0.05)


async def _count_inbound(gw: Gateway, n: int, timeout_s: float = 20) -> list[Message]:
    async def enough() -> bool:
        return len(await _inbound(gw)) >= n

    await _until(enough, timeout_s)
    await asyncio.sleep(0.3)  # anything extra (a duplicate) would show up now
    return await _inbound(gw)


async def test_idle_delivers_new_mail_and_acknowledges_with_ticket_number(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(tmp_path, dovecot, smtp_sink, user, imap={"poll_interval_s": 600})
    async with started(config, bot_setup) as gw:
        connector = connector_of(gw)
        await asyncio.wait_for(connector.synced.wait(), 10)
        await asyncio.sleep(0.3)  # in IDLE now; polling would take 600 s
        await asyncio.to_thread(dovecot.append, user, mail(message_id="<first@example.org>"))
        [message] = await _count_inbound(gw, 1, timeout_s=10)
        assert message.external_id == "first@example.org"
        assert message.text == "你好，我想申请退款。"
        [ack] = await smtp_sink.wait_for(1)
        status, tickets = await gw.api("GET", "/tickets")
        assert status == 200
        [ticket] = tickets["tickets"]
        assert ticket["subject"] == "订单 12345 退款问题"
        assert ticket["handoff_reason"] == "email"
        assert re.search(rf"\[{ticket['number']}-[0-9a-f]{{6}}\]", ack["Subject"])  # the number, signed
        assert ack["In-Reply-To"] == "<first@example.org>"
        assert ack["Auto-Submitted"] == "auto-replied"
        assert re.fullmatch(r"<msg_[0-9a-f]+@example\.test>", ack["Message-ID"])


async def test_reply_to_our_acknowledgement_joins_the_same_ticket(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(tmp_path, dovecot, smtp_sink, user, imap={"poll_interval_s": 600})
    async with started(config, bot_setup) as gw:
        await asyncio.to_thread(dovecot.append, user, mail(message_id="<q1@example.org>"))
        [ack] = await smtp_sink.wait_for(1)
        reply = mail(
            subject=f"Re: {ack['Subject']}",
            body="补充一下：订单号是 12345。\n\n"
            "On Mon, Jun 2, 2025 at 10:00 AM Support <support@example.test> wrote:\n> 已收到",
            message_id="<q2@example.org>",
            in_reply_to=ack["Message-ID"],
            references=f"<q1@example.org> {ack['Message-ID']}",
        )
        await asyncio.to_thread(dovecot.append, user, reply)
        first, second = sorted(await _count_inbound(gw, 2), key=lambda m: m.created_at)
        assert second.conversation_id == first.conversation_id
        assert second.ticket_id == first.ticket_id is not None
        assert second.text == "补充一下：订单号是 12345。"
        assert "已收到" in second.meta["full_text"]
        _status, tickets = await gw.api("GET", "/tickets")
        assert len(tickets["tickets"]) == 1
        assert len(smtp_sink.received) == 1  # a reply in an open ticket is not acknowledged again


async def test_subject_tag_from_a_stranger_opens_a_new_ticket(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(tmp_path, dovecot, smtp_sink, user, imap={"poll_interval_s": 600})
    async with started(config, bot_setup) as gw:
        await asyncio.to_thread(dovecot.append, user, mail(message_id="<t1@example.org>"))
        [ack] = await smtp_sink.wait_for(1)
        tag = re.search(r"\[(HL-\d+-[0-9a-f]+)\]", ack["Subject"]).group(1)  # type: ignore[union-attr]
        await asyncio.to_thread(
            dovecot.append, user, mail(sender="mallory@evil.example", subject=f"[{tag}] hi", message_id="<t2@x>")
        )
        await asyncio.to_thread(dovecot.append, user, mail(subject=f"[{tag}] more", message_id="<t3@example.org>"))
        messages = {m.external_id: m for m in await _count_inbound(gw, 3)}
        assert messages["t3@example.org"].ticket_id == messages["t1@example.org"].ticket_id
        assert messages["t2@x"].conversation_id != messages["t1@example.org"].conversation_id
        _status, tickets = await gw.api("GET", "/tickets")
        assert len(tickets["tickets"]) == 2


async def test_agent_reply_reaches_the_customer_with_threading_headers(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(tmp_path, dovecot, smtp_sink, user, acknowledge=False)
    async with started(config, bot_setup) as gw:
        await asyncio.to_thread(
            dovecot.append, user, mail(message_id="<c2@example.org>", references="<c0@example.org> <c1@example.org>")
        )
        await _count_inbound(gw, 1)

        async def ticket_exists() -> bool:
            return bool((await gw.api("GET", "/tickets"))[1]["tickets"])

        await _until(ticket_exists)
        ticket = (await gw.api("GET", "/tickets"))[1]["tickets"][0]
        status, body = await gw.api(
            "POST", f"/tickets/{ticket['id']}/replies", json={"text": "已为您退款。", "agent": "wang"},
            headers={"Idempotency-Key": "r1"},
        )  # fmt: skip
        assert status in (200, 201), body
        [sent] = await smtp_sink.wait_for(1)
        assert sent["To"] == "customer@example.org"
        assert re.fullmatch(rf"Re: 订单 12345 退款问题 \[{ticket['number']}-[0-9a-f]{{6}}\]", sent["Subject"])
        assert sent["In-Reply-To"] == "<c2@example.org>"
        assert sent["References"] == "<c0@example.org> <c1@example.org> <c2@example.org>"
        assert sent["Message-ID"] == f"<{body['message']['id']}@example.test>"
        assert "Auto-Submitted" not in sent
        assert sent.get_content().strip() == "已为您退款。"


async def test_a_copied_colleague_who_replies_joins_the_ticket_and_the_agent_replies_to_all(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(tmp_path, dovecot, smtp_sink, user, imap={"poll_interval_s": 600})
    async with started(config, bot_setup) as gw:
        first = mail(message_id="<cc1@example.org>", headers={"Cc": "老板 <boss@example.org>"})
        await asyncio.to_thread(dovecot.append, user, first)
        [ack] = await smtp_sink.wait_for(1)
        assert ack["To"] == "customer@example.org" and "Cc" not in ack  # an automatic mail answers the sender only
        # The boss answers all on the customer's mail, copying a third person in.
        boss = mail(
            sender="老板 <boss@example.org>",
            subject="Re: 订单 12345 退款问题",
            body="请尽快处理，谢谢。\n\n> 你好，我想申请退款。",
            message_id="<cc2@example.org>",
            in_reply_to="<cc1@example.org>",
            references="<cc1@example.org>",
            headers={"Cc": "customer@example.org, Finance <finance@example.org>, support@example.test"},
        )
        await asyncio.to_thread(dovecot.append, user, boss)
        by_id = {m.external_id: m for m in await _count_inbound(gw, 2)}
        customer, colleague = by_id["cc1@example.org"], by_id["cc2@example.org"]
        assert colleague.conversation_id == customer.conversation_id
        assert colleague.ticket_id == customer.ticket_id is not None
        assert colleague.text == "请尽快处理，谢谢。"
        assert colleague.meta["email"]["participant"] is True and "boss@example.org" in colleague.meta["email"]["from"]
        assert customer.meta["email"]["participant"] is False
        _status, tickets = await gw.api("GET", "/tickets")
        [ticket] = tickets["tickets"]
        store = gw.server.app[GATEWAY].store
        conversation = await store.get_conversation(customer.conversation_id)
        assert conversation is not None and conversation.address.value == "customer@example.org"
        assert len(smtp_sink.received) == 1  # no second acknowledgement

        status, body = await gw.api(
            "POST", f"/tickets/{ticket['id']}/replies", json={"text": "已安排退款。", "agent": "wang"},
            headers={"Idempotency-Key": "cc-r1"},
        )  # fmt: skip
        assert status in (200, 201), body
        _ack, sent = await smtp_sink.wait_for(2)
        assert sent["To"] == "customer@example.org"
        assert [a.addr_spec for a in sent["Cc"].addresses] == ["boss@example.org", "finance@example.org"]
        assert sent["In-Reply-To"] == "<cc2@example.org>"


async def test_attachments_are_filed_under_the_data_dir_even_with_a_very_long_chinese_name(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(tmp_path, dovecot, smtp_sink, user, acknowledge=False)
    name = "2024年度增值税专用发票" * 8 + ".pdf"  # 121 characters, 353 bytes: more than a file name may hold
    msg = message_from_bytes(mail(message_id="<att@example.org>"), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    msg.add_attachment(b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename=name)
    msg.add_attachment(b"\x89PNG screenshot", maintype="image", subtype="png", filename="截图.png")
    async with started(config, bot_setup) as gw:
        await asyncio.to_thread(dovecot.append, user, msg.as_bytes(policy=policy.SMTP))
        [message] = await _count_inbound(gw, 1)
    pdf, png = message.attachments
    assert (pdf.name, pdf.content_type, pdf.size) == (name, "application/pdf", 16)
    assert png.name == "截图.png"
    for attachment, data in ((pdf, b"%PDF-1.4 invoice"), (png, b"\x89PNG screenshot")):
        assert attachment.media_id is not None
        assert (config.data_path / attachment.media_id).read_bytes() == data
    assert Path(pdf.media_id or "").suffix == ".pdf" and len(Path(pdf.media_id or "").name.encode()) <= 255


async def test_a_mail_that_keeps_failing_is_quarantined_and_the_mailbox_moves_on(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(tmp_path, dovecot, smtp_sink, user, acknowledge=False)
    msg = message_from_bytes(mail(message_id="<poison@example.org>"), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="invoice.pdf")
    poison = msg.as_bytes(policy=policy.SMTP)
    # Filing its attachment fails every time: a directory stands where the file must go (disk trouble).
    sha = parse_mail(poison).raw_sha256
    (config.data_path / "email" / "support" / sha[:2] / sha / "invoice.pdf").mkdir(parents=True)
    async with started(config, bot_setup) as gw:
        await asyncio.to_thread(dovecot.append, user, poison)
        await asyncio.to_thread(dovecot.append, user, mail(message_id="<after@example.org>"))
        [after] = await _count_inbound(gw, 1, timeout_s=30)  # the next mail gets through
        assert after.external_id == "after@example.org"
        [item] = await gw.server.app[GATEWAY].store.quarantined()
    assert item.raw == poison
    assert "failed 3 times" in item.reason and "IsADirectoryError" in item.reason


async def test_permanent_smtp_rejection_fails_the_delivery_without_retry(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(tmp_path, dovecot, smtp_sink, user, acknowledge=False)
    smtp_sink.reject = (550, "5.1.1 no such user")
    async with started(config, bot_setup) as gw:
        await asyncio.to_thread(dovecot.append, user, mail(message_id="<p1@example.org>"))
        await _count_inbound(gw, 1)

        async def ticket_exists() -> bool:
            return bool((await gw.api("GET", "/tickets"))[1]["tickets"])

        await _until(ticket_exists)
        ticket = (await gw.api("GET", "/tickets"))[1]["tickets"][0]
        _status, body = await gw.api(
            "POST", f"/tickets/{ticket['id']}/replies", json={"text": "hi"}, headers={"Idempotency-Key": "r2"}
        )
        assert body["delivery"] == "failed"
        events = await gw.server.app[GATEWAY].store.events_after(0, limit=1000)
        assert [e.data["reason"] for e in events if e.type == "message.delivery_failed"] == ["recipient_refused"]


async def test_restart_between_store_and_checkpoint_stores_each_mail_once(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    # Our MX vouches for the customer, so their later mails may follow up into the ticket the first one opens.
    vouched = {"Authentication-Results": "mx.example.test; dmarc=pass header.from=example.org"}
    for i in range(3):
        await asyncio.to_thread(dovecot.append, user, mail(message_id=f"<k{i}@example.org>", headers=vouched))
    config = email_config(tmp_path, dovecot, smtp_sink, user, trusted_authserv_ids=["mx.example.test"])
    stuck = asyncio.Event()

    async def die_here(uid: int) -> None:
        if uid == 2:
            stuck.set()
            await asyncio.Event().wait()  # killed here: stored, but the checkpoint never moves past it

    async with started(config, bot_setup) as gw:
        connector_of(gw).before_checkpoint = die_here
        await asyncio.wait_for(stuck.wait(), 15)
        assert len(await _inbound(gw)) == 2
    async with started(config, bot_setup) as gw:
        messages = await _count_inbound(gw, 3)
        await asyncio.wait_for(connector_of(gw).synced.wait(), 10)
        assert sorted(m.external_id or "" for m in await _inbound(gw)) == [f"k{i}@example.org" for i in range(3)]
        assert len(messages) == 3
        # Three mails of one customer, none replying to another: the first opens a ticket, the others join it
        # as follow-ups; each mail is on it once.
        [ticket] = (await gw.api("GET", "/tickets"))[1]["tickets"]

        async def all_on_the_ticket() -> bool:
            _, full = await gw.api("GET", f"/tickets/{ticket['id']}")
            return sum(m["direction"] == "inbound" for m in full["messages"]) == 3

        await _until(all_on_the_ticket)


async def test_uidvalidity_reset_resyncs_without_duplicates(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    await asyncio.to_thread(dovecot.command, user, ("create", "Support"))
    for i in range(2):
        await asyncio.to_thread(dovecot.append, user, mail(message_id=f"<v{i}@example.org>"), "Support")
    config = email_config(tmp_path, dovecot, smtp_sink, user, imap={"folders": ["Support"]})
    async with started(config, bot_setup) as gw:
        await _count_inbound(gw, 2)
    before = await asyncio.to_thread(dovecot.uidvalidity, user, "Support")
    await asyncio.to_thread(dovecot.command, user, ("delete", "Support"), ("create", "Support"))
    for i in range(3):  # the same two mails come back under new UIDs, plus one new one
        await asyncio.to_thread(dovecot.append, user, mail(message_id=f"<v{i}@example.org>"), "Support")
    assert await asyncio.to_thread(dovecot.uidvalidity, user, "Support") != before
    async with started(config, bot_setup) as gw:
        messages = await _count_inbound(gw, 3)
        await asyncio.wait_for(connector_of(gw).synced.wait(), 10)
        assert sorted(m.external_id or "" for m in messages) == [f"v{i}@example.org" for i in range(3)]


async def test_disconnect_mid_fetch_reconnects_and_loses_nothing(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    for i in range(3):
        body = f"mail {i} " + "x" * 20_000
        await asyncio.to_thread(dovecot.append, user, mail(message_id=f"<d{i}@example.org>", body=body))
    cuts = {"left": 2}

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cut: bool) -> None:
        try:
            while data := await reader.read(4096):
                if cut and cuts["left"] > 0 and b"FETCH" in data:
                    cuts["left"] -= 1
                    writer.write(data[: len(data) // 2])  # half a literal, then the line goes dead
                    await writer.drain()
                    writer.transport.abort()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", dovecot.port)
        await asyncio.gather(pipe(client_r, server_w, False), pipe(server_r, client_w, True))

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    config = email_config(tmp_path, dovecot, smtp_sink, user, imap_port=port)
    try:
        async with started(config, bot_setup) as gw:
            messages = await _count_inbound(gw, 3, timeout_s=30)
            assert cuts["left"] == 0
            assert sorted(m.external_id or "" for m in messages) == [f"d{i}@example.org" for i in range(3)]
    finally:
        proxy.close()
        await proxy.wait_closed()


async def test_out_of_office_reply_gets_no_acknowledgement_and_no_ticket(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    ooo = mail(subject="Automatic reply: 订单", body="I am out of office.", headers={"Auto-Submitted": "auto-replied"})
    await asyncio.to_thread(dovecot.append, user, ooo)
    config = email_config(tmp_path, dovecot, smtp_sink, user)
    async with started(config, bot_setup) as gw:
        [message] = await _count_inbound(gw, 1)
        await asyncio.sleep(0.5)
        assert message.meta["auto"]["kind"] == "auto_reply"
        assert message.author is Author.CUSTOMER and message.channel is Channel.EMAIL
        assert (await gw.api("GET", "/tickets"))[1]["tickets"] == []
        assert smtp_sink.received == []


async def test_unparseable_mail_is_quarantined_and_the_mailbox_moves_on(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    await asyncio.to_thread(dovecot.append, user, b"Subject: no sender at all\r\n\r\nwho wrote this?\r\n")
    await asyncio.to_thread(dovecot.append, user, mail(message_id="<after@example.org>"))
    config = email_config(tmp_path, dovecot, smtp_sink, user)
    async with started(config, bot_setup) as gw:
        [message] = await _count_inbound(gw, 1)
        assert message.external_id == "after@example.org"
        [item] = await gw.server.app[GATEWAY].store.quarantined()
        assert item.inbox == "support" and item.reason.startswith("no sender address")
        assert b"who wrote this?" in item.raw


def _dsn(original_id: str, recipient: str) -> bytes:
    return (
        b"From: MAILER-DAEMON@mx.example.org\r\nTo: support@example.test\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx.example.org>\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="d"\r\n\r\n'
        b"--d\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        b"--d\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
        b"Final-Recipient: rfc822; " + recipient.encode() + b"\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
        b"--d\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: " + original_id.encode() + b"\r\n"
        b"--d--\r\n"
    )


async def test_bounce_joins_the_ticket_and_stops_further_mail_to_the_address(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(tmp_path, dovecot, smtp_sink, user, imap={"poll_interval_s": 600})
    async with started(config, bot_setup) as gw:
        await asyncio.to_thread(dovecot.append, user, mail(message_id="<b1@example.org>"))
        [ack] = await smtp_sink.wait_for(1)
        await asyncio.to_thread(dovecot.append, user, _dsn(ack["Message-ID"], "customer@example.org"))
        first, bounce = sorted(await _count_inbound(gw, 2), key=lambda m: m.created_at)
        assert bounce.ticket_id == first.ticket_id is not None
        assert bounce.meta["auto"]["kind"] == "bounce"
        assert bounce.meta["auto"]["recipients"][0]["hard"] is True
        store = gw.server.app[GATEWAY].store
        conversation = await store.get_conversation(first.conversation_id)
        assert conversation is not None
        contact = await store.get_contact(conversation.contact_id)
        assert contact is not None and "bounced:email:customer@example.org" in contact.flags
        _status, body = await gw.api(
            "POST", f"/tickets/{first.ticket_id}/replies", json={"text": "hi"}, headers={"Idempotency-Key": "b"}
        )
        assert body["delivery"] == "failed"
        assert len(smtp_sink.received) == 1  # nothing more went to the dead address


async def test_reply_to_a_resolved_ticket_reopens_it_when_configured(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup
) -> None:
    user = dovecot.user()
    config = email_config(
        tmp_path, dovecot, smtp_sink, user, resolved_reply="reopen", acknowledge=False, imap={"poll_interval_s": 600}
    )
    async with started(config, bot_setup) as gw:
        await asyncio.to_thread(dovecot.append, user, mail(message_id="<r1@example.org>"))
        [_first] = await _count_inbound(gw, 1)

        async def ticket_exists() -> bool:
            return bool((await gw.api("GET", "/tickets"))[1]["tickets"])

        await _until(ticket_exists)
        ticket = (await gw.api("GET", "/tickets"))[1]["tickets"][0]
        status, _ = await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved"})
        assert status == 200
        await asyncio.to_thread(
            dovecot.append, user, mail(message_id="<r2@example.org>", in_reply_to="<r1@example.org>")
        )
        await _count_inbound(gw, 2)
        status, tickets = await gw.api("GET", "/tickets")
        [only] = tickets["tickets"]
        assert only["id"] == ticket["id"] and only["status"] == "open"


async def test_the_mailbox_lease_is_short_renewed_on_a_heartbeat_and_a_lost_connection_is_noticed_at_once(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink, bot_setup: BotSetup, caplog: pytest.LogCaptureFixture
) -> None:
    """After a SIGKILL the mailbox stalled until the dead holder's lease ran out (180 s by default), and a
    Dovecot outage took 29-40 s to notice and was logged as "TimeoutError: ;"."""
    assert LEASE_TTL_S <= 15
    user = dovecot.user()
    proxy = TcpProxy("127.0.0.1", dovecot.port)
    await proxy.start()
    imap = {"poll_interval_s": 600, "idle_timeout_s": 600, "lease_ttl_s": 1.5}
    config = email_config(tmp_path, dovecot, smtp_sink, user, imap_port=proxy.port, imap=imap)
    try:
        async with started(config, bot_setup) as gw:
            connector = connector_of(gw)
            store = gw.server.app[GATEWAY].store
            await asyncio.wait_for(connector.synced.wait(), 10)
            await asyncio.sleep(4)  # idle for far longer than the lease lasts: the heartbeat keeps it
            assert not await store.lease("email:support:poll:INBOX", "another-instance", 10)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="connectors.email.connector"):
                proxy.cut()
                started_at = asyncio.get_running_loop().time()
                async with asyncio.timeout(5):
                    while not any("closed the connection" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                assert asyncio.get_running_loop().time() - started_at < 3
            assert not any(r.getMessage().endswith(": ; reconnecting") for r in caplog.records)
    finally:
        await proxy.close()
