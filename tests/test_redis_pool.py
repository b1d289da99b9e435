"""The Redis pool serves commands in the order they asked for a connection: redis-py's own let a newcomer take a
connection released for a waiter, so under load some commands waited out the timeout while later ones went
first (bench/redis_pool_fairness.py: 19-193 of 1,000 commands timed out at 200 tasks on 10 connections, 0 in
order)."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis
from redis.driver_info import DriverInfo

from core.store.redis.pool import FairConnectionPool
from tests.conftest import need
from tests.redis_util import REDIS_URL, redis_running

# Given, as the store gives it: otherwise redis-py reads its package metadata from disk for each new connection.
DRIVER = DriverInfo(name="redis-py", lib_version=redis.__version__)


async def _who_gets_it_first(pool: aioredis.BlockingConnectionPool) -> list[str]:
    """One connection, held; a waiter queues for it; the holder releases it and at once asks again."""
    order: list[str] = []
    held = await pool.get_connection()

    async def waiter() -> None:
        connection = await pool.get_connection()
        order.append("waiter")
        await pool.release(connection)

    queued = asyncio.create_task(waiter())
    await asyncio.sleep(0.05)  # the waiter is queued
    await pool.release(held)
    again = await pool.get_connection()
    order.append("newcomer")
    await pool.release(again)
    await queued
    await pool.disconnect()
    return order


async def test_a_waiter_gets_the_released_connection_before_a_newcomer() -> None:
    need(redis_running(), "Redis is not running on 127.0.0.1:6379")
    fair = FairConnectionPool.from_url(REDIS_URL, max_connections=1, timeout=2, driver_info=DRIVER)
    assert await _who_gets_it_first(fair) == ["waiter", "newcomer"]
    stock = aioredis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=1, timeout=2, driver_info=DRIVER)
    assert await _who_gets_it_first(stock) == ["newcomer", "waiter"]  # what the fair pool is for


async def test_a_turn_is_given_back_once_when_a_connection_cannot_be_made() -> None:
    """redis-py releases a connection it failed to connect itself; the turn must come back once, not twice."""
    url = "redis://127.0.0.1:9/0"  # discard: nothing listens
    pool = FairConnectionPool.from_url(url, max_connections=2, timeout=1, socket_connect_timeout=1, driver_info=DRIVER)
    for _ in range(3):
        try:
            await pool.get_connection()
        except (aioredis.ConnectionError, OSError):
            pass
        else:
            raise AssertionError("port 9 accepted a Redis connection")
    assert pool._turns._value == 2
    await pool.disconnect()
