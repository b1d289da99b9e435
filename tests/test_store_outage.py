"""Redis down: senders get 503 with Retry-After (they retry; nothing was kept), and the log says so once."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from gateway.intake import BotSetup
from tests.conftest import make_config, started
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
