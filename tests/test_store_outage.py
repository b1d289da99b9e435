"""Redis down: senders get 503 with Retry-After (they retry; nothing was kept), and the log says so once."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from core.config import ConfigError
from core.store import StoreError, StoreUnavailable, open_store
from gateway.app import GATEWAY
from gateway.intake import BotSetup
from tests.conftest import make_config, need, started
from tests.processes import free_port
from tests.redis_util import REDIS_URL, redis_store
from tests.tcp_proxy import TcpProxy
from tests.wechat.conftest import TOKEN, WechatClient, text_xml


async def test_with_redis_unreachable_pushes_and_api_calls_get_503_and_one_log_line(
    tmp_path: Path, bot_setup: BotSetup, caplog: pytest.LogCaptureFixture
) -> None:
    store = redis_store()  # skips without Redis; removes the prefix's keys afterwards
    host, port = urlsplit(REDIS_URL).hostname or "127.0.0.1", urlsplit(REDIS_URL).port or 6379
    proxy = TcpProxy(host, port)
    await proxy.start()
    url = urlunsplit(urlsplit(REDIS_URL)._replace(netloc=f"127.0.0.1:{proxy.port}"))
    wechat = {"name": "oa", "channel": "wechat", "token": TOKEN, "app_id": "wx1", "app_secret": "s" * 16,
              "api_base": "http://127.0.0.1:9"}  # fmt: skip
    redis = {"backend": "redis", "url": url, "prefix": store.tag, "socket_timeout_s": 1, "pool_timeout_s": 1}
    config = make_config(tmp_path, store=redis, inboxes=[wechat])
    try:
        async with started(config, bot_setup) as gw:
            client = WechatClient(gw)
            proxy.cut()
            caplog.clear()
            with caplog.at_level(logging.INFO):
                for n in range(10):
                    pushed = await client.push(text_xml("你好", msg_id=f"out-{n}"))
                    assert pushed.status == 503, pushed.text
                    async with gw.http.get(f"{gw.url}/api/v1/tickets", headers=_auth()) as resp:
                        assert resp.status == 503 and resp.headers["Retry-After"].isdigit()
                        assert (await resp.json())["error"]["code"] == "store_unavailable"
            failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(failures) == 1 and "store unavailable" in failures[0].getMessage(), failures
            assert not any(r.exc_info for r in caplog.records)  # no traceback storm
            proxy.heal()
            # WeChat's retry after the outage goes through.
            assert (await client.push(text_xml("你好", msg_id="out-0"))).status == 200
    finally:
        await proxy.close()
        await store.open()
        await store.close()


def _auth() -> dict[str, str]:
    from tests.conftest import API_TOKEN

    return {"Authorization": f"Bearer {API_TOKEN}"}


async def test_readyz_says_what_an_acknowledged_message_survives(tmp_path: Path, bot_setup: BotSetup) -> None:
    async with started(make_config(tmp_path), bot_setup) as gw:
        async with gw.http.get(f"{gw.url}/readyz") as resp:
            durability = (await resp.json())["durability"]
        assert durability["backend"] == "sqlite" and "power loss" in durability["survives"]
    store = redis_store()
    config = make_config(tmp_path, store={"backend": "redis", "url": REDIS_URL, "prefix": store.tag})
    try:
        async with started(config, bot_setup) as gw:
            async with gw.http.get(f"{gw.url}/readyz") as resp:
                durability = (await resp.json())["durability"]
            info = await gw.server.app[GATEWAY].store.client.info("persistence")  # type: ignore[attr-defined]
            assert durability["appendonly"] == ("yes" if int(info["aof_enabled"]) else "no")
            assert durability["acknowledged_after"] == "memory" and durability["version"]
    finally:
        await store.open()
        await store.close()


async def test_aof_durability_refuses_a_server_that_cannot_wait_for_its_aof(tmp_path: Path) -> None:
    """``durability: aof`` promises an acknowledged message is on disk: a server without appendonly (or before
    7.2, without WAITAOF) cannot keep that promise, so the gateway does not start on it."""
    server = shutil.which("redis-server")
    need(server is not None, "redis-server is not installed")
    assert server is not None
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(tmp_path), stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"redis://127.0.0.1:{port}/0"
        store = open_store(make_config(tmp_path, store={"backend": "redis", "url": url, "durability": "aof"}))
        async with asyncio.timeout(10):
            while True:
                try:
                    await store.open()
                except StoreUnavailable:
                    await asyncio.sleep(0.05)  # still starting
                    continue
                except StoreError as exc:
                    assert "store.durability: aof needs Redis 7.2 or later with appendonly yes" in str(exc)
                    break
                raise AssertionError("the store opened on a server without an AOF")
    finally:
        proc.terminate()
        await proc.wait()


def test_the_aof_wait_must_be_shorter_than_the_socket_timeout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="aof_timeout_ms"):
        make_config(tmp_path, store={"backend": "redis", "durability": "aof", "aof_timeout_ms": 5000})
