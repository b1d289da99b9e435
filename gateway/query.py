"""Query-string values the list endpoints share: a bounded page size and a cursor checked before any store read."""

from __future__ import annotations

from core.store.cursor import decode_cursor


def int_param(value: str | None, *, default: int, low: int, high: int) -> int | None:
    """``value`` as an integer in [low, high], ``default`` when absent, None when it is anything else."""
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()):
        return None  # int() would also take "1_0", " 5" and full-width digits
    number = int(value)
    return number if low <= number <= high else None


def cursor_problem(cursor: str | None, version: int) -> str | None:
    """Why ``cursor`` cannot be used (a 400's message), or None when it is absent or well formed."""
    if cursor is None:
        return None
    try:
        decode_cursor(cursor, version)
    except ValueError as exc:
        return str(exc)
    return None
