"""Two real ``huiliu serve`` processes on one Redis and one mailbox: killing the lease holder hands the mailbox over."""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.store.redis import RedisStore
from tests.conftest import API_TOKEN
from tests.email.conftest import PASSWORD, Dovecot, SmtpSink, mail
from tests.processes import Instance, ready, serve
from tests.redis_util import REDIS_URL, redis_store
from tests.test_serve import write_config

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
LEASE_TTL_S = 2.0
TOKEN = re.compile(r"handover mail (\d{3})")


@asynccontextmanager
async def _two_instances(
    tmp_path: Path, store: RedisStore, inbox: dict[str, Any]
) -> AsyncIterator[tuple[Instance, Instance]]:
    config = write_config(tmp_path, store={"backend": "redis", "url": REDIS_URL, "prefix": store.tag}, inboxes=[inbox])
    a, b = await asyncio.gather(serve(config), serve(config))
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(ready(http, a[1]), ready(http, b[1]))
        yield a, b
    finally:
        for proc, _ in (a, b):
            if proc.returncode is None:
                proc.terminate()
        for proc, _ in (a, b):
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _arrived(http: aiohttp.ClientSession, url: str) -> Counter[int]:
    """How many messages each numbered test mail became, from the events a helpdesk reads."""
    seen: Counter[int] = Counter()
    after = 0
    while True:
        async with http.get(f"{url}/api/v1/events", params={"after": after, "limit": 1000}, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            page = await resp.json()
        for event in page["events"]:
            message = event["data"].get("message") if event["type"] == "message.created" else None
            if message and message["direction"] == "inbound" and (m := TOKEN.search(message.get("text") or "")):
                seen[int(m.group(1))] += 1
        if not page["events"]:
            return seen
        after = page["next_after"]


async def _lease_holder_pid(store: RedisStore) -> int | None:
    holder = await store.client.get(store.key("claim:email:support:poll:INBOX"))
    if holder is None:
        return None
    text = holder.decode() if isinstance(holder, bytes) else str(holder)
    return int(text.split(":")[1])


async def _wait_until(what: str, check: Any, timeout_s: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.timeout(120)
async def test_killing_the_lease_holder_hands_the_mailbox_over(
    tmp_path: Path, dovecot: Dovecot, smtp_sink: SmtpSink
) -> None:
    user = dovecot.user()
    inbox = {
        "name": "support",
        "channel": "email",
        "address": "support@example.test",
        "imap": {
            "host": "127.0.0.1", "port": dovecot.port, "tls": "none", "user": user, "password": PASSWORD,
            "poll_interval_s": 0.5, "lease_ttl_s": LEASE_TTL_S, "backoff_max_s": 0.5, "timeout_s": 10,
        },
        "smtp": {"host": "127.0.0.1", "port": smtp_sink.port, "tls": "none"},
        "acknowledge": False,
    }  # fmt: skip
    total, before_kill = 30, 12

    async def append(i: int) -> None:
        raw = mail(subject=f"handover {i:03d}", body=f"handover mail {i:03d}", sender=f"c{i}@example.org")
        await asyncio.to_thread(dovecot.append, user, raw)

    store = redis_store()  # skips without Redis; its prefix's keys go when it closes
    await store.open()
    try:
        async with _two_instances(tmp_path, store, inbox) as (a, b), aiohttp.ClientSession() as http:
            holder = await _wait_until("an instance to take the mailbox lease", lambda: _lease_holder_pid(store))
            procs = {a[0].pid: a, b[0].pid: b}
            assert holder in procs, (holder, list(procs))
            victim, survivor = procs[holder], next(p for pid, p in procs.items() if pid != holder)

            for i in range(before_kill):
                await append(i)

            async def some_taken() -> bool:
                return len(await _arrived(http, survivor[1])) >= 3

            await _wait_until("the holder to take in the first mails", some_taken)
            victim[0].send_signal(signal.SIGKILL)  # mid-stream: no release of the lease, no clean shutdown
            await victim[0].wait()
            for i in range(before_kill, total):
                await append(i)

            async def all_taken() -> Counter[int] | None:
                seen = await _arrived(http, survivor[1])
                return seen if len(seen) == total else None

            await _wait_until("the survivor to take in every mail", all_taken, timeout_s=60)
            await asyncio.sleep(LEASE_TTL_S)  # a late duplicate would show up by now
            seen = await _arrived(http, survivor[1])
            assert sorted(seen) == list(range(total))  # no mail lost
            assert {i: n for i, n in seen.items() if n != 1} == {}  # none doubled
            assert await _lease_holder_pid(store) == survivor[0].pid
    finally:
        await store.close()
