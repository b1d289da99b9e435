"""WeChat's HTTP API over aiohttp, with one access token per AppID shared by all instances through the store."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from core.redact import scrub
from core.store.base import ChannelStore

log = logging.getLogger(__name__)

# The token was invalid, not the latest, or expired: fetch a new one and try once more.
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
SYSTEM_BUSY = -1
# Refresh this long before WeChat's stated expiry, so no call uses a token in its last minutes.
REFRESH_MARGIN = timedelta(minutes=5)


class ApiError(Exception):
    """WeChat answered with an errcode: a permanent answer about this request."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"{errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class ApiUnavailable(Exception):
    """The API could not be reached or was busy: worth retrying later."""

    def __init__(self, message: str, *, code: str = "unreachable") -> None:
        super().__init__(message)
        self.code = code


def _utcnow() -> datetime:
    return datetime.now(UTC)


class WechatApi:
    def __init__(
        self,
        *,
        http: aiohttp.ClientSession,
        store: ChannelStore,
        base: str,
        app_id: str,
        app_secret: str,
        clock: Callable[[], datetime] = _utcnow,
        on_error: Callable[[str], None] | None = None,
        health_key: str | None = None,
    ) -> None:
        """``on_error`` counts failed calls by errcode (or ``http_<status>``, ``unreachable``, ``busy``);
        ``health_key``: the checkpoint where the last token refresh's outcome is kept for the health checks."""
        self._http = http
        self._store = store
        self._base = base.rstrip("/")
        self._app_id = app_id
        self._app_secret = app_secret
        self._clock = clock
        self._on_error = on_error
        self._health_key = health_key
        self._secret = f"wechat:access_token:{app_id}"
        self._lease = f"wechat:token_refresh:{app_id}"
        self._holder = uuid.uuid4().hex  # this instance, for the cross-instance refresh lease
        self._lock = asyncio.Lock()  # one refresh at a time in this process; the lease across processes

    async def access_token(self) -> str:
        token = await self._store.get_secret(self._secret, self._clock())
        return token if token is not None else await self._refresh(stale=None)

    async def send_custom(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST /cgi-bin/message/custom/send (a customer-service message)."""
        return await self.call("/cgi-bin/message/custom/send", payload)

    async def call(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``payload`` with the access token; on a token error refresh once and retry once."""
        token = await self.access_token()
        try:
            return await self._post(path, token, payload)
        except ApiError as exc:
            if exc.errcode not in TOKEN_ERRORS:
                raise
            log.info("access token for %s rejected (%s); refreshing", self._app_id, exc.errcode)
        token = await self._refresh(stale=token)
        return await self._post(path, token, payload)

    async def _post(self, path: str, token: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        return await self._request("POST", path, params={"access_token": token}, json=dict(payload))

    async def _request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            return await self._answer(method, path, **kw)
        except ApiError as exc:
            self._count(str(exc.errcode))
            raise
        except ApiUnavailable as exc:
            self._count(exc.code)
            raise

    def _count(self, code: str) -> None:
        if self._on_error is not None:
            self._on_error(code)

    async def _answer(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            async with self._http.request(method, self._base + path, **kw) as resp:
                if resp.status >= 500:
                    raise ApiUnavailable(f"{path}: HTTP {resp.status}", code=f"http_{resp.status}")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ApiUnavailable(scrub(f"{path}: {type(exc).__name__}: {exc}")) from None  # exc names the token URL
        if not isinstance(body, dict):
            raise ApiUnavailable(f"{path}: unexpected answer {body!r:.200}")
        errcode = int(body.get("errcode") or 0)
        if errcode == SYSTEM_BUSY:
            raise ApiUnavailable(f"{path}: WeChat is busy ({body.get('errmsg')})", code=str(SYSTEM_BUSY))
        if errcode:
            raise ApiError(errcode, str(body.get("errmsg", "")))
        return body

    async def _refresh(self, *, stale: str | None) -> str:
        """A new token, fetched once however many callers need one at the same time.

        A caller whose ``stale`` token was already replaced (by a coroutine here or another instance)
        gets the replacement without a second fetch.
        """
        async with self._lock:
            current = await self._store.get_secret(self._secret, self._clock())
            if current is not None and current != stale:
                return current
            if not await self._store.lease(self._lease, self._holder, ttl_s=30):
                replaced = await self._wait_for_other_instance(stale)
                if replaced is not None:
                    return replaced
            try:
                return await self._fetch()
            finally:
                await self._store.release(self._lease, self._holder)

    async def _wait_for_other_instance(self, stale: str | None) -> str | None:
        for _ in range(100):
            await asyncio.sleep(0.1)
            current = await self._store.get_secret(self._secret, self._clock())
            if current is not None and current != stale:
                return current
        log.warning("another instance held the token refresh for %s too long; fetching here", self._app_id)
        return None

    async def _fetch(self) -> str:
        try:
            token = await self._fetch_token()
        except (ApiError, ApiUnavailable) as exc:
            await self._note_refresh(error=str(exc))
            raise
        await self._note_refresh(error="")
        return token

    async def _note_refresh(self, *, error: str) -> None:
        if self._health_key is not None:
            # Shown in /readyz: never the secret, should an error echo the request's URL.
            error = error.replace(self._app_secret, "***")
            state = {"ok": not error, "at": self._clock().isoformat(), "error": error}
            await self._store.set_checkpoint(self._health_key, json.dumps(state))

    async def _fetch_token(self) -> str:
        body = await self._request(
            "GET",
            "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self._app_id, "secret": self._app_secret},
        )
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, int):
            raise ApiUnavailable(f"token answer without access_token/expires_in: {sorted(body)}")
        lifetime = timedelta(seconds=expires_in)
        expires_at = self._clock() + max(lifetime - REFRESH_MARGIN, lifetime / 2)
        await self._store.set_secret(self._secret, token, expires_at)
        log.info("fetched a new access token for %s (valid %ss)", self._app_id, expires_in)
        return token
