"""``huiliu serve --workers N`` for tests: start it, find its workers, and talk to one chosen worker."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import API_TOKEN, ROOT
from tests.processes import HUILIU, free_port

Supervised = tuple[asyncio.subprocess.Process, str]


async def serve_workers(config: Path, workers: int = 2, *, log: Path | None = None) -> Supervised:
    """Start ``huiliu serve --workers N`` on a free port; its log (every worker's too) goes to ``log``."""
    port = free_port()
    out = log.open("wb") if log is not None else None  # the child writes it; ours is closed once it has it
    try:
        proc = await asyncio.create_subprocess_exec(
            *HUILIU, "serve", "-c", str(config), "--port", str(port), "--workers", str(workers),
            cwd=ROOT, stdout=out or asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "TEST_API_TOKEN": API_TOKEN},
        )  # fmt: skip
    finally:
        if out is not None:
            out.close()
    return proc, f"http://127.0.0.1:{port}"


async def worker_pids(url: str, workers: int, timeout_s: float = 60) -> dict[int, int]:
    """Each worker's pid by index, from /readyz over fresh connections until every worker has answered 200."""
    seen: dict[int, int] = {}
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        while len(seen) < workers:
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"only workers {sorted(seen)} of {workers} answered /readyz at {url}")
            try:
                async with http.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        worker = (await resp.json())["worker"]
                        assert worker["workers"] == workers
                        seen[worker["index"]] = worker["pid"]
                        continue
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    return seen


class Reused:
    """Counts the connections a session opened, to show a request (a WebSocket) went over the pinned one."""

    def __init__(self) -> None:
        self.created = 0
        self.trace = aiohttp.TraceConfig()
        self.trace.on_connection_create_end.append(self._created)

    async def _created(self, *_: object) -> None:
        self.created += 1


@asynccontextmanager
async def pinned(url: str, index: int) -> AsyncIterator[tuple[aiohttp.ClientSession, Reused]]:
    """A session whose one keep-alive connection is served by worker ``index``: aiohttp reuses an idle
    connection for every later request, WebSocket upgrades included (``Reused`` shows it did)."""
    for _ in range(200):
        reused = Reused()
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), trace_configs=[reused.trace])
        try:
            async with http.get(url + "/readyz") as resp:
                got = (await resp.json())["worker"]["index"]
            if got == index:
                yield http, reused
                return
        finally:
            await http.close()
    pytest.fail(f"no connection reached worker {index}")


async def stop(proc: asyncio.subprocess.Process, timeout_s: float = 30) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
