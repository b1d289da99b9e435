"""What the Redis backend adds beyond the contract: shared state across instances, the stream, one hash tag."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core import events
from core.config import RedisStoreConfig
from core.store import open_store
from core.store.redis import RedisPool, RedisStore
from tests.conftest import make_config
from tests.contract.test_store_contract import draft_ticket, inbound, new_conversation
from tests.redis_util import REDIS_URL, redis_store


@pytest.fixture
async def pair() -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores on one prefix: what two gateway instances see."""
    first = redis_store()
    second = RedisStore(REDIS_URL, prefix=first.tag)
    await first.open()
    await second.open()
    try:
        yield first, second
    finally:
        await second.close()
        await first.close()


async def test_a_second_instance_sees_every_change_at_once(pair: tuple[RedisStore, RedisStore]) -> None:
    a, b = pair
    conversation = await new_conversation(a)
    assert await b.get_conversation(conversation.id) == conversation
    _, created = await b.add_message(inbound(conversation, "ext-1"))
    assert created
    _, again = await a.add_message(inbound(conversation, "ext-1"))
    assert not again


async def test_tickets_created_on_two_instances_at_once_are_numbered_without_gaps(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = pair
    conversations = [await new_conversation(a, n) for n in range(12)]
    made = await asyncio.gather(
        *(
            (a if n % 2 else b).create_ticket(draft_ticket(c), c, lambda t, c: [events.ticket_created(t)])
            for n, c in enumerate(conversations)
        )
    )
    numbers = sorted(t.number for t, _ in made)
    assert numbers == [f"HL-{n:06d}" for n in range(1, 13)]
    created = [e for e in await a.events_after(0) if e.type == "ticket.created"]
    assert sorted(e.data["ticket"]["number"] for e in created) == numbers


async def test_more_tickets_at_once_than_a_creator_could_retry_all_get_their_number(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """The number was read first and checked in the script, so every creator but one started over: 32 callers'
    missed calls in one import ran out of retries ("too many tickets created at once"). The script numbers now,
    and the number stands in the stored ticket, its number lookup and its event, never the placeholder."""
    a, b = pair
    conversations = [await new_conversation(a, n) for n in range(120)]
    made = await asyncio.gather(
        *(
            (a if n % 2 else b).create_ticket(draft_ticket(c), c, lambda t, c: [events.ticket_created(t)])
            for n, c in enumerate(conversations)
        )
    )
    assert sorted(t.number for t, _ in made) == [f"HL-{n:06d}" for n in range(1, 121)]
    for ticket, _ in made:
        assert await b.get_ticket(ticket.id) == ticket
        found = await a.get_ticket(ticket.number)
        assert found is not None and found.id == ticket.id
    created = {e.data["ticket"]["id"]: e.data["ticket"]["number"] for e in await a.events_after(0, limit=500)}
    assert created == {t.id: t.number for t, _ in made}


async def test_stream_entries_are_the_versioned_events_with_their_seq_as_id(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    a, _ = pair
    conversation = await new_conversation(a)
    for n in range(3):
        message = inbound(conversation, f"s{n}")
        await a.add_message(message, [events.message_created(message)])
    feed = await a.events_after(0)
    entries = await a.client.xrange(a.stream_key)
    assert [entry_id for entry_id, _ in entries] == [f"{e.seq}-0" for e in feed]
    for (_, fields), event in zip(entries, feed, strict=True):
        assert fields["type"] == "message.created"
        assert json.loads(fields["event"]) == event.to_json()
    assert [e.seq for e in await a.events_after(feed[0].seq or 0)] == [e.seq for e in feed[1:]]


async def test_every_key_carries_the_deployments_hash_tag(pair: tuple[RedisStore, RedisStore]) -> None:
    a, _ = pair
    conversation = await new_conversation(a)
    await a.add_message(inbound(conversation, "k"))
    await a.create_ticket(draft_ticket(conversation), conversation, lambda t, c: [events.ticket_created(t)])
    await a.push_frame(conversation.address, {"type": "message"})
    await a.claim("nonce", 60)
    keys = [k async for k in a.client.scan_iter(match=a.tag + "*")]
    assert len(keys) > 10
    assert {k[: k.index("}") + 1] for k in keys} == {a.tag[: a.tag.index("}") + 1]}
    assert a.tag.startswith("{hltest-")


async def test_config_selects_the_redis_backend(tmp_path: Path) -> None:
    config = make_config(tmp_path, store={"backend": "redis", "url": REDIS_URL, "prefix": "cfgtest:"})
    assert isinstance(config.store, RedisStoreConfig)
    store = open_store(config)
    assert isinstance(store, RedisStore) and store.tag == "{cfgtest}:"


async def test_more_concurrent_writes_than_pooled_connections_wait_for_one_and_all_succeed() -> None:
    """redis-py's default pool refused the 101st concurrent command (MaxConnectionsError: a 500 per push). The
    bounded pool makes a command wait for a free connection instead, and never opens more than configured."""
    store = redis_store()
    store._pool = RedisPool(max_connections=8, wait_s=10)
    await store.open()
    try:
        conversation = await new_conversation(store)
        results = await asyncio.gather(
            *(store.add_message(inbound(conversation, f"burst-{n}")) for n in range(500)),
            *(store.claim(f"burst-claim-{n}", 60) for n in range(500)),
        )
        assert all(created for _, created in results[:500]) and all(results[500:])
        pool = store.client.connection_pool
        assert len(pool._in_use_connections) + len(pool._available_connections) <= 8
    finally:
        await store.close()


async def test_the_pool_bounds_come_from_the_config(tmp_path: Path) -> None:
    store = {"backend": "redis", "url": REDIS_URL, "max_connections": 12, "pool_timeout_s": 1.5}
    opened = open_store(make_config(tmp_path, store=store))
    assert isinstance(opened, RedisStore) and opened._pool.max_connections == 12 and opened._pool.wait_s == 1.5
