"""How fairly a bounded Redis pool hands out connections when more commands want one than it holds.

Run on demand (never in CI):

    .venv/bin/python bench/redis_pool_fairness.py [--tasks 400] [--commands 5] [--pool 10] [--wait-s 1.0]
        [--work-ms 0.3] [--runs 3] [--redis-url redis://127.0.0.1:6379/11]

``--tasks`` coroutines each run ``--commands`` PINGs one after another on one client whose pool holds ``--pool``
connections and lets a command wait ``--wait-s`` for one; ``--work-ms`` of CPU between commands stands for the
rest of a message's handling (the loop is busy, as the web chat server's is under load). Per run and pool
(redis-py's ``BlockingConnectionPool``, ``stock``, and ``core.store.redis.pool.FairConnectionPool``, ``fair``,
alternating) it prints one JSON line: commands that timed out waiting for a connection, and p50/p99/max of a
command's time (mostly its wait for a connection).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from core.store.redis.pool import FairConnectionPool


async def _run(kind: str, args: argparse.Namespace) -> dict[str, object]:
    pool_class = FairConnectionPool if kind == "fair" else aioredis.BlockingConnectionPool
    pool = pool_class.from_url(args.redis_url, max_connections=args.pool, timeout=args.wait_s)
    client = aioredis.Redis(connection_pool=pool)
    await client.ping()
    times: list[float] = []
    timeouts = 0

    async def one() -> None:
        nonlocal timeouts
        for _ in range(args.commands):
            started = time.perf_counter()
            try:
                await client.ping()
            except RedisConnectionError:
                timeouts += 1
            times.append((time.perf_counter() - started) * 1000)
            spin_until = time.perf_counter() + args.work_ms / 1000
            while time.perf_counter() < spin_until:
                pass
            await asyncio.sleep(0)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(args.tasks)))
    elapsed = time.perf_counter() - started
    await client.aclose(close_connection_pool=True)
    times.sort()
    return {
        "pool": kind,
        "commands": len(times),
        "timeouts": timeouts,
        "seconds": round(elapsed, 2),
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[int(len(times) * 0.99)], 2),
        "max_ms": round(times[-1], 2),
    }


async def main(args: argparse.Namespace) -> None:
    for _ in range(args.runs):
        for kind in ("stock", "fair"):
            print(json.dumps(await _run(kind, args)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--commands", type=int, default=5)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--wait-s", type=float, default=1.0)
    parser.add_argument("--work-ms", type=float, default=0.3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    asyncio.run(main(parser.parse_args()))
