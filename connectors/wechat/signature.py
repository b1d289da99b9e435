"""WeChat's SHA-1 signatures over sorted parts, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac


def sign(*parts: str) -> str:
    """sha1 of the parts sorted and joined: the URL ``signature`` (token, timestamp, nonce) and, with the
    ``Encrypt`` text as a fourth part, the ``msg_signature`` of an encrypted push."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def verify(given: str, *parts: str) -> bool:
    """True when ``given`` is the signature of ``parts``; compared in constant time so it cannot be guessed
    byte by byte."""
    return hmac.compare_digest(sign(*parts).encode(), given.strip().lower().encode())
