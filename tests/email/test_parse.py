"""MIME parsing: charsets (gb2312 as GB18030, big5 as HKSCS, undeclared), RFC 2047/2231, HTML, parts."""

from __future__ import annotations

import base64

import pytest

from connectors.email.auto import AutoKind
from connectors.email.parse import MAX_HEADER_CHARS, MAX_SUBJECT_CHARS, MAX_TEXT_CHARS, MailParseError, parse_mail
from connectors.email.threading import base_subject


def _raw(headers: str, body: bytes) -> bytes:
    return headers.replace("\n", "\r\n").encode("ascii") + b"\r\n\r\n" + body


def test_gb2312_label_decodes_gbk_characters_as_gb18030() -> None:
    subject = "=?gb2312?B?" + base64.b64encode("朱镕基喆".encode("gbk")).decode() + "?="
    raw = _raw(
        f"From: a@example.org\nSubject: {subject}\nContent-Type: text/plain; charset=gb2312",
        "你好，朱镕基".encode("gbk"),
    )
    mail = parse_mail(raw)
    assert mail.subject == "朱镕基喆"
    assert mail.text == "你好，朱镕基"


def test_big5_label_decodes_hkscs_characters() -> None:
    raw = _raw("From: a@example.org\nContent-Type: text/plain; charset=big5", "我哋嘅啲".encode("big5hkscs"))
    assert parse_mail(raw).text == "我哋嘅啲"


def test_undeclared_charset_is_detected() -> None:
    body = "您好，我的订单一直没有发货，请帮我查询一下物流信息，谢谢。".encode("gb18030")
    raw = _raw("From: a@example.org\nSubject: x", body)
    assert parse_mail(raw).text == body.decode("gb18030")


def test_rfc2231_filename_and_rfc2047_sender_name() -> None:
    raw = (
        b"From: =?utf-8?B?" + base64.b64encode("王小明".encode()) + b"?= <wang@example.org>\r\n"
        b"Subject: =?utf-8?Q?=E6=8A=A5=E4=BB=B7?=\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''%E6%8A%A5%E4%BB%B7%E5%8D%95.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"%PDF-1.4 fake") + b"\r\n--b--\r\n"
    )
    mail = parse_mail(raw)
    assert (mail.sender.name, mail.sender.email) == ("王小明", "wang@example.org")
    assert mail.subject == "报价"
    [part] = mail.attachments
    assert (part.filename, part.content_type, part.data) == ("报价单.pdf", "application/pdf", b"%PDF-1.4 fake")


def test_html_is_sanitised_and_gives_the_text_when_there_is_no_plain_part() -> None:
    html = b'<p>Hello <b>there</b></p><script>alert(1)</script><img src="cid:logo@x" onerror="x()">'
    raw = _raw("From: a@example.org\nContent-Type: text/html; charset=utf-8", html)
    mail = parse_mail(raw)
    assert mail.html is not None
    assert "script" not in mail.html and "onerror" not in mail.html
    assert 'src="cid:logo@x"' in mail.html
    assert mail.text == "Hello there"


def test_inline_cid_image_is_kept_as_an_inline_part() -> None:
    raw = (
        b"From: a@example.org\r\nContent-Type: multipart/related; boundary=r\r\n\r\n"
        b"--r\r\nContent-Type: text/html\r\n\r\n<img src=cid:img1@x>hi\r\n"
        b"--r\r\nContent-Type: image/png\r\nContent-ID: <img1@x>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(b"\x89PNG....")
        + b"\r\n--r--\r\n"
    )
    [part] = parse_mail(raw).attachments
    assert part.content_id == "img1@x"
    assert part.inline
    assert part.filename == "image.png"


def test_a_mail_without_any_sender_cannot_be_parsed() -> None:
    with pytest.raises(MailParseError):
        parse_mail(b"Subject: hi\r\n\r\nbody")
    with pytest.raises(MailParseError):
        parse_mail(b"")


def test_missing_message_id_dedupes_by_a_hash_of_the_raw_mail() -> None:
    raw = _raw("From: a@example.org\nSubject: x", b"body")
    a, b = parse_mail(raw), parse_mail(raw.replace(b"\r\n", b"\n"))
    assert a.message_id is None
    assert a.dedupe_key == b.dedupe_key
    assert a.dedupe_key.startswith("sha256:")


def test_reply_chain_is_nearest_first() -> None:
    raw = _raw("From: a@example.org\nIn-Reply-To: <c@x>\nReferences: <a@x> <b@x>\n <c@x>", b"hi")
    assert parse_mail(raw).chain == ("c@x", "b@x", "a@x")


