"""A bounded Redis connection pool that hands connections out in the order they were asked for."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError


class FairConnectionPool(aioredis.BlockingConnectionPool):
    """redis-py's BlockingConnectionPool is not first come, first served: a connection released for a waiter can
    be taken by a command that just arrived, and the waiter, woken to find none, queues again at the back. Under
    load some commands wait out the pool's timeout while later ones are served. A FIFO semaphore in front of it
    (asyncio's is fair) hands out turns in arrival order; the pool's own wait then never blocks for long."""

    def __init__(self, max_connections: int = 50, timeout: float | None = 20, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, timeout=timeout, **kwargs)
        self._turns = asyncio.Semaphore(max_connections)
        # Connections handed out with a turn: redis-py releases a connection it failed to set up itself (through
        # ``release``), and that one's turn is given back here, once, not there too.
        self._holding: set[AbstractConnection] = set()

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        try:
            async with asyncio.timeout(self.timeout):
                await self._turns.acquire()
        except TimeoutError as exc:
            raise RedisConnectionError("No connection available.") from exc
        try:
            connection: AbstractConnection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except BaseException:
            self._turns.release()
            raise
        self._holding.add(connection)
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        try:
            await super().release(connection)
        finally:
            if connection in self._holding:
                self._holding.discard(connection)
                self._turns.release()
