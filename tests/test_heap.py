"""Heap settling: what is alive is frozen out of full collections, and a reloaded FAQ index joins it."""

from __future__ import annotations

import asyncio
import gc
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.live import LiveIndex
from core import heap

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def unfrozen() -> Iterator[None]:
    assert gc.get_freeze_count() == 0
    try:
        yield
    finally:
        gc.unfreeze()


def _collected(obj: object) -> bool:
    """Whether full collections still walk the object (frozen ones are not in any generation)."""
    return any(o is obj for o in gc.get_objects())


def test_resettle_leaves_a_process_that_never_settled_alone(unfrozen: None) -> None:
    heap.resettle()
    assert gc.get_freeze_count() == 0


async def test_a_reloaded_index_is_frozen_once_the_process_has_settled(unfrozen: None, tmp_path: Path) -> None:
    kb = tmp_path / "faq.yaml"
    await asyncio.to_thread(shutil.copy, ROOT / "kb" / "faq.yaml", kb)
    index = await asyncio.to_thread(LiveIndex.load, kb)
    first = index.current
    assert _collected(first)
    heap.settle()
    assert not _collected(first)
    await index.reload()
    assert index.current is not first
    assert not _collected(index.current)
    assert index.search("怎么开发票")
