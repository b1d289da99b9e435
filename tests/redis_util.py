"""Redis for tests: the real server on 127.0.0.1:6379, a fresh key prefix per test, its keys removed after."""

from __future__ import annotations

import os
import socket
import uuid
from functools import cache
from pathlib import Path

from core.store.redis import RedisStore
from tests.conftest import need

REDIS_URL = os.environ.get("HUILIU_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@cache
def redis_running() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def fresh_prefix() -> str:
    return f"hltest-{uuid.uuid4().hex[:12]}:"


async def drop_prefix(store: RedisStore) -> None:
    """Delete every key of this store's prefix (tests share one Redis)."""
    client = store.client
    batch: list[str] = []
    async for key in client.scan_iter(match=store.tag.replace("[", "\\[") + "*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            await client.unlink(*batch)
            batch.clear()
    if batch:
        await client.unlink(*batch)


class DisposableRedisStore(RedisStore):
    """A RedisStore on its own prefix that removes its keys when closed."""

    async def close(self) -> None:
        if self._client is not None:
            await drop_prefix(self)
        await super().close()


def redis_store(tmp_path: Path | None = None) -> RedisStore:
    need(redis_running(), "Redis is not running on 127.0.0.1:6379")
    return DisposableRedisStore(REDIS_URL, prefix=fresh_prefix(), stream_maxlen=100_000)
