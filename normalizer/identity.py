"""Canonical identities: one spelling per address, so the same person always finds the same contact."""

from __future__ import annotations

import re

from core.model import Identity, IdentityKind
from normalizer.phone import to_e164

_E164 = re.compile(r"\+\d{3,17}")


def canonical_email(address: str) -> str:
    """``A@Example.COM`` -> ``a@example.com``.

    Lowercase rather than casefold: every stored email identity was written lowercased, and casefold would
    give "ß" another spelling ("ss") and split such a contact in two.
    """
    return address.strip().lower()


def canonical_phone(value: str) -> str:
    """E.164 stays as it is; a number written otherwise becomes E.164 when it reads as one.

    Phone connectors already give E.164, or a per-call (``unknown:…``) or uncertain (``raw:…``) identity that
    must never be merged with a real number: those are left alone.
    """
    if value.startswith(("raw:", "unknown:")) or _E164.fullmatch(value):
        return value
    return to_e164(value) or value


def canonical_identity(identity: Identity) -> Identity:
    """The one spelling of ``identity``; the same object when it already is canonical."""
    match identity.kind:
        case IdentityKind.EMAIL:
            value = canonical_email(identity.value)
        case IdentityKind.PHONE:
            value = canonical_phone(identity.value)
        case _:  # WeChat openid/unionid, web chat visitor ids: opaque and case-sensitive
            value = identity.value.strip()
    return identity if value == identity.value else Identity(identity.kind, value)
