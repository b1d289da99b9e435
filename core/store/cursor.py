"""Page cursors: opaque to clients, a few integers (time, sequence) to the backends that issue them."""

from __future__ import annotations

import base64


def encode_cursor(*parts: int) -> str:
    return base64.urlsafe_b64encode(".".join(map(str, parts)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> tuple[int, ...]:
    """ValueError for anything this server did not issue (a client's typo is a 400, not a 500)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        parts = tuple(int(p) for p in raw.split("."))
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this server issued") from None
    if len(parts) != arity:
        raise ValueError("cursor is not one this server issued")
    return parts
