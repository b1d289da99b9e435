"""A helpdesk's consumer of Huiliu's Redis event stream, with a consumer group (run several for scale).

    python examples/stream_consumer.py --url redis://127.0.0.1:6379/0 --prefix huiliu: --group helpdesk --name worker-1

Each event is read with XREADGROUP, applied, then XACKed. Entries a crashed worker read but never acknowledged
are taken over with XAUTOCLAIM once they have been idle for --claim-idle-ms. Delivery is at least once: apply
events idempotently, keyed on ``idempotency_key`` (or the event ``id``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError


def stream_key(prefix: str) -> str:
    """The same rule as the gateway: the prefix becomes the hash tag of every key."""
    tag = prefix if "{" in prefix else "{" + prefix.rstrip(":") + "}:"
    return tag + "events"


async def apply(event: dict[str, Any]) -> None:
    """Your integration goes here; it must tolerate seeing an event twice."""
    print(event["id"], event["type"], event["ticket_id"] or event["conversation_id"], flush=True)


async def consume(url: str, prefix: str, group: str, name: str, claim_idle_ms: int) -> None:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    key = stream_key(prefix)
    try:
        await client.xgroup_create(key, group, id="0", mkstream=True)  # "0": from the oldest kept event
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    try:
        while True:
            # 1. Take over entries another worker read but never acknowledged (it crashed mid-way).
            reply: Any = await client.xautoclaim(key, group, name, min_idle_time=claim_idle_ms, count=100)
            claimed = reply[1]
            # 2. Then new entries; block up to 5 s when there are none.
            fresh: Any = await client.xreadgroup(group, name, {key: ">"}, count=100, block=5000)
            entries = list(claimed) + [e for _, batch in fresh for e in batch]
            for entry_id, fields in entries:
                if not fields:  # trimmed away by MAXLEN while pending
                    await client.xack(key, group, entry_id)
                    continue
                await apply(json.loads(fields["event"]))
                await client.xack(key, group, entry_id)  # only after it was applied
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--prefix", default="huiliu:", help="store.prefix of the gateway's config")
    parser.add_argument("--group", default="helpdesk")
    parser.add_argument("--name", default="worker-1", help="unique per worker process")
    parser.add_argument("--claim-idle-ms", type=int, default=60_000)
    args = parser.parse_args()
    asyncio.run(consume(args.url, args.prefix, args.group, args.name, args.claim_idle_ms))


if __name__ == "__main__":
    main()
