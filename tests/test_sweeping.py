"""The gateway's sweeper: expired claims leave the store while it runs, live ones stay."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from core.store.sqlite import SqliteStore
from gateway.app import sweeping


def _claims(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [key for (key,) in db.execute("SELECT key FROM claims ORDER BY key")]


async def test_the_sweeper_removes_expired_nonces_and_keeps_live_ones(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = SqliteStore(path)
    await store.open()
    try:
        for n in range(30):
            assert await store.claim(f"wechat:nonce:{n}", 0.01)
        assert await store.claim("wechat:nonce:live", 600)
        async with sweeping(store, interval_s=0.05, batch=7):
            for _ in range(100):
                await asyncio.sleep(0.05)
                if len(await asyncio.to_thread(_claims, path)) == 1:
                    break
        assert await asyncio.to_thread(_claims, path) == ["wechat:nonce:live"]
    finally:
        await store.close()
