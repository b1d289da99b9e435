"""Opaque page cursors: a few integers, base64url-encoded, checked on the way back in."""

from __future__ import annotations

import base64


def encode_cursor(*parts: int) -> str:
    return base64.urlsafe_b64encode(".".join(map(str, parts)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> tuple[int, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        parts = tuple(int(p) for p in raw.split("."))
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this server issued") from None
    if len(parts) != arity:
        raise ValueError("cursor is not one this server issued")
    return parts
