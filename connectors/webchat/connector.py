"""Web chat over WebSocket: numbered, replayable frames so a reconnecting visitor misses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import orjson
from aiohttp import WSMsgType, web

from connectors.base import ACTIVE_PUSHES, ConnectorDeps, InboundSink, Rejected
from connectors.webchat.limits import CLOSE_RATE_LIMITED, Limits, Refused, client_address, is_trusted
from connectors.webchat.protocol import (
    ChatText,
    ClientFrame,
    FrameError,
    Hello,
    Pick,
    Ping,
    Typing,
    issue_token,
    parse_frame,
    verify_token,
)
from connectors.webchat.session import VisitorSession
from connectors.webchat.sweep import Beat, Sweeper
from connectors.webchat.wire import text_frame
from core.bus import Bus, bus_of
from core.config import WebchatInbox, business_hours_text
from core.jsonweb import json_response
from core.meta import suggestions_json, suggestions_of
from core.model import (
    Channel,
    Conversation,
    Delivery,
    DeliveryStatus,
    Identity,
    IdentityKind,
    InboundMessage,
    MessageKind,
    OutboundReply,
)
from core.outage import RETRY_AFTER_S
from core.store.base import StoreUnavailable
from core.store.types import Frame

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_STATIC = {"widget.js": "text/javascript", "widget.css": "text/css", "index.html": "text/html"}
_KEY_SECRET = "webchat:{inbox}:session-key"
_SESSION = "webchat:{inbox}:session:{visitor}"  # checkpoint: "live" while the token may resume; "revoked"
CLOSE_BAD_TOKEN = 4401
CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455: a hello the store could not answer; the widget reconnects with backoff
# A message's intake slot is held while the bot handles it (its reply is most of the message's store calls), but
# no longer than this: a slow handling must not keep other visitors' messages out for good.
HANDLING_HOLD_S = 10.0


# Bytes waiting in a socket's buffer above which its frames go through aiohttp's writer, which waits for the peer
# to read them (its own limit); below it an ack and its reply are written straight to the socket (wire.py).
_DIRECT_MAX = 1 << 16


def _read_assets() -> dict[str, bytes]:
    return {name: (STATIC_DIR / name).read_bytes() for name in _STATIC if (STATIC_DIR / name).is_file()}


def _encode(frame: dict[str, Any]) -> bytes:
    """A frame's JSON as the UTF-8 text frame carries it: orjson's compact form, in one step (``json.dumps`` made a
    str, built an encoder for ``ensure_ascii=False``, and the socket encoded the str again)."""
    return orjson.dumps(frame)


async def _send_text(session: _Session, text: bytes) -> None:
    """A frame to one socket; an ack still waiting (``_send_soon``) goes first, in the same write when it can."""
    if session.ws.closed:
        session.pending = None
        return
    pending = session.pending
    if pending is not None:
        session.pending = None
        transport = session.transport
        if transport is not None and not transport.is_closing() and transport.get_write_buffer_size() < _DIRECT_MAX:
            pending.append(text)
            transport.write(b"".join(map(text_frame, pending)))
            return
        for earlier in pending:  # the peer is slow to read: aiohttp's writer waits for it
            await _send_frame(session, earlier)
    await _send_frame(session, text)


async def _send_frame(session: _Session, text: bytes) -> None:
    try:
        await session.ws.send_frame(text, WSMsgType.TEXT)
    except (ConnectionError, RuntimeError) as exc:
        log.info("dropping frame for a closing socket: %s", exc)


def _send_soon(session: _Session, text: bytes) -> bool:
    """Hold a frame (an ack) to the end of this loop turn, so the frame that follows it (the bot's reply, sent by a
    task that runs first) goes in the same write: one send syscall instead of two. The CPU saved is small (~2 us
    a message under uvloop, in a loopback microbenchmark), but uvloop keeps the GIL through a send, and a loopback send
    wakes the client: the ack's send alone was ~9% of the GIL-held samples in a py-spy --gil profile of the web
    chat bench, time the store thread waited. False (send it now) on a socket with per-message compression, whose
    frames aiohttp's writer must make."""
    if session.ws.compress or session.transport is None:
        return False
    if session.pending is None:
        session.pending = [text]
        asyncio.get_running_loop().call_soon(_flush, session)
    else:
        session.pending.append(text)
    return True


