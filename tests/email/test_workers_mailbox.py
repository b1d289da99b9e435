"""``huiliu serve --workers 2`` on SQLite and a real Dovecot: one worker polls the mailbox; killing it hands over."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.email.conftest import PASSWORD, Dovecot, SmtpSink, mail
from tests.email.test_lease_handover import _arrived, _wait_until
from tests.test_serve import write_config
from tests.workers import serve_workers, stop, worker_pids

LEASE_TTL_S = 2.0
LEASE = "email:support:poll:INBOX"


def _holder(db_path: Path) -> int | None:
    """The pid in the mailbox lease's holder (``host:pid:nonce``), if the lease is held and alive."""
    if not db_path.exists():
        return None
    db = sqlite3.connect(db_path, timeout=10)
    try:
        row = db.execute("SELECT holder FROM claims WHERE key = ? AND expires_at > ?", (LEASE, time.time())).fetchone()
    except sqlite3.OperationalError:  # the schema is not there yet
        return None
    finally:
        db.close()
    return int(row[0].split(":")[1]) if row else None


@pytest.mark.timeout(150)
async def test_one_worker_polls_the_mailbox_and_a_killed_poller_hands_it_over(
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
    db_path = tmp_path / "data" / "huiliu.sqlite3"
    total, before_kill = 30, 12

    async def append(i: int) -> None:
        raw = mail(subject=f"handover {i:03d}", body=f"handover mail {i:03d}", sender=f"c{i}@example.org")
        await asyncio.to_thread(dovecot.append, user, raw)

    async def holder() -> int | None:
        return await asyncio.to_thread(_holder, db_path)

    config = write_config(tmp_path, inboxes=[inbox])
    proc, url = await serve_workers(config, log=tmp_path / "serve.log")
    try:
        pids = await worker_pids(url, 2)
        poller = await _wait_until("a worker to take the mailbox lease", holder)
        assert poller in pids.values()
        for _ in range(10):  # both workers run the connector, and the same one keeps the mailbox
            await asyncio.sleep(LEASE_TTL_S / 4)
            assert await holder() == poller
        async with aiohttp.ClientSession() as http:
            for i in range(before_kill):
                await append(i)

            async def some_taken() -> bool:
                return len(await _arrived(http, url)) >= 3

            await _wait_until("the poller to take in the first mails", some_taken)
            os.kill(poller, signal.SIGKILL)  # mid-stream: no release of the lease, no clean shutdown
            for i in range(before_kill, total):
                await append(i)

            async def all_taken() -> Counter[int] | None:
                seen = await _arrived(http, url)
                return seen if len(seen) == total else None

            await _wait_until("the other worker or the replacement to take in every mail", all_taken, timeout_s=60)
            await asyncio.sleep(LEASE_TTL_S)  # a late duplicate would show up by now
            seen = await _arrived(http, url)
        assert sorted(seen) == list(range(total))  # no mail lost
        assert {i: n for i, n in seen.items() if n != 1} == {}  # none doubled
        now = await worker_pids(url, 2)
        assert await holder() in now.values() and poller not in now.values()
        assert await stop(proc) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