def test_broken_header_fold_does_not_lose_the_headers_below_it() -> None:
    raw = _raw("X-Spam: yes\nscore=1.0 tests=A\nFrom: a@example.org\nSubject: kept", b"body")
    mail = parse_mail(raw)
    assert (mail.sender.email, mail.subject) == ("a@example.org", "kept")


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ({"Auto-Submitted": "auto-replied"}, AutoKind.AUTO_REPLY),
        ({"Auto-Submitted": "no"}, AutoKind.NONE),
        ({"X-Autoreply": "yes"}, AutoKind.AUTO_REPLY),
        ({"X-Autorespond": "yes"}, AutoKind.AUTO_REPLY),
        ({"X-Auto-Response-Suppress": "All"}, AutoKind.AUTO_REPLY),
        ({"Subject": "自动回复：我正在休假"}, AutoKind.AUTO_REPLY),
        ({"Subject": "Out of Office: back Monday"}, AutoKind.AUTO_REPLY),
        ({"Precedence": "bulk"}, AutoKind.BULK),
        ({"List-Id": "<news.example.org>"}, AutoKind.BULK),
        ({}, AutoKind.NONE),
    ],
)
def test_auto_reply_and_bulk_headers(headers: dict[str, str], kind: AutoKind) -> None:
    lines = "\n".join(f"{k}: {v}" for k, v in {"Subject": "hello", **headers}.items())
    # The Chinese subject goes as raw UTF-8 (RFC 6532).
    raw = (f"From: a@example.org\r\n{lines.replace(chr(10), chr(13) + chr(10))}\r\n\r\nbody").encode()
    assert parse_mail(raw).auto.kind is kind


def test_dsn_bounce_names_the_failed_recipient_and_our_original_message() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="d"\r\n\r\n'
        b"--d\r\nContent-Type: text/plain\r\n\r\n"
        b"I'm sorry to have to inform you that your message could not be delivered.\r\n"
        b"--d\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
        b"Final-Recipient: rfc822; gone@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown\r\n"
        b"--d\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"Message-ID: <msg_abc@example.test>\r\nTo: gone@example.com\r\n"
        b"--d--\r\n"
    )
    report = parse_mail(raw).auto
    assert report.kind is AutoKind.BOUNCE
    [rcpt] = report.recipients
    assert (rcpt.recipient, rcpt.status, rcpt.hard) == ("gone@example.com", "5.1.1", True)
    assert report.original_message_id == "msg_abc@example.test"


def test_full_mailbox_is_a_soft_bounce() -> None:
    raw = (
        b"From: postmaster@example.com\r\nSubject: Delivery Status Notification (Failure)\r\n\r\n"
        b"Delivery to the following recipient failed: full@example.com\r\n"
        b"552 5.2.2 The email account that you tried to reach is over quota (mailbox full)\r\n"
    )
    report = parse_mail(raw).auto
    assert report.kind is AutoKind.BOUNCE
    assert [r.hard for r in report.recipients] == [False]


def test_base_subject_drops_reply_prefixes_and_ticket_tags() -> None:
    assert base_subject("Re: 回复：RE: [HL-000123] 订单退款") == "订单退款"
    assert base_subject("AW: Fwd: question") == "question"


def test_a_charset_label_with_a_nul_byte_falls_back_to_detection() -> None:
    raw = b'From: a@example.org\nSubject: x\nContent-Type: text/plain; charset="utf\x00-8"\n\n' + "你好\n".encode()
    assert parse_mail(raw).text.strip() == "你好"


def test_a_broken_base64_encoded_word_is_kept_as_written() -> None:
    raw = b"From: a@example.org\nSubject: =?utf-8?b?5L2g5?= ok\nMessage-ID: <b64@example.org>\n\nhello\n"
    mail = parse_mail(raw)
    assert mail.subject == "=?utf-8?b?5L2g5?= ok" and mail.text.strip() == "hello"


def test_binary_sent_as_text_is_kept_as_an_attachment_not_as_replacement_characters() -> None:
    """An Outlook .msg mailed as text/plain decoded to 122,000 U+FFFD: its bytes are kept as they came."""
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(range(256)) * 40
    headers = "From: a@example.org\nSubject: report\nContent-Type: text/plain; charset=utf-8"
    raw = _raw(headers + "\nContent-Transfer-Encoding: base64", base64.encodebytes(ole))
    mail = parse_mail(raw)
    assert "\ufffd" not in mail.text and mail.text == ""
    (part,) = mail.attachments
    assert part.filename == "body.bin" and part.data == ole
    assert "UndecodableTextPart" in mail.defects


def test_a_huge_subject_and_body_are_capped_and_the_whole_body_is_kept() -> None:
    body = ("退款" * 150_000).encode()
    raw = _raw(f"From: a@example.org\nSubject: {'x' * 130_000}\nContent-Type: text/plain; charset=utf-8", body)
    mail = parse_mail(raw)
    assert len(mail.subject) == MAX_SUBJECT_CHARS and mail.subject.endswith("…")
    assert len(mail.text) == MAX_TEXT_CHARS and mail.text.startswith("退款退款")
    (full,) = mail.attachments
    assert full.filename == "body.txt" and full.data == body
    assert all(len(v) <= MAX_HEADER_CHARS for v in mail.headers.values())