def _flush(session: _Session) -> None:
    """What ``_send_soon`` held and no later frame took along: written now, alone."""
    pending, session.pending = session.pending, None
    transport = session.transport
    if pending is None or session.ws.closed or transport is None or transport.is_closing():
        return  # a closing socket: its frames are dropped, as _send_frame drops them
    transport.write(b"".join(map(text_frame, pending)))


def _reply_body(reply: OutboundReply) -> dict[str, Any]:
    """A reply's frame, all but its seq (the store numbers it)."""
    message = reply.message
    body: dict[str, Any] = {
        "type": "message",
        "message_id": message.id,
        "author": str(message.author),
        "text": message.text,
        "at": message.created_at.isoformat(),
    }
    suggestions = suggestions_of(message)
    if suggestions:
        body["suggestions"] = suggestions_json(suggestions)
    survey = message.meta.get("survey")
    if survey:  # the satisfaction survey's buttons: each sends its value as the customer's reply
        body["survey"] = [{"label": o["label"], "value": o["value"]} for o in survey]
    return body


class _Session(Beat):
    """One open socket and its state (connectors/webchat/session.py); ``address`` is set once the visitor said hello.
    ``peer`` is the client's network address, which the per-address limits count. As a ``Beat`` it is pinged by the
    connector's sweep when silent (connectors/webchat/sweep.py)."""

    __slots__ = ("peer", "pending", "state", "touched", "ws")

    def __init__(
        self, ws: web.WebSocketResponse, per_minute: int, peer: str, transport: asyncio.Transport | None
    ) -> None:
        now = time.monotonic()
        super().__init__(transport, now)
        self.ws = ws
        self.peer = peer
        self.state = VisitorSession(per_minute, now)
        self.touched = 0.0  # monotonic time the session's idle expiry was last pushed back
        self.pending: list[bytes] | None = None  # frames held to the end of the loop turn (_send_soon)

    @property
    def address(self) -> Identity | None:
        return self.state.address


