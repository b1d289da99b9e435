"""Outgoing mail: our Message-ID, the threading headers and the ticket tag, as a stdlib EmailMessage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from connectors.email.auto import AUTO_SUBMITTED
from connectors.email.threading import base_subject, outgoing_message_id

MAX_REFERENCES = 20  # keep the header bounded on long threads: the root and the latest ones matter


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    message_id: str  # our stored message's id
    domain: str
    from_address: str
    from_name: str
    to: str
    cc: Sequence[str] = ()  # everyone else on the mail an agent answers (reply all)
    subject: str  # the thread's subject, as the customer wrote it
    text: str
    sent_at: datetime
    ticket_tag: str | None = None  # the signed tag, e.g. [HL-000001-7f3a9c]
    in_reply_to: str | None = None  # the customer's Message-ID we answer
    references: Sequence[str] = ()  # that mail's References
    automatic: bool = False  # acknowledgements and bot answers (RFC 3834)


def reply_subject(subject: str, tag: str | None) -> str:
    base = base_subject(subject) or "(no subject)"
    return f"Re: {base} {tag}" if tag else f"Re: {base}"


def compose(out: Outgoing) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = formataddr((out.from_name, out.from_address)) if out.from_name else out.from_address
    msg["To"] = out.to
    if out.cc:
        msg["Cc"] = ", ".join(out.cc)
    msg["Subject"] = reply_subject(out.subject, out.ticket_tag)
    msg["Date"] = format_datetime(out.sent_at)
    msg["Message-ID"] = f"<{outgoing_message_id(out.message_id, out.domain)}>"
    if out.in_reply_to:
        chain = [r for r in out.references if r != out.in_reply_to]
        chain = [*chain[:1], *chain[1:][-(MAX_REFERENCES - 2) :]] if len(chain) > MAX_REFERENCES - 1 else chain
        msg["In-Reply-To"] = f"<{out.in_reply_to}>"
        msg["References"] = " ".join(f"<{r}>" for r in [*chain, out.in_reply_to])
    if out.automatic:
        msg["Auto-Submitted"] = AUTO_SUBMITTED
        msg["X-Auto-Response-Suppress"] = "All"  # ask Exchange & co. not to answer our automatic mail
    msg.set_content(out.text, charset="utf-8")
    return msg