def test_iso_2022_jp_with_microsoft_extensions_decodes() -> None:
    """CP50221 (what Outlook sends as ISO-2022-JP) holds NEC characters such as ①, which Python's codecs refuse."""
    raw = _raw(
        "From: a@example.jp\nSubject: x\nContent-Type: text/plain; charset=ISO-2022-JP",
        b'\x1b$B!!-!#1ET#38)$N03$H!"\x1b(B',
    )
    assert parse_mail(raw).text == "\u3000①１都３県の鯵と、"


def test_a_mail_without_a_usable_message_id_is_keyed_on_its_content_not_its_trace_headers() -> None:
    """Redelivered after the mailbox was recreated, the same mail came with new Received headers and was
    stored twice: the key was a hash of the raw mail."""
    author = "From: a@example.org\nTo: help@example.com\nSubject: invoice\nMessage-ID: not-an-addr-spec\n"
    body = "请帮我开发票".encode()
    first = _raw("Received: from mx1 by mbox1; Mon, 1 Dec 2026 10:00:00 +0800\nDelivered-To: help@example.com\n"
                 + author, body)  # fmt: skip
    again = _raw("Received: from mx2 by mbox2; Tue, 2 Dec 2026 11:00:00 +0800\nX-Original-To: x@example.com\n"
                 "Authentication-Results: mx2; dkim=pass\n" + author, body)  # fmt: skip
    assert parse_mail(first).message_id is None
    assert parse_mail(first).dedupe_key == parse_mail(again).dedupe_key
    assert parse_mail(first).raw_sha256 != parse_mail(again).raw_sha256  # the stored raw mail is each copy's own
    other = _raw(author, "请帮我改地址".encode())
    assert parse_mail(other).dedupe_key != parse_mail(first).dedupe_key


@pytest.mark.parametrize(
    ("notification", "kind"),
    [("Bounce", AutoKind.BOUNCE), ("Complaint", AutoKind.COMPLAINT), ("Delivery", AutoKind.AUTO_REPLY)],
)
def test_amazon_ses_notifications_mailed_through_sns_are_machine_mail(notification: str, kind: AutoKind) -> None:
    """Four SES notifications opened tickets (and got acknowledgements): they are JSON from a machine."""
    body = (
        '{"Type":"Notification","Message":"{\\"notificationType\\":\\"' + notification + '\\",'
        '\\"bounce\\":{\\"bouncedRecipients\\":[{\\"emailAddress\\":\\"gone@example.org\\"}]},'
        '\\"mail\\":{\\"source\\":\\"support@example.com\\",\\"sourceArn\\":\\"arn:aws:ses:us-east-1:1:identity/'
        'amazonses.com\\"}}"}'
    ).replace('\\"', '"')
    raw = _raw(
        "From: AWS Notifications <no-reply@sns.amazonaws.com>\nTo: support@example.com\n"
        "Subject: AWS Notification Message\nContent-Type: text/plain; charset=UTF-8",
        body.encode(),
    )
    report = parse_mail(raw).auto
    assert report.kind is kind and report.reason.startswith("amazon-ses")
    if kind is AutoKind.BOUNCE:
        assert [r.recipient for r in report.recipients] == ["gone@example.org"]


def test_an_attached_mail_keeps_the_bytes_the_smtp_policy_writes() -> None:
    """The attached mail is written with our memo policy: the same bytes as policy.SMTP with "\\n" line ends,
    long headers refolded (an encoded-word Subject) included."""
    from email import policy
    from email.parser import BytesParser

    long_subject = "=?utf-8?B?" + base64.b64encode(("退信通知 " * 20).encode()).decode() + "?="
    inner = (
        f"From: b@example.com\nSubject: {long_subject}\nContent-Type: multipart/alternative; boundary=i\n\n"
        "--i\nContent-Type: text/plain\n\nhello\n--i\nContent-Type: text/html\n\n<p>hello</p>\n--i--\n"
    )
    raw = (
        "From: a@example.org\nContent-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: text/plain\n\nsee\n"
        f"--o\nContent-Type: message/rfc822\nContent-Disposition: attachment\n\n{inner}--o--\n"
    ).encode()
    mail = parse_mail(raw)
    attached = BytesParser(policy=policy.default).parsebytes(raw).get_payload()[1].get_payload()[0]
    assert [a.data for a in mail.attachments] == [attached.as_bytes(policy=policy.SMTP.clone(linesep="\n"))]


@pytest.mark.parametrize(
    "value",
    ["smtp; 550 5.1.1 <gone@example.com>: Recipient address rejected", "smtp; 550\n  user unknown",
     "smtp; =?utf-8?q?Postfach_unbekannt_=C3=BC?=", "x-unix; caf\udcc3\udca9 failed"],
)  # fmt: skip
def test_a_dsn_field_reads_as_the_header_parser_gives_it(value: str) -> None:
    from email import policy
    from email.message import EmailMessage

    from connectors.email.auto import _field_text

    block = EmailMessage(policy=policy.default)
    block.set_raw("Diagnostic-Code", value)
    assert _field_text(block, "Diagnostic-Code", value) == str(block["diagnostic-code"])
