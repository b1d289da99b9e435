"""Facts a mail reports beyond its text: the addresses a hard bounce says to stop mailing."""

from __future__ import annotations

from connectors.email.parse import ParsedMail
from core.model import ContactFlag, Identity, IdentityKind


def bounced_flags(mail: ParsedMail) -> tuple[ContactFlag, ...]:
    """After a permanent failure we stop mailing the address: its contact gets ``bounced:email:<addr>``."""
    return tuple(
        ContactFlag(identity=Identity(IdentityKind.EMAIL, rcpt.recipient.lower()), flag=bounced_flag(rcpt.recipient))
        for rcpt in mail.auto.recipients
        if rcpt.hard and rcpt.recipient and "@" in rcpt.recipient
    )


def bounced_flag(address: str) -> str:
    return f"bounced:email:{address.lower()}"
