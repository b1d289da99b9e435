"""``store.durability: aof`` on a real server with WAITAOF (Valkey 8 / Redis 7.2+): an acknowledged push is on disk."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core.model import Channel, Direction
from core.store import open_store
from gateway.intake import BotSetup
from tests.conftest import make_config, need, started
from tests.processes import free_port
from tests.wechat.conftest import TOKEN, WechatClient, text_xml


def _aof_server() -> str | None:
    """A server binary that has WAITAOF (Redis 7.2+; Debian bookworm's Redis is 7.0, its backports carry Valkey 8)."""
    for name in ("valkey-server", "redis-server"):
        path = shutil.which(name)
        if path is None:
            continue
        found = re.search(r"v=(\d+)\.(\d+)", subprocess.run([path, "--version"], capture_output=True, text=True).stdout)
        if found and (name == "valkey-server" or (int(found[1]), int(found[2])) >= (7, 2)):
            return path
    return None


@asynccontextmanager
async def _server(binary: str, port: int, data: Path, appendfsync: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A private server persisting to ``data`` only through its append-only file."""
    proc = await asyncio.create_subprocess_exec(
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
        "--appendonly", "yes", "--appendfsync", appendfsync, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    client = aioredis.Redis(port=port)
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    await client.ping()
                    break
                except (aioredis.ConnectionError, OSError):
                    await asyncio.sleep(0.05)
        yield proc
    finally:
        await client.aclose()
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


@pytest.mark.parametrize(("durability", "appendfsync"), [("aof", "everysec"), ("aof", "always"), ("none", "everysec")])
async def test_an_acknowledged_push_is_in_the_aof_and_survives_a_kill_of_the_server(
    tmp_path: Path, bot_setup: BotSetup, durability: str, appendfsync: str
) -> None:
    """Redis writes its AOF before it answers, so with ``appendonly yes`` an acknowledged push survives a kill of
    the server whatever the durability; ``durability: aof`` also waits for the fsync (WAITAOF), which is what
    keeps it through a power loss: the acknowledgement waited for it, and without it nothing waited."""
    binary = _aof_server()
    need(binary is not None, "no valkey-server or redis-server 7.2+ (WAITAOF) is installed")
    assert binary is not None
    port, data = free_port(), tmp_path / "aof"
    data.mkdir()
    url = f"redis://127.0.0.1:{port}/0"
    wechat = {"name": "oa", "channel": "wechat", "token": TOKEN, "app_id": "wx1", "app_secret": "s" * 16,
              "api_base": "http://127.0.0.1:9"}  # fmt: skip
    store_cfg = {"backend": "redis", "url": url, "durability": durability, "aof_timeout_ms": 2000}
    config = make_config(tmp_path, store=store_cfg, inboxes=[wechat])
    async with _server(binary, port, data, appendfsync) as server, started(config, bot_setup) as gw:
        async with gw.http.get(f"{gw.url}/readyz") as resp:
            report = (await resp.json())["durability"]
        assert report["appendonly"] == "yes"
        assert report["acknowledged_after"] == ("aof_fsync" if durability == "aof" else "memory")
        assert "crash" in report["survives"]
        stats = aioredis.Redis(port=port, decode_responses=True)
        before = (await stats.info("commandstats")).get("cmdstat_waitaof", {}).get("calls", 0)
        pushed = await WechatClient(gw).push(text_xml("发货了吗", msg_id="7700000000000000001"))
        assert pushed.status == 200, pushed.text
        # With durability aof the acknowledgement waited for the AOF's fsync; without it, nothing waited.
        waited = (await stats.info("commandstats")).get("cmdstat_waitaof", {}).get("calls", 0) - before
        await stats.aclose()
        server.send_signal(signal.SIGKILL)  # right after the 200: nothing left to flush, nothing shut down
        await server.wait()
        assert waited >= 1 if durability == "aof" else waited == 0
    async with _server(binary, port, data, appendfsync):  # restarted from its AOF alone (no RDB: --save "")
        store = open_store(make_config(tmp_path, store=store_cfg))
        await store.open()
        try:
            found = await store.find_message(
                channel=Channel.WECHAT, inbox="oa", direction=Direction.INBOUND, external_id="7700000000000000001"
            )
            assert found is not None and found.text == "发货了吗"
            # The restarted server has forgotten every script: the durable write loads its own and goes through.
            again = dataclasses.replace(found, id="msg_after_restart", external_id="7700000000000000002")
            stored, created = await store.add_message(again)
            assert created and await store.get_message(stored.id) is not None
        finally:
            await store.close()
