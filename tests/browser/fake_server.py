"""A tiny stand-in for the gateway's web chat endpoint, for developing and testing the widget.

It implements the server side of docs/webchat-protocol.md well enough for the widget:
static files under /chat/, and the JSON frame protocol on /chat/ws with per-visitor seq
numbering, replay after resume, idempotent acks, a bot that answers "答: <text>",
suggestions when the text contains a question mark, and a hand-off to an agent when the
text contains "转人工" / "human".

Test hooks (behaviour the real bot does not have):
  * text containing "drop-before-ack" — the first time a given message id is seen it is
    stored, but the socket is closed (1012) before the ack is sent, so the client has to
    resend it after reconnecting (and gets ``duplicate: true``).
  * text containing "store-down-once" — the first time a given message id is seen it is
    not stored and gets ``error{code: "store_unavailable", retry_after_s: 1}`` (the store
    did not answer), so the client has to resend it on the same socket.

Run by hand:  /work/venv/bin/python -m tests.browser.fake_server --port 8765
then open http://127.0.0.1:8765/chat/
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

STATIC_DIR = Path(__file__).resolve().parents[2] / "connectors" / "webchat" / "static"
STATIC_FILES = {
    "index.html": "text/html",
    "widget.js": "text/javascript",
    "widget.css": "text/css",
}
MAX_FRAME_BYTES = 8 * 1024
MAX_TEXT_CHARS = 4000
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CLOSE_BAD_TOKEN = 4401

FAQS = {
    "refund": "如何申请退款?",
    "shipping": "多久可以发货?",
    "address": "如何修改收货地址?",
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Visitor:
    token: str
    visitor_id: str
    conversation_id: str
    status: str = "bot"
    durable: list[dict[str, Any]] = field(default_factory=list)
    stored: dict[str, str] = field(default_factory=dict)  # client id -> stored message id
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    dropped_once: set[str] = field(default_factory=set)

    @property
    def seq(self) -> int:
        return len(self.durable)


class FakeGateway:
    def __init__(self, *, bot_delay: float = 0.2, allowed_origins: tuple[str, ...] = ()) -> None:
        self.bot_delay = bot_delay
        self.allowed_origins = set(allowed_origins)
        self.visitors: dict[str, Visitor] = {}
        self.received: list[dict[str, Any]] = []  # every client frame, for assertions
        self._tasks: set[asyncio.Task[None]] = set()
        self._all_sockets: set[web.WebSocketResponse] = set()

    # ------------------------------------------------------------------ app

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._redirect)
        app.router.add_get("/chat", self._redirect)
        app.router.add_get("/chat/", self._static)
        app.router.add_get("/chat/ws", self._ws)
        app.router.add_get("/chat/{name}", self._static)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/chat/")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "index.html")
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        body = await asyncio.to_thread((STATIC_DIR / name).read_bytes)  # re-read: edits show on reload
        return web.Response(
            body=body,
            content_type=STATIC_FILES[name],
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    async def _on_shutdown(self, app: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        for ws in list(self._all_sockets):
            await ws.close(code=1001, message=b"server shutdown")

    # ------------------------------------------------------------------ websocket

    def _origin_ok(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # non-browser client
        return origin == f"{request.scheme}://{request.host}" or origin in self.allowed_origins

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not self._origin_ok(request):
            raise web.HTTPForbidden(text="origin not allowed")
        # Accept somewhat more than the limit so oversize frames get an error frame, not a close.
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES * 4)
        await ws.prepare(request)
        self._all_sockets.add(ws)
        visitor: Visitor | None = None
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await self._error(ws, visitor, "bad_frame", "binary frames are not supported")
                    continue
                if msg.type != WSMsgType.TEXT:
                    break
                if len(msg.data.encode()) > MAX_FRAME_BYTES:
                    await self._error(ws, visitor, "frame_too_large", f"frames are limited to {MAX_FRAME_BYTES} bytes")
                    continue
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    await self._error(ws, visitor, "bad_json", "frame is not valid JSON")
                    continue
                if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                    await self._error(ws, visitor, "bad_frame", "frame must be a JSON object with a 'type'")
                    continue
                self.received.append(frame)
                if visitor is None:
                    if frame["type"] != "hello":
                        await self._error(ws, None, "hello_required", "the first frame must be 'hello'")
                        continue
                    visitor = await self._hello(ws, frame)
                    if visitor is None:
                        break
                    continue
                await self._handle(ws, visitor, frame)
        finally:
            self._all_sockets.discard(ws)
            if visitor is not None:
                visitor.sockets.discard(ws)
        return ws

    async def _hello(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> Visitor | None:
        token = frame.get("token")
        last_seq = frame.get("last_seq", 0)
        if not isinstance(last_seq, int) or isinstance(last_seq, bool) or last_seq < 0:
            await self._error(ws, None, "bad_frame", "last_seq must be a non-negative integer")
            return None
        if token is None:
            token = secrets.token_urlsafe(24)
            visitor = Visitor(token, "v_" + secrets.token_hex(6), "c_" + secrets.token_hex(6))
            self.visitors[token] = visitor
        elif isinstance(token, str) and token in self.visitors:
            visitor = self.visitors[token]
        else:
            await self._error(ws, None, "bad_token", "unknown or expired token")
            await ws.close(code=CLOSE_BAD_TOKEN, message=b"bad token")
            return None
        visitor.sockets.add(ws)
        await self._send(
            ws,
            {
                "type": "welcome",
                "seq": visitor.seq,
                "token": visitor.token,
                "visitor_id": visitor.visitor_id,
                "conversation_id": visitor.conversation_id,
                "status": visitor.status,
            },
        )
        for durable in visitor.durable[last_seq:]:
            await self._send(ws, durable)
        return visitor

    async def _handle(self, ws: web.WebSocketResponse, v: Visitor, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "ping":
            await self._send(ws, {"type": "pong", "seq": v.seq})
        elif kind == "typing":
            if not isinstance(frame.get("on"), bool):
                await self._error(ws, v, "bad_frame", "'on' must be a boolean")
        elif kind in ("message", "pick"):
            cid = frame.get("id")
            if not isinstance(cid, str) or not CLIENT_ID_RE.match(cid):
                await self._error(ws, v, "bad_frame", "'id' must match [A-Za-z0-9_-]{1,64}")
                return
            if kind == "message":
                text = frame.get("text")
                if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT_CHARS:
                    await self._error(ws, v, "bad_frame", f"'text' must be 1..{MAX_TEXT_CHARS} characters", cid)
                    return
            else:
                faq_id = frame.get("faq_id")
                if faq_id not in FAQS:
                    await self._error(ws, v, "bad_frame", "unknown faq_id", cid)
                    return
                text = FAQS[faq_id]
            duplicate = cid in v.stored
            if not duplicate and "store-down-once" in text and cid not in v.dropped_once:
                v.dropped_once.add(cid)
                await self._error(ws, v, "store_unavailable", "the store is unreachable", cid, retry_after_s=1)
                return
            if not duplicate:
                v.stored[cid] = "m_" + secrets.token_hex(8)
                if "drop-before-ack" in text and cid not in v.dropped_once:
                    v.dropped_once.add(cid)
                    self._spawn(self._reply(v, text))
                    await ws.close(code=1012, message=b"test: dropped before ack")
                    return
            await self._send(
                ws,
                {"type": "ack", "seq": v.seq, "id": cid, "message_id": v.stored[cid], "duplicate": duplicate},
            )
            if not duplicate:
                self._spawn(self._reply(v, text))
        elif kind == "hello":
            await self._error(ws, v, "bad_frame", "hello was already received")
        else:
            await self._error(ws, v, "unknown_type", f"unknown frame type {kind!r}")

    # ------------------------------------------------------------------ the "bot"

    async def _reply(self, v: Visitor, text: str) -> None:
        if v.status in ("waiting_for_agent", "open"):
            return  # a human is handling it
        await self._broadcast(v, {"type": "typing", "seq": v.seq, "author": "bot", "on": True})
        await asyncio.sleep(self.bot_delay)
        if "转人工" in text or "human" in text.lower():
            await self._durable(v, {"type": "status", "status": "waiting_for_agent"})
            v.status = "waiting_for_agent"
            await self._durable(
                v, {"type": "message", "author": "system", "text": "已为您转接人工客服，请稍候。", "at": _now()}
            )
            await self._broadcast(v, {"type": "typing", "seq": v.seq, "author": "bot", "on": False})
            return
        reply: dict[str, Any] = {"type": "message", "author": "bot", "text": f"答: {text}", "at": _now()}
        if "?" in text or "？" in text:
            reply["suggestions"] = [{"faq_id": k, "question": q} for k, q in FAQS.items()]
        await self._durable(v, reply)
        if "sent-twice" in text:  # as after a server died between sending the reply and recording that it did
            await self._durable(v, {**reply, "message_id": v.durable[-1]["message_id"]})
        await self._broadcast(v, {"type": "typing", "seq": v.seq, "author": "bot", "on": False})

    # ------------------------------------------------------------------ sending

    async def _durable(self, v: Visitor, frame: dict[str, Any]) -> None:
        frame = {"type": frame["type"], "seq": v.seq + 1, **{k: x for k, x in frame.items() if k != "type"}}
        if frame["type"] == "message":
            frame.setdefault("message_id", "m_" + secrets.token_hex(8))
        v.durable.append(frame)
        await self._broadcast(v, frame)

    async def _broadcast(self, v: Visitor, frame: dict[str, Any]) -> None:
        for ws in list(v.sockets):
            await self._send(ws, frame)

    async def _error(
        self,
        ws: web.WebSocketResponse,
        v: Visitor | None,
        code: str,
        message: str,
        cid: str | None = None,
        *,
        retry_after_s: int | None = None,
    ) -> None:
        frame: dict[str, Any] = {"type": "error", "seq": v.seq if v else 0, "code": code, "message": message}
        if cid is not None:
            frame["id"] = cid
        if retry_after_s is not None:
            frame["retry_after_s"] = retry_after_s
        await self._send(ws, frame)

    @staticmethod
    async def _send(ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        if ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(json.dumps(frame, ensure_ascii=False))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@contextlib.asynccontextmanager
async def serve(host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> AsyncIterator[tuple[str, FakeGateway]]:
    """Run a FakeGateway on host:port (0 = any free port); yields (base_url, gateway)."""
    gateway = FakeGateway(**kwargs)
    runner = web.AppRunner(gateway.make_app())
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    try:
        yield f"http://{host}:{bound_port}", gateway
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    web.run_app(FakeGateway().make_app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
