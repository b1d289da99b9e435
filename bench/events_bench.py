"""Event publication throughput: into the outbox (Redis Stream vs SQLite) and out through webhooks.

Run on demand (never in CI):  .venv/bin/python bench/events_bench.py [--events 20000] [--concurrency 32]

1. publish: ``append_events`` of one event per call (each is one Lua script on Redis, one transaction on
   SQLite), from ``--concurrency`` tasks at once, the way many conversations produce them.
2. webhooks: a dispatcher delivers ``--webhook-events`` events (spread over 200 conversations) to a local
   aiohttp receiver that answers 204; measured from start to the last acceptance. The receiver verifies
   nothing, so this is the sender's cost (signing, HTTP, cursor writes).
Prints one JSON line per measurement with events per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import WebhookConfig
from core.model import DownstreamEvent, EventType
from core.store.base import Store
from core.store.redis import RedisStore
from core.store.sqlite import SqliteStore
from gateway.downstream.webhooks import WebhookDispatcher


def _event(n: int, conversations: int) -> DownstreamEvent:
    conversation = f"cv_{n % conversations:06d}"
    return DownstreamEvent(
        type=EventType.MESSAGE_CREATED,
        data={
            "message": {"id": f"msg_{n}", "text": "您好，我想查询一下订单的物流信息", "conversation_id": conversation}
        },
        occurred_at=datetime.now(UTC),
        idempotency_key=f"bench:{uuid.uuid4().hex}",
        conversation_id=conversation,
    )


async def _publish(store: Store, total: int, concurrency: int) -> float:
    per_task = total // concurrency

    async def worker(w: int) -> None:
        for i in range(per_task):
            await store.append_events([_event(w * per_task + i, 200)])

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return per_task * concurrency / (time.perf_counter() - started)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _webhooks(store: Store, total: int) -> float:
    for start in range(0, total, 500):
        await store.append_events([_event(n, 200) for n in range(start, min(total, start + 500))])
    received = 0
    done = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        if received >= total:
            done.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    cfg = WebhookConfig(
        name="bench",
        url=f"http://127.0.0.1:{port}/hook",
        secrets=("s" * 32, "t" * 32),
        concurrency=16,
        poll_s=0.05,
        allow_http=True,  # a loopback receiver: allowed explicitly
        allow_private=True,
    )
    try:
        started = time.perf_counter()
        async with WebhookDispatcher(store, [cfg]).running():
            await asyncio.wait_for(done.wait(), 600)
            elapsed = time.perf_counter() - started
    finally:
        await runner.cleanup()
    return total / elapsed


async def _drop(store: RedisStore) -> None:
    keys = [k async for k in store.client.scan_iter(match=store.tag + "*", count=1000)]
    for start in range(0, len(keys), 500):
        await store.client.unlink(*keys[start : start + 500])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--webhook-events", type=int, default=5000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stores: dict[str, Store] = {
            "redis": RedisStore(args.redis_url, prefix=f"bench-{uuid.uuid4().hex[:8]}:"),
            "sqlite": SqliteStore(Path(tmp) / "bench.sqlite3"),
        }
        for name, store in stores.items():
            await store.open()
            try:
                rate = await _publish(store, args.events, args.concurrency)
                print(
                    json.dumps(
                        {"measure": "publish", "store": name, "events": args.events, "events_per_s": round(rate)}
                    )
                )
                fresh: Store = (
                    RedisStore(args.redis_url, prefix=f"bench-{uuid.uuid4().hex[:8]}:")
                    if name == "redis"
                    else SqliteStore(Path(tmp) / "webhooks.sqlite3")
                )
                await fresh.open()
                try:
                    rate = await _webhooks(fresh, args.webhook_events)
                    print(
                        json.dumps(
                            {
                                "measure": "webhooks",
                                "store": name,
                                "events": args.webhook_events,
                                "events_per_s": round(rate),
                            }
                        )
                    )
                finally:
                    if isinstance(fresh, RedisStore):
                        await _drop(fresh)
                    await fresh.close()
            finally:
                if isinstance(store, RedisStore):
                    await _drop(store)
                await store.close()


if __name__ == "__main__":
    asyncio.run(main())
