"""Ticket tags in subjects carry a short HMAC: ``[HL-000001-7f3a9c]``, so a tag cannot be made up from a number."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

SIGNATURE_HEX = 6  # 24 bits: short in a subject, and a guess costs the attacker a mail per try
TAG = re.compile(r"\[(HL-\d{6,})(?:-([0-9a-fA-F]{4,16}))?\]")


@dataclass(frozen=True, slots=True, kw_only=True)
class SubjectTag:
    number: str
    signed: bool  # True only when the signature checks out; an old or made-up tag is a hint, no more


def signature(number: str, secret: bytes) -> str:
    return hmac.new(secret, f"ticket-tag:{number}".encode(), hashlib.sha256).hexdigest()[:SIGNATURE_HEX]


def signed_tag(number: str, secret: bytes) -> str:
    return f"[{number}-{signature(number, secret)}]"


def subject_tags(subject: str, secret: bytes) -> tuple[SubjectTag, ...]:
    """Every ticket tag in a subject, each saying whether its signature is ours (compared in constant time)."""
    return tuple(
        SubjectTag(
            number=number,
            signed=bool(sig) and hmac.compare_digest(sig.lower(), signature(number, secret)),
        )
        for number, sig in TAG.findall(subject)
    )