class WebchatConnector:
    channel: ClassVar[Channel] = Channel.WEBCHAT

    def __init__(self, cfg: WebchatInbox, deps: ConnectorDeps) -> None:
        self.inbox = cfg.name
        self._cfg = cfg
        self._store = deps.store
        self._limits = Limits(cfg, deps.store)
        self._hours = deps.business_hours
        self._open_conversation = deps.open_conversation
        # Shared with the process's other inboxes: a burst of frames queues here, in order, instead of each store
        # call waiting out the Redis pool's timeout (6-135 failed per run at 200 visitors x 1 msg/s, 5,000 sockets).
        self._gate = deps.intake_gate if deps.intake_gate is not None else asyncio.Semaphore(ACTIVE_PUSHES)
        self._outage = deps.outage
        self._sink: InboundSink | None = None
        self._key = b""
        self._live: dict[Identity, set[_Session]] = {}
        self._locks: dict[Identity, asyncio.Lock] = {}
        self._last_seq: dict[Identity, int] = {}
        self._assets: dict[str, bytes] = {}
        # Many instances (Redis): a frame stored by one is announced on the bus to whichever holds the socket.
        self._bus: Bus | None = None
        self._instance = uuid.uuid4().hex
        self._sweeper = Sweeper(cfg.heartbeat_s)

    # Connector interface -------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        prefix = self._cfg.path.rstrip("/")
        routes = [
            web.get(f"{prefix}/", self._static("index.html")),
            *([web.get(prefix, self._to_slash)] if prefix else []),
            web.get(f"{prefix}/ws", self._websocket),
        ]
        routes += [web.get(f"{prefix}/{name}", self._static(name)) for name in _STATIC if name != "index.html"]
        return routes

    async def _to_slash(self, request: web.Request) -> web.StreamResponse:
        """``/chat`` is the page's folder: its relative links (``widget.js``) only work from ``/chat/``."""
        query = f"?{request.query_string}" if request.query_string else ""
        raise web.HTTPMovedPermanently(f"{request.path}/{query}")

    @asynccontextmanager
    async def running(self, sink: InboundSink) -> AsyncIterator[None]:
        self._key = bytes.fromhex(await self._session_key())
        self._bus = bus_of(self._store)
        # Read once: the files are small, and reading them per request would block the loop.
        assets = await asyncio.to_thread(_read_assets)
        if "index.html" in assets:  # the demo page states the configured hours, not hours of its own
            hours = html.escape(business_hours_text(self._hours)).encode()
            assets["index.html"] = assets["index.html"].replace(b"{business_hours}", hours)
        self._assets = assets
        self._sink = sink
        sweeping = asyncio.create_task(self._sweeper.run(), name=f"webchat-sweep:{self.inbox}")
        try:
            yield
        finally:
            self._sink = None
            await self.drain()
            sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeping

    async def _session_key(self) -> str:
        """The inbox's token key, shared by every instance: one creates it, the others wait for it."""
        name = _KEY_SECRET.format(inbox=self.inbox)
        for _ in range(100):
            key = await self._store.get_secret(name, datetime.now(UTC))
            if key is not None:
                return key
            if await self._store.claim(f"{name}:create", 10):
                await self._store.set_secret(name, secrets.token_hex(32), None)
            else:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"web chat inbox {self.inbox}: no session key appeared in the store")

    def is_running(self) -> bool:
        return self._sink is not None

    async def drain(self) -> None:
        sessions = [s for group in self._live.values() for s in group]
        await asyncio.gather(
            *(s.ws.close(code=1001, message=b"server shutting down") for s in sessions), return_exceptions=True
        )

    async def send(self, reply: OutboundReply) -> Delivery:
        live = await self._push(reply.address, _reply_body(reply))
        return Delivery(status=DeliveryStatus.SENT if live else DeliveryStatus.QUEUED, external_id=reply.message.id)

    def reply_frame(self, reply: OutboundReply) -> tuple[Frame, Delivery]:
        """Sent if a socket of the visitor is open here now; queued otherwise, until ``send_frame`` hears from
        other instances (a reply finds a socket elsewhere, or none: it waits in the frame log for the visitor)."""
        live = bool(self._live.get(reply.address))
        status = DeliveryStatus.SENT if live else DeliveryStatus.QUEUED
        delivery = Delivery(status=status, external_id=reply.message.id)
        return Frame(address=reply.address, body=_reply_body(reply)), delivery

    async def send_frame(self, reply: OutboundReply, frame: Frame, seq: int) -> Delivery:
        async with self._lock(reply.address):
            live = await self._send_in_order(reply.address, frame.body, seq)
        self._forget(reply.address)
        return Delivery(status=DeliveryStatus.SENT if live else DeliveryStatus.QUEUED, external_id=reply.message.id)

    async def notify(self, conversation: Conversation) -> None:
        await self._push(conversation.address, {"type": "status", "status": str(conversation.status)})

    async def typing(self, address: Identity, *, author: str, on: bool) -> bool:
        """An ephemeral typing frame to the visitor's open sockets; False when none is open."""
        sessions = self._live.get(address, set())
        frame = {"type": "typing", "seq": self._last_seq.get(address, 0), "author": author, "on": on}
        await self._send_all(sessions, frame)
        if self._bus is not None:
            payload = json.dumps({"from": self._instance, "frame": {k: v for k, v in frame.items() if k != "seq"}})
            return await self._bus.publish(self._channel(address), payload) > 0 or bool(sessions)
        return bool(sessions)

    # frames ------------------------------------------------------------------------
    def _lock(self, address: Identity) -> asyncio.Lock:
        lock = self._locks.get(address)  # not setdefault: that built a Lock per frame sent, to throw it away
        if lock is None:
            lock = self._locks[address] = asyncio.Lock()
        return lock

    async def _push(self, address: Identity, body: dict[str, Any]) -> bool:
        """Store the frame first (it gets its seq), then send it to every open socket, in seq order."""
        async with self._lock(address):
            seq = await self._store.push_frame(address, body)
            live = await self._send_in_order(address, body, seq)
        self._forget(address)
        return live

    async def _send_in_order(self, address: Identity, body: dict[str, Any], seq: int) -> bool:
        """Under the address lock: stored frame ``seq`` to this instance's sockets, announced to the others; True
        when a socket of the visitor is open somewhere. The next in line goes as it is, not read back from the
        store (one round trip fewer per frame); frames stored since the last one sent here (by another write or
        another instance) go first, read back, so every socket sees seq order with no gaps; a frame a hello
        already replayed is not sent twice."""
        sessions = self._live.get(address, set())
        last = self._last_seq.get(address, 0)
        if sessions and seq == last + 1:
            self._last_seq[address] = seq
            await self._send_all(sessions, {**body, "seq": seq})
        elif sessions and seq > last:
            await self._catch_up(address)
        if self._bus is None:
            return bool(sessions)
        poke = json.dumps({"from": self._instance, "seq": seq})
        elsewhere = await self._bus.publish(self._channel(address), poke) - (1 if sessions else 0)
        return bool(sessions) or elsewhere > 0

    # many instances -------------------------------------------------------------------
    def _channel(self, address: Identity) -> str:
        return f"webchat:{self.inbox}:{address}"

    async def _catch_up(self, address: Identity) -> None:
        """Under the address lock: send this instance's sockets what other instances stored since."""
        sessions = self._live.get(address)
        if not sessions:
            return
        for stored in await self._store.frames_after(address, self._last_seq.get(address, 0)):
            frame = {**stored.body, "seq": stored.seq}
            await self._send_all(sessions, frame)
            self._last_seq[address] = stored.seq

    async def _on_bus(self, address: Identity, payload: str) -> None:
        note = json.loads(payload)
        if note.get("from") == self._instance:
            return  # our own frame: already sent in _push
        if note.get("revoke"):
            await self._close_revoked(address)
            return
        async with self._lock(address):
            if "frame" in note:
                frame = {**note["frame"], "seq": self._last_seq.get(address, 0)}
                await self._send_all(self._live.get(address, set()), frame)
            else:
                await self._catch_up(address)
        self._forget(address)  # a note for a visitor with no socket here must not leave a lock behind

    def _forget(self, address: Identity) -> None:
        """Per-visitor state lives only while a socket is open or a push is under way: no slow leak."""
        lock = self._locks.get(address)
        if address not in self._live and (lock is None or not lock.locked()):
            self._locks.pop(address, None)
            self._last_seq.pop(address, None)

    @staticmethod
    async def _send(session: _Session, frame: dict[str, Any]) -> None:
        await _send_text(session, _encode(frame))

    @staticmethod
    async def _send_all(sessions: Collection[_Session], frame: dict[str, Any]) -> None:
        """One frame to a visitor's open sockets, serialized once; a lone socket (the usual case) is sent to
        without a task and a gather around it."""
        if not sessions:
            return
        text = _encode(frame)
        if len(sessions) == 1:
            await _send_text(next(iter(sessions)), text)
        else:
            await asyncio.gather(*(_send_text(s, text) for s in sessions))

    def _seq(self, session: _Session) -> int:
        return self._last_seq.get(session.address, 0) if session.address else 0

    async def _error(
        self, session: _Session, code: str, message: str, client_id: str | None = None, **extra: Any
    ) -> None:
        frame: dict[str, Any] = {"type": "error", "seq": self._seq(session), "code": code, "message": message}
        if client_id is not None:
            frame["id"] = client_id
        await self._send(session, {**frame, **extra})

    async def _refused(self, session: _Session, exc: Refused, client_id: str | None) -> None:
        log.info("web chat limit for %s: %s", session.peer, exc.message)
        await self._error(session, exc.code, exc.message, client_id, retry_after_s=exc.retry_after_s)

    # sessions -------------------------------------------------------------------------
    def _session_key_of(self, visitor: str) -> str:
        return _SESSION.format(inbox=self.inbox, visitor=visitor)

    async def _touch(self, session: _Session, visitor: str) -> None:
        """Push the token's idle expiry back; at most every tenth of it, so a busy chat costs few writes."""
        now = time.monotonic()
        if session.touched and now - session.touched < self._cfg.session_idle_s / 10:
            return
        await self._store.set_checkpoint(self._session_key_of(visitor), "live", ttl_s=self._cfg.session_idle_s)
        session.touched = now

    async def revoke(self, visitor: str) -> bool:
        """Refuse the visitor's token from now on and close their sockets on every instance; False if the
        session had already expired (or never was)."""
        key = self._session_key_of(visitor)
        was = await self._store.get_checkpoint(key)
        await self._store.set_checkpoint(key, "revoked", ttl_s=self._cfg.session_idle_s)
        address = Identity(IdentityKind.WEBCHAT_VISITOR, visitor)
        await self._close_revoked(address)
        if self._bus is not None:
            await self._bus.publish(self._channel(address), json.dumps({"from": self._instance, "revoke": True}))
        return was == "live"

    async def _close_revoked(self, address: Identity) -> None:
        sessions = list(self._live.get(address, ()))
        for session in sessions:
            await self._error(session, "bad_token", "session revoked; start again without a token")
        await asyncio.gather(
            *(s.ws.close(code=CLOSE_BAD_TOKEN, message=b"session revoked") for s in sessions), return_exceptions=True
        )

    # HTTP ---------------------------------------------------------------------------
    def _static(self, name: str) -> Any:
        framers = " ".join(o for o in self._cfg.allowed_origins if o != "*")
        headers = {
            "Content-Type": f"{_STATIC[name]}; charset=utf-8",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
            # The page runs our own script only, talks to its own origin only, and may be framed only by the
            # sites allowed to open chats (clickjacking); the demo page's inline styles are its only exception.
            "Content-Security-Policy": (
                "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
                f" connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self' {framers}"
            ).strip(),
            "X-Frame-Options": "SAMEORIGIN",
            "Referrer-Policy": "strict-origin-when-cross-origin",
        }

        async def handler(request: web.Request) -> web.StreamResponse:
            body = self._assets.get(name)
            if body is None:
                raise web.HTTPNotFound(text=f"{name} is missing from this installation")
            return web.Response(body=body, headers=headers)

        return handler

    def _origin_allowed(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser: cross-site WebSocket hijacking needs one
        allowed = self._cfg.allowed_origins
        if "*" in allowed:
            return True
        if not allowed:
            return origin == self._own_origin(request)
        return origin in allowed

    def _own_origin(self, request: web.Request) -> str:
        """This page's origin as the browser sees it: behind a trusted proxy, as X-Forwarded-* say."""
        scheme, host = request.scheme, request.host
        if is_trusted(request.remote or "", self._cfg.trusted_proxies):
            scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip().lower()
            host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
        return f"{scheme}://{host}"

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not self._origin_allowed(request):
            raise web.HTTPForbidden(text="origin not allowed for this chat inbox")
        if self._sink is None:
            raise web.HTTPServiceUnavailable(text="chat is not running")
        peer = client_address(request.remote, request.headers.get("X-Forwarded-For", ""), self._cfg.trusted_proxies)
        try:
            with self._limits.socket(peer):
                async with self._gate:  # a burst of upgrades queues for its one store call too
                    await self._limits.connection(peer)
                return await self._serve_socket(request, peer)
        except Refused as exc:
            log.info("web chat refused %s: %s", peer, exc.message)
            return json_response(
                {"error": {"code": exc.code, "message": exc.message, "retry_after_s": exc.retry_after_s}},
                status=exc.status,
                headers={"Retry-After": str(exc.retry_after_s)},
            )

    async def _serve_socket(self, request: web.Request, peer: str) -> web.WebSocketResponse:
        # aiohttp closes the socket above max_msg_size; our own, lower limit answers with an error frame instead.
        # Heartbeats are the connector's sweep's (sweep.py), not a timer per socket: aiohttp sends no pings here
        # and hands pings and pongs to this loop (autoping off), which answers pings itself.
        ws = web.WebSocketResponse(autoping=False, max_msg_size=max(4 * self._cfg.max_frame_bytes, 1 << 16))
        await ws.prepare(request)
        session = _Session(ws, self._cfg.frames_per_minute, peer, request.transport)
        self._sweeper.add(session)
        try:
            async for msg in ws:
                kind = msg.type
                if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                    await self._on_frame(session, msg.data)
                elif kind is WSMsgType.PONG:
                    session.heard(time.monotonic())
                elif kind is WSMsgType.PING:
                    session.heard(time.monotonic())
                    await ws.pong(msg.data)
                elif kind is WSMsgType.ERROR:
                    log.info("web chat socket error: %s", ws.exception())
        finally:
            self._sweeper.discard(session)
            address = session.state.closed()
            if address is not None:
                group = self._live.get(address)
                if group is not None:
                    group.discard(session)
                    if not group:
                        self._live.pop(address, None)
                        if self._bus is not None:
                            with contextlib.suppress(Exception):  # the store may be closing already
                                await self._bus.unsubscribe(self._channel(address))
                self._forget(address)
        return ws

    async def _on_frame(self, session: _Session, data: str | bytes) -> None:
        now = time.monotonic()
        session.heard(now)
        if not session.state.take(now):
            await self._error(session, "rate_limited", "too many frames; slow down")
            return
        try:
            frame = parse_frame(data, max_bytes=self._cfg.max_frame_bytes, max_text_chars=self._cfg.max_text_chars)
            await self._dispatch(session, frame)
        except FrameError as exc:
            await self._error(session, exc.code, exc.message, exc.client_id)
        except Refused as exc:
            await self._refused(session, exc, None if isinstance(frame, Hello) else getattr(frame, "id", None))
            if isinstance(frame, Hello):  # no visitor may be opened here for a while: say when, and hang up
                await session.ws.close(code=CLOSE_RATE_LIMITED, message=b"rate limited")
        except StoreUnavailable as exc:  # no traceback per frame: one line per interval says it
            await self._store_down(session, frame, exc)
        except Exception:  # one visitor's bad luck never takes down the server or other sessions
            log.exception("web chat frame failed")
            await self._error(session, "internal", "the server could not handle this frame; try again")
        else:
            if not isinstance(frame, Typing | Ping):  # the store answered this frame
                self._outage.recovered()

    async def _store_down(self, session: _Session, frame: ClientFrame, exc: StoreUnavailable) -> None:
        """The store is unreachable (down, or no pooled connection in time): say "retry later", as the HTTP side's
        503 + Retry-After does. A message may or may not have been kept; its resend with the same id is stored
        once (deduplicated on the visitor's client id), so the client resends and nothing is lost or doubled."""
        self._outage.report(f"web chat {self.inbox}", exc)
        await self._error(
            session,
            "store_unavailable",
            "the store is unreachable; send this again shortly with the same id",
            getattr(frame, "id", None),
            retry_after_s=RETRY_AFTER_S,
        )
        if isinstance(frame, Hello) and session.address is None:  # no welcome: the client starts over
            await session.ws.close(code=CLOSE_TRY_AGAIN_LATER, message=b"store unavailable")

    async def _dispatch(self, session: _Session, frame: ClientFrame) -> None:
        if isinstance(frame, Hello):
            async with self._gate:  # its store reads (and a new visitor's conversation) queue with messages
                await self._hello(session, frame)
            return
        visitor = session.state.visitor()
        if isinstance(frame, ChatText):
            await self._inbound(session, frame.id, frame.text, None)
        elif isinstance(frame, Pick):
            await self._inbound(session, frame.id, "", frame.faq_id)
        elif isinstance(frame, Typing):
            log.debug("visitor %s typing=%s", visitor, frame.on)
        elif isinstance(frame, Ping):
            await self._send(session, {"type": "pong", "seq": self._seq(session)})

    async def _hello(self, session: _Session, hello: Hello) -> None:
        session.state.check_hello()
        if hello.token is None:
            await self._limits.new_visitor(session.peer)
            visitor = uuid.uuid4().hex
        else:
            found = verify_token(hello.token, self._key)
            state = await self._store.get_checkpoint(self._session_key_of(found)) if found else None
            if found is None or state != "live":
                why = "session token is not valid" if found is None else f"session {state or 'expired'}"
                await self._error(session, "bad_token", f"{why}; start again without one")
                await session.ws.close(code=CLOSE_BAD_TOKEN, message=b"bad token")
                return
            visitor = found
        await self._touch(session, visitor)
        address = Identity(IdentityKind.WEBCHAT_VISITOR, visitor)
        # A new visitor's id was made just now: nothing can be stored for it yet, so its hello reads nothing
        # (3 store round trips fewer; 5,000 sockets opening at once on Redis queued on the pool for them).
        new = hello.token is None
        conversation = None if new else await self._store.find_conversation(self.inbox, address)
        if conversation is None and self._open_conversation is not None:
            # A new visitor gets its conversation now, so the page (and an agent tool it hands the id to) knows it
            # before the first message; the first message then lands in this same conversation.
            conversation = await self._open_conversation(address, self.channel, self.inbox)
        async with self._lock(address):
            if self._bus is not None:
                if address not in self._live:  # subscribe before reading, so no announcement falls in between
                    await self._bus.subscribe(self._channel(address), partial(self._on_bus, address))
                await self._catch_up(address)
            missed = [] if new else await self._store.frames_after(address, hello.last_seq)
            last = missed[-1].seq if missed else 0 if new else await self._store.last_frame_seq(address)
            self._last_seq[address] = last
            session.state.greeted(address)
            await self._send(
                session,
                {
                    "type": "welcome",
                    "seq": last,
                    "token": issue_token(visitor, self._key),
                    "visitor_id": visitor,
                    "conversation_id": conversation.id if conversation else None,
                    "status": str(conversation.status) if conversation else "bot",
                },
            )
            for stored in missed:
                await self._send(session, {**stored.body, "seq": stored.seq})
            self._live.setdefault(address, set()).add(session)

    def _release_after(self, handled: asyncio.Task[None]) -> None:
        """Give the intake slot back when the bot has handled the message (or after ``HANDLING_HOLD_S``, and at most
        one sweep's tick more: the sweep ends it, not a timer per message), without holding up this socket's next
        frame meanwhile."""
        hold = self._sweeper.hold(self._gate.release, time.monotonic() + HANDLING_HOLD_S)
        handled.add_done_callback(hold.end)

    async def _inbound(self, session: _Session, client_id: str, text: str, picked: str | None) -> None:
        sink = self._sink
        if sink is None or session.address is None:
            raise FrameError("unavailable", "chat is shutting down; reconnect shortly")
        await self._gate.acquire()
        handled: asyncio.Task[None] | None = None
        try:
            if not session.touched or time.monotonic() - session.touched >= self._cfg.session_idle_s / 10:
                await self._touch(session, session.address.value)
            now = datetime.now(UTC)
            result = await sink(
                InboundMessage(
                    channel=Channel.WEBCHAT,
                    inbox=self.inbox,
                    external_id=f"{session.address.value}:{client_id}",
                    sender=session.address,
                    text=text,
                    kind=MessageKind.TEXT,
                    sent_at=now,
                    received_at=now,
                    picked_faq=picked,
                    # compact, as the stores keep JSON: orjson's 0.2 us where json.dumps(ensure_ascii=False) took
                    # 2.4 us and ~3% of the server's CPU per message in a py-spy --gil profile of the bench
                    raw=orjson.dumps({"id": client_id, "text": text, "faq_id": picked}).decode(),
                )
            )
            handled = result.handled
        except Rejected as exc:
            raise FrameError("bad_frame", str(exc), client_id) from None
        finally:
            if handled is None:
                self._gate.release()
            else:
                self._release_after(handled)
        ack = _encode(
            {
                "type": "ack",
                "seq": self._seq(session),
                "id": client_id,
                "message_id": result.message.id,
                "duplicate": result.duplicate,
            }
        )
        if not _send_soon(session, ack):
            await _send_text(session, ack)
