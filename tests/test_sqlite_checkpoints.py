"""SQLite's WAL is checkpointed off the store's thread (``core.store.sqlite.checkpoints``): the writer's own
automatic checkpoint is only a backstop, and what is committed reaches the database file within a moment."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from core import events
from core.model import Channel
from core.store.sqlite import SqliteStore
from core.store.sqlite.checkpoints import BACKSTOP_PAGES, EVERY_S
from tests.contract.test_store_contract import inbound, visitor


def _wal_frames_left(path: Path) -> tuple[int, int]:
    """(frames in the WAL, frames of it copied back), as a third connection sees them (a no-op checkpoint)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        _, log, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(log), int(copied)
    finally:
        db.close()


async def test_the_wal_is_copied_back_by_the_checkpoint_thread_not_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store._run(lambda db: db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == BACKSTOP_PAGES
        now = datetime.now(UTC)
        conversation = await store.conversation_for(
            visitor(1), channel=Channel.WEBCHAT, inbox="web", name=None, now=now
        )
        for n in range(200):
            message = inbound(conversation, f"m{n}")
            await store.add_message(message, [events.message_created(message)])
        checkpointer = store._checkpointer
        assert checkpointer is not None
        passes = checkpointer.passes
        deadline = time.monotonic() + 20 * EVERY_S
        while checkpointer.passes < passes + 2:  # two passes after the last commit: the WAL is copied back
            assert time.monotonic() < deadline, "no checkpoint ran"
            await asyncio.sleep(EVERY_S / 4)
        log, copied = _wal_frames_left(path)
        assert log == copied  # every committed frame is in the database file
    finally:
        await store.close()
    assert not checkpointer.alive  # the thread stops with the store


async def test_a_store_reopened_reads_what_it_wrote(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = SqliteStore(path)
    await store.open()
    now = datetime.now(UTC)
    conversation = await store.conversation_for(visitor(2), channel=Channel.WEBCHAT, inbox="web", name=None, now=now)
    message = inbound(conversation, "kept")
    await store.add_message(message, [events.message_created(message)])
    await store.close()
    again = SqliteStore(path)
    await again.open()
    try:
        assert await again.get_message(message.id) == message
    finally:
        await again.close()
