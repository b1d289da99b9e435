"""Secrets never reach an error that is stored, returned or logged."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from connectors.wechat.api import ApiUnavailable, WechatApi
from core.model import Channel, Delivery, DeliveryStatus, QuarantinedItem
from core.redact import ScrubbingFormatter, scrub
from core.store.sqlite import SqliteStore

SECRET = "wx-app-secret-0123456789abcdef"


def test_scrub_drops_query_strings_credentials_and_secret_pairs() -> None:
    text = (
        f"GET https://api.weixin.qq.com/cgi-bin/token?grant_type=client_credential&appid=wx1&secret={SECRET} failed;"
        f" redis://user:{SECRET}@redis.internal:6379/0 down; password={SECRET}"
    )
    scrubbed = scrub(text)
    assert SECRET not in scrubbed
    assert "https://api.weixin.qq.com/cgi-bin/token?…" in scrubbed and "redis://***@redis.internal:6379/0" in scrubbed


def test_stored_delivery_errors_quarantine_reasons_and_log_lines_are_scrubbed() -> None:
    url = f"https://api.example.com/token?secret={SECRET}"
    assert SECRET not in (Delivery(status=DeliveryStatus.FAILED, error=f"boom at {url}").error or "")
    item = QuarantinedItem(
        id="q1", channel=Channel.WECHAT, inbox="oa", reason=f"failed: {url}", raw=b"x", received_at=datetime.now(UTC)
    )
    assert SECRET not in item.reason
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "calling %s", (url,), None)
    assert SECRET not in ScrubbingFormatter("%(message)s").format(record)


async def test_a_wechat_api_failure_naming_the_token_url_keeps_the_app_secret_out(tmp_path: Path) -> None:
    """The AppSecret reached the API and the database through a delivery_error holding the token URL."""

    async def loop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(str(request.rel_url))  # a redirect loop: aiohttp's error names the full URL

    app = web.Application()
    app.router.add_get("/cgi-bin/token", loop)
    store = SqliteStore(tmp_path / "s.sqlite3")
    await store.open()
    try:
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
            base = str(server.make_url("")).rstrip("/")
            api = WechatApi(http=http, store=store, base=base, app_id="wx1", app_secret=SECRET)
            with pytest.raises(ApiUnavailable) as caught:
                await api.access_token()
        assert "/cgi-bin/token" in str(caught.value) and SECRET not in str(caught.value)
    finally:
        await store.close()
