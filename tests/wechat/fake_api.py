"""A fake WeChat API server: real aiohttp, real access-token rules, real error codes."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

# WeChat's own codes, as its API documents them.
INVALID_CREDENTIAL = 40001  # access token invalid (or app secret wrong)
INVALID_APPID = 40013
INVALID_MSGTYPE = 40008
INVALID_SECRET = 40125
TOKEN_MISSING = 41001
TOKEN_EXPIRED = 42001
UNSUBSCRIBED = 43004
WINDOW_CLOSED = 45015
QUOTA_USED = 45047


@dataclass
class FakeWechat:
    app_id: str
    app_secret: str
    token_ttl_s: int = 7200
    # Scripted answers: openid → errcode for every custom/send to that user.
    errors: dict[str, int] = field(default_factory=dict)
    # openid → messages WeChat still allows (absent: unlimited); 0 answers 45047.
    quota: dict[str, int] = field(default_factory=dict)
    token_delay_s: float = 0.0
    # While set, a custom/send is held and never answered nor delivered (as if it never reached WeChat).
    blackhole: bool = False
    # Each custom/send is answered (and delivered) only after this long: a slow WeChat API.
    send_delay_s: float = 0.0
    held: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    token_fetches: int = 0
    send_calls: int = 0
    _tokens: dict[str, float] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def start(self) -> FakeWechat:
        app = web.Application()
        app.router.add_get("/cgi-bin/token", self._token)
        app.router.add_post("/cgi-bin/message/custom/send", self._custom_send)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (as after WeChat's 7200 s)."""
        for token in self._tokens:
            self._tokens[token] = 0.0

    def sent_to(self, openid: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["touser"] == openid]

    async def _token(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("grant_type") != "client_credential":
            return web.json_response({"errcode": 40002, "errmsg": "invalid grant_type"})
        if q.get("appid") != self.app_id:
            return web.json_response({"errcode": INVALID_APPID, "errmsg": "invalid appid"})
        if q.get("secret") != self.app_secret:
            return web.json_response({"errcode": INVALID_SECRET, "errmsg": "invalid appsecret"})
        self.token_fetches += 1
        if self.token_delay_s:
            await asyncio.sleep(self.token_delay_s)
        token = f"ACCESS_TOKEN_{next(self._ids)}"
        self._tokens[token] = time.monotonic() + self.token_ttl_s
        return web.json_response({"access_token": token, "expires_in": self.token_ttl_s})

    async def _custom_send(self, request: web.Request) -> web.Response:
        self.send_calls += 1
        if self.blackhole:
            self.held += 1
            await asyncio.Event().wait()  # until the caller gives up or the server closes
        if self.send_delay_s:
            await asyncio.sleep(self.send_delay_s)
        token = request.query.get("access_token")
        if not token:
            return web.json_response({"errcode": TOKEN_MISSING, "errmsg": "access_token missing"})
        expires = self._tokens.get(token)
        if expires is None:
            return web.json_response({"errcode": INVALID_CREDENTIAL, "errmsg": "invalid credential"})
        if expires <= time.monotonic():
            return web.json_response({"errcode": TOKEN_EXPIRED, "errmsg": "access_token expired"})
        body = await request.json()
        openid, msgtype = body.get("touser"), body.get("msgtype")
        if not openid:
            return web.json_response({"errcode": 40003, "errmsg": "invalid openid"})
        if msgtype == "text":
            ok = bool(body.get("text", {}).get("content"))
        elif msgtype == "msgmenu":
            ok = bool(body.get("msgmenu", {}).get("list"))
        else:
            ok = False
        if not ok:
            return web.json_response({"errcode": INVALID_MSGTYPE, "errmsg": "invalid message type"})
        if openid in self.errors:
            code = self.errors[openid]
            return web.json_response({"errcode": code, "errmsg": f"scripted error {code}"})
        left = self.quota.get(openid)
        if left is not None:
            if left <= 0:
                return web.json_response({"errcode": QUOTA_USED, "errmsg": "out of response count limit"})
            self.quota[openid] = left - 1
        self.sent.append(body)
        return web.json_response({"errcode": 0, "errmsg": "ok"})
