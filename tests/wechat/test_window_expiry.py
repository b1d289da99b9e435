"""Reply-window openings expire from the store a margin after the window itself closes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from connectors.wechat.parse import Opens
from connectors.wechat.window import ReplyWindow, Verdict
from core.store.sqlite import SqliteStore


def _expiry(path: Path, key: str) -> float:
    db = sqlite3.connect(path)
    try:
        (expires_at,) = db.execute("SELECT expires_at FROM checkpoints WHERE key = ?", (key,)).fetchone()
        return float(expires_at)
    finally:
        db.close()


async def test_window_opening_is_kept_for_its_span_plus_an_hour_not_for_ever(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = SqliteStore(path)
    await store.open()
    try:
        window = ReplyWindow(store, "oa")
        now = datetime.now(UTC)
        await window.opened("oUser", Opens.MESSAGE, now)
        await window.opened("oUser", Opens.EVENT, now)
        assert await window.take("oUser", now) is Verdict.OPEN
    finally:
        await store.close()
    start = time.time()
    message = await asyncio.to_thread(_expiry, path, "wechat:window:oa:oUser:message")
    event = await asyncio.to_thread(_expiry, path, "wechat:window:oa:oUser:event")
    assert abs(message - start - 49 * 3600) < 60  # the 48 h window plus an hour
    assert abs(event - start - 61 * 60) < 60  # the 1 min window plus an hour
