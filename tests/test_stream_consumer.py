"""The shipped example consumer reads the Redis stream with a consumer group and takes over stuck entries."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from pathlib import Path

import pytest

from core import events
from tests.conftest import ROOT
from tests.contract.test_store_contract import inbound, new_conversation
from tests.redis_util import REDIS_URL, redis_store


def _example() -> object:
    spec = importlib.util.spec_from_file_location("stream_consumer", ROOT / "examples" / "stream_consumer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_example_consumer_takes_over_what_a_crashed_worker_left_unacknowledged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    example = _example()
    store = redis_store()
    await store.open()
    try:
        conversation = await new_conversation(store)
        for n in range(4):
            message = inbound(conversation, f"m{n}")
            await store.append_events([events.message_created(message)])
        assert getattr(example, "stream_key")(store.tag) == store.stream_key  # noqa: B009
        await store.client.xgroup_create(store.stream_key, "helpdesk", id="0")
        # A worker reads two entries and dies before acknowledging them.
        await store.client.xreadgroup("helpdesk", "crashed", {store.stream_key: ">"}, count=2)
        consume = getattr(example, "consume")  # noqa: B009
        task = asyncio.ensure_future(consume(REDIS_URL, store.tag, "helpdesk", "worker-2", 0))
        await asyncio.sleep(1.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        printed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
        assert sorted(int(x) for x in printed) == [1, 2, 3, 4]
        pending = await store.client.xpending(store.stream_key, "helpdesk")
        assert pending["pending"] == 0
    finally:
        await store.close()
