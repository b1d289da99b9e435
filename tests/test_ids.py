"""Record ids: message ids keep the shape of every other id and sort by when they were made."""

from __future__ import annotations

import re
import time

from core.ids import ordered_hex, random_hex


def test_message_ids_have_the_shape_of_random_ids() -> None:
    for made in (ordered_hex(), random_hex()):
        assert re.fullmatch(r"[0-9a-f]{32}", made)


def test_message_ids_made_later_sort_later() -> None:
    """What keeps a batch's new index entries together on SQLite's pages (see ``ordered_hex``)."""
    made = []
    for _ in range(50):
        made.append(ordered_hex())
        time.sleep(0.000_01)
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_ids_made_in_the_same_microsecond_differ() -> None:
    assert len({ordered_hex() for _ in range(10_000)}) == 10_000
