"""Random ids for records and requests."""

from __future__ import annotations

import os
import time


def random_hex() -> str:
    """128 random bits as 32 hex digits: what ``uuid.uuid4().hex`` gave (less its fixed version bits), at a quarter
    of its cost. A push makes three (its request id, its message and the reply), so it showed in the profile."""
    return os.urandom(16).hex()


def ordered_hex() -> str:
    """32 hex digits like ``random_hex``, the first 13 the microseconds since 1970 and the other 19 random (76
    bits): for message ids, and on SQLite for contacts and conversations too (a new sender's first message was
    ~20% dearer with random ones in a store of 20,000 contacts). Ids made in a row sort together, so the unique
    indexes of messages, and of events keyed on them (``message.created:<id>``), take a batch's new entries on
    the same few pages at their right end, where random ids each dirtied a page of their own (each a 4 KiB write
    to SQLite's WAL, and again at the checkpoint)."""
    return f"{time.time_ns() // 1000 & _THIRTEEN_DIGITS:013x}{os.urandom(10).hex()[:19]}"


_THIRTEEN_DIGITS = 16**13 - 1  # microseconds until 2112; then it wraps rather than make a longer id
