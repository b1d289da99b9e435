"""WeChat Official Account inbox: the signed callback URL in, passive replies or the customer-service API out."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from connectors.base import ACTIVE_PUSHES, ConnectorDeps, InboundSink, IntakeResult, Rejected, stored_as
from connectors.wechat import crypto, render
from connectors.wechat.api import ApiError, ApiUnavailable, WechatApi
from connectors.wechat.parse import Action, Push, PushError, parse_push, read_xml
from connectors.wechat.signature import verify
from connectors.wechat.window import ReplyWindow, Verdict
from core.config import WechatInbox
from core.model import (
    Admission,
    Channel,
    ContactFlag,
    Delivery,
    DeliveryStatus,
    Direction,
    IdentityKind,
    InboundMessage,
    Message,
    MessageKind,
    OutboundReply,
    QuarantinedItem,
    greeting_key,
    inline_delivery,
    reply_key,
)
from core.observe import token_refresh_key
from core.store.types import AdmissionRefused

log = logging.getLogger(__name__)

SUCCESS = "success"  # WeChat's "received, no reply": it neither retries nor shows an error
# How long a send() handed to a passive reply waits to hear whether the response went out.
WRITE_WAIT_S = 5.0
# How long the lease that says who delivers a bot reply (a retry's response or the customer-service API) is
# kept: far longer than WeChat's retries (three, seconds apart) or a restart takes.
DELIVERED_TTL_S = 2 * 86400
# WeChat waits 5 s for an answer and retries a push three times: within this long after a passive reply was
# written, a retry means it was lost; no retry by then means it arrived.
RETRY_WINDOW_S = 20.0
_RETRY = {"Retry-After": "1"}
# How long a push whose reply is being stored as its response's waits for that write past the budget: longer
# than the store's pool and socket timeouts together, so it is their answer (stored, or an error) that counts.
COMMITTED_WAIT_S = 30.0
# Errors that mean the customer cannot be reached this way now; never retried blindly.
PERMANENT: dict[int, str] = {
    45015: "window_closed",
    45047: "quota_exhausted",
    43004: "unsubscribed",
    40003: "invalid_recipient",
    45009: "api_quota",
}


def unsubscribed_flag(inbox: str) -> str:
    """Per inbox: with a unionid one contact may follow two Official Accounts and leave only one."""
    return f"unsubscribed:wechat:{inbox}"


@dataclass(slots=True)
class _Waiter:
    """A push waiting for the bot's reply, so the reply can ride back in the POST response."""

    reply: asyncio.Future[OutboundReply]
    written: asyncio.Future[bool]
    # The reply is being stored as this response's (``inline_delivery``): the push waits for it past the budget.
    committed: bool = False


class WechatConnector:
    channel: ClassVar[Channel] = Channel.WECHAT

    def __init__(self, cfg: WechatInbox, deps: ConnectorDeps) -> None:
        self.inbox = cfg.name
        self._cfg = cfg
        self._store = deps.store
        self._tasks = deps.tasks
        self._observer = deps.observer
        self._key = crypto.aes_key(cfg.encoding_aes_key) if cfg.encoding_aes_key else None
        self._window = ReplyWindow(deps.store, cfg.name)
        self._sink: InboundSink | None = None
        self._api: WechatApi | None = None
        self._waiters: dict[str, _Waiter] = {}
        self._active = deps.intake_gate if deps.intake_gate is not None else asyncio.Semaphore(ACTIVE_PUSHES)
        self._answering: set[str] = set()  # pushes whose first delivery is still being answered here
        # External ids of pushes intake is still taking in here: intake stores a greeting before it returns,
        # and a concurrent retry must not answer with it while the first delivery will.
        self._receiving: collections.Counter[str] = collections.Counter()

    # Connector interface ---------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        path = f"/wechat/{self.inbox}"
        return [web.get(path, self._verify_url), web.post(path, self._push)]

    @asynccontextmanager
    async def running(self, sink: InboundSink) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=self._cfg.api_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            self._api = WechatApi(
                http=http,
                store=self._store,
                base=self._cfg.api_base,
                app_id=self._cfg.app_id,
                app_secret=self._cfg.app_secret,
                on_error=lambda code: self._observer.api_error(Channel.WECHAT, self.inbox, code),
                health_key=token_refresh_key(self.inbox),
            )
            self._sink = sink
            try:
                yield
            finally:
                self._sink = None
                self._api = None

    def is_running(self) -> bool:
        return self._sink is not None

    def inline_delivery(self, in_reply_to: str) -> Delivery | None:
        """While the push still waits, its reply goes back in the response: stored as sent, in its own write."""
        waiter = self._waiters.get(in_reply_to)
        if waiter is None or waiter.reply.done():
            return None
        waiter.committed = True
        return inline_delivery(in_reply_to)

    async def send(self, reply: OutboundReply) -> Delivery:
        """Hand the reply to its push's POST response while that still waits; else the customer-service API."""
        waiter = self._waiters.pop(reply.in_reply_to, None) if reply.in_reply_to else None
        if waiter is not None and not waiter.reply.done():
            waiter.reply.set_result(reply)
            try:
                written = await asyncio.wait_for(asyncio.shield(waiter.written), WRITE_WAIT_S)
            except TimeoutError:
                written = False
            if written:
                return inline_delivery(reply.in_reply_to)
            if waiter.committed:
                # Stored as sent, and the response did not go out: the outbox takes it back, and WeChat, which
                # got no answer, retries the push. The retry's response or the customer-service API (on the
                # outbox's retry) carries it, whichever comes first; the delivered lease lets only one.
                log.info("passive reply for %s did not go out; it waits for a retry or the API", reply.in_reply_to)
                return Delivery(status=DeliveryStatus.RETRYABLE, error="the passive reply was not written")
            log.info("passive reply for %s did not go out; using the customer-service API", reply.in_reply_to)
            return await self._send_custom(reply)
        if reply.in_reply_to is not None:
            attempted = await self._store.get_checkpoint(self._passive_key(reply.in_reply_to))
            if attempted is not None:
                return await self._after_passive(reply, float(attempted))
        return await self._send_custom(reply)

    async def _after_passive(self, reply: OutboundReply, attempted_at: float) -> Delivery:
        """A reply whose passive write was under way when its process died (it is being resent): the customer
        has it unless WeChat retried the push, and a retry's response carries it. So wait out the retries,
        then count it delivered rather than send it a second time through the customer-service API."""
        if time.time() - attempted_at < RETRY_WINDOW_S:
            return Delivery(status=DeliveryStatus.RETRYABLE, error="waiting out WeChat's retries of the push")
        if await self._store.lease(self._delivered_key(reply.message), "api", DELIVERED_TTL_S):
            log.info("inbox %s: no retry of %s came: its passive reply arrived", self.inbox, reply.in_reply_to)
        return inline_delivery(reply.in_reply_to)

    def _passive_key(self, push_id: str) -> str:
        return f"wechat:passive:{self.inbox}:{push_id}"

    # customer-service API ----------------------------------------------------------------------------
    async def _send_custom(self, reply: OutboundReply) -> Delivery:
        api = self._api
        if api is None:
            return Delivery(status=DeliveryStatus.RETRYABLE, error="WeChat inbox is not running")
        if reply.address.kind is not IdentityKind.WECHAT_OPENID:
            return Delivery(
                status=DeliveryStatus.FAILED, error=f"not a WeChat openid: {reply.address}", reason="invalid_recipient"
            )
        openid = reply.address.value
        if reply.in_reply_to is not None and not await self._store.lease(
            self._delivered_key(reply.message), "api", DELIVERED_TTL_S
        ):
            # A retry of the push already carried this reply back in its response.
            return inline_delivery(reply.in_reply_to)
        verdict = await self._window.take(openid, datetime.now(UTC))
        if verdict in (Verdict.WINDOW_CLOSED, Verdict.QUOTA_EXHAUSTED):
            return Delivery(
                status=DeliveryStatus.FAILED, error=f"WeChat would refuse it: {verdict}", reason=str(verdict)
            )
        try:
            await api.send_custom(render.custom_payload(openid, reply.message))
        except ApiUnavailable as exc:
            return Delivery(status=DeliveryStatus.RETRYABLE, error=str(exc))
        except ApiError as exc:
            reason = PERMANENT.get(exc.errcode, "wechat_error")
            return Delivery(status=DeliveryStatus.FAILED, error=str(exc), reason=reason)
        return Delivery(status=DeliveryStatus.SENT)

    # HTTP --------------------------------------------------------------------------------------------
    def _authenticate(self, request: web.Request) -> tuple[str, str]:
        """The URL signature and the timestamp window; returns (timestamp, nonce)."""
        q = request.query
        signature, timestamp, nonce = q.get("signature", ""), q.get("timestamp", ""), q.get("nonce", "")
        if not (signature and timestamp and nonce) or not verify(signature, self._cfg.token, timestamp, nonce):
            raise web.HTTPForbidden(text="bad or missing signature")
        try:
            skew = abs(time.time() - int(timestamp))
        except ValueError:
            raise web.HTTPForbidden(text="timestamp must be a Unix timestamp") from None
        if skew > self._cfg.timestamp_window_s:
            raise web.HTTPForbidden(text="timestamp outside the accepted window")
        return timestamp, nonce

    async def _verify_url(self, request: web.Request) -> web.StreamResponse:
        """WeChat's URL check when the callback is configured: echo ``echostr`` back if signed right."""
        self._authenticate(request)
        return web.Response(text=request.query.get("echostr", ""))

    async def _read_capped(self, request: web.Request) -> bytes:
        limit = self._cfg.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        chunks, size = [], 0
        while chunk := await request.content.read(1 << 16):
            size += len(chunk)
            if size > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _push(self, request: web.Request) -> web.StreamResponse:
        sink = self._sink
        if sink is None:
            raise web.HTTPServiceUnavailable(text="WeChat inbox is not running")
        body = await self._read_capped(request)
        timestamp, nonce = self._authenticate(request)
        ttl = min(2 * self._cfg.timestamp_window_s + 60, 2 * 86400)
        # The nonce is held for this body: WeChat's byte-identical retry passes again (a delivery that died
        # before its message was stored is not lost), while the signed query with any other body is refused
        # before anything is written. Whether the message is stored already is the dedupe key's business.
        # Parsing writes nothing, so it goes first: the claim then rides on intake's first store call.
        admission = Admission(
            key=f"wechat:nonce:{self.inbox}:{timestamp}:{nonce}", holder=hashlib.sha256(body).hexdigest(), ttl_s=ttl
        )
        encrypted = request.query.get("encrypt_type", "raw").lower() == "aes"
        now = datetime.now(UTC)
        try:
            xml = self._open(body, encrypted, request.query.get("msg_signature", ""), timestamp, nonce)
            push = parse_push(xml, inbox=self.inbox, received_at=now, menu_faq=self._cfg.menu_faq)
        except PushError as exc:
            await self._admit(admission)
            await self._quarantine(body, f"{exc.code}: {exc.message}", now)
            raise web.HTTPBadRequest(text=exc.message) from None
        except crypto.CryptoError as exc:
            await self._admit(admission)
            await self._quarantine(body, f"undecryptable: {exc}", now)
            raise web.HTTPBadRequest(text=f"cannot decrypt: {exc}") from None

        # A burst queues here, past parsing, instead of on the store's connection pool: a push taken in gets its
        # store calls answered promptly, where 500 at once each waiting for a pooled connection per round trip
        # ran past the pool's timeout (a 503) on a busy machine.
        async with self._active:
            return await self._take_in(request, sink, push, admission, body, encrypted, now)

    async def _take_in(
        self,
        request: web.Request,
        sink: InboundSink,
        push: Push,
        admission: Admission,
        body: bytes,
        encrypted: bool,
        now: datetime,
    ) -> web.StreamResponse:
        """The push, parsed and signed: taken in, answered once, and the reply (if any) in its response."""
        try:
            inbound = self._reported(push, now, admission, inline=True)
            self._receiving[inbound.external_id] += 1  # counted: a concurrent retry takes it in too
            try:
                result = await self._intake(sink, inbound)
            finally:
                self._receiving[inbound.external_id] -= 1
                if self._receiving[inbound.external_id] <= 0:
                    del self._receiving[inbound.external_id]
        except web.HTTPException:
            raise
        except AdmissionRefused:  # the signed query with another body: nothing was written
            raise web.HTTPForbidden(text="replayed nonce") from None
        except Exception as exc:
            # WeChat retries three times and then drops the push: keep it for ``huiliu quarantine replay``
            # (when the store itself failed, this fails too, and the retries are what is left).
            with contextlib.suppress(Exception):
                await self._quarantine(body, f"intake failed: {type(exc).__name__}: {exc}", now)
            raise
        if result.duplicate:
            text = await self._answer_again(result.message)
            if text is None:
                return web.Response(text=SUCCESS)
            return (await self._write_passive(request, push, text, encrypted))[0]
        self._answering.add(result.message.id)
        waiter = None
        if result.handled is not None:
            loop = asyncio.get_running_loop()
            # Registered before the next await, so the bot's reply cannot slip past it.
            waiter = _Waiter(reply=loop.create_future(), written=loop.create_future())
            self._waiters[result.message.id] = waiter
        try:
            if result.reply is not None:  # stored with the message, as sent in this response
                return await self._write_stored_reply(request, push, result, encrypted)
            text = inbound.greeting  # intake stored it, for the passive reply
            if text is None and waiter is not None and result.handled is not None:
                # The reply comes stored as sent (``inline_delivery``): if this process dies before the write,
                # WeChat's retry finds it stored and its response carries it (see _answer_again).
                reply = await self._await_reply(result.message.id, waiter, result.handled)
                text = render.plain_text(reply.message) if reply is not None else None
                if reply is None and waiter.committed:
                    # Being stored as this response's, and it did not come (the store failed or is slow): it may
                    # be stored as sent, so "success" could lose it. WeChat retries and the retry answers.
                    return web.Response(status=503, text="the reply is not stored yet; retry", headers=_RETRY)
            if text is None:
                return web.Response(text=SUCCESS)
            response, written = await self._write_passive(request, push, text, encrypted)
            if waiter is not None and not waiter.written.done():
                waiter.written.set_result(written)
            return response
        finally:
            self._answering.discard(result.message.id)
            self._waiters.pop(result.message.id, None)
            if waiter is not None and not waiter.written.done():
                waiter.written.set_result(False)

    async def _write_stored_reply(
        self, request: web.Request, push: Push, result: IntakeResult, encrypted: bool
    ) -> web.StreamResponse:
        """The bot's reply intake stored with the push's message, as sent in this response: written now. If the
        write fails (WeChat hung up), intake's ``unsent`` sends it the other way (the customer-service API),
        unless a retry of the push carries it first: the delivered lease lets only one of them deliver it."""
        assert result.reply is not None
        response, written = await self._write_passive(request, push, render.plain_text(result.reply), encrypted)
        if not written and result.unsent is not None:
            log.info("passive reply for %s did not go out; using the customer-service API", result.message.id)
            self._tasks.spawn(result.unsent(), name=f"wechat-unsent:{result.reply.id}")
        return response

    async def _answer_again(self, message: Message) -> str | None:
        """What a retried push is answered with: the stored reply to it, if nobody delivered that yet.

        WeChat retries a push only when it got no answer, so a reply stored for it never reached the customer
        when the process died before writing the response, or when the response was lost on the way. The
        retry's response carries it now. A lease in the store makes sure only one way delivers it: retries'
        responses, or the customer-service API (a late reply, or recovery after a restart).
        """
        if message.id in self._answering or message.external_id in self._receiving:
            return None  # the first delivery is still being answered (a concurrent retry): it answers
        for key in (reply_key(message.id), greeting_key(message.id)):
            reply = await self._store.find_message(
                channel=Channel.WECHAT, inbox=self.inbox, direction=Direction.OUTBOUND, external_id=key
            )
            if reply is not None:
                # Every retry gets it (each says the answer before did not arrive), until the API sends it.
                if not await self._store.lease(self._delivered_key(reply), "retry", DELIVERED_TTL_S):
                    return None  # the customer-service API has it (sent, or failed with a reason)
                log.info("inbox %s: answering the retry of %s with its stored reply", self.inbox, message.id)
                return render.plain_text(reply)
        return None

    def _delivered_key(self, reply: Message) -> str:
        return f"wechat:delivered:{self.inbox}:{reply.id}"

    def _open(self, body: bytes, encrypted: bool, msg_signature: str, timestamp: str, nonce: str) -> bytes | str:
        """The push XML: decrypted (with its msg_signature checked) when WeChat encrypted it."""
        if not encrypted:
            if self._cfg.mode == "safe":
                raise web.HTTPForbidden(text="this inbox accepts encrypted pushes only (safe mode)")
            return body
        if self._key is None:
            raise web.HTTPBadRequest(text="encrypted push but no encoding_aes_key is configured")
        envelope = read_xml(body)
        encrypt = envelope.get("Encrypt")
        if not isinstance(encrypt, str) or not encrypt:
            raise PushError("bad_push", "encrypted push without an Encrypt element")
        if not msg_signature or not verify(msg_signature, self._cfg.token, timestamp, nonce, encrypt):
            raise web.HTTPForbidden(text="bad or missing msg_signature")
        return crypto.decrypt(encrypt, key=self._key, app_id=self._cfg.app_id)

    async def _admit(self, admission: Admission) -> None:
        """The replay guard on its own, for a push that is quarantined rather than taken in."""
        if not await self._store.lease(admission.key, admission.holder, admission.ttl_s):
            raise web.HTTPForbidden(text="replayed nonce")

    async def _intake(self, sink: InboundSink, inbound: InboundMessage) -> IntakeResult:
        try:
            return await sink(inbound)
        except Rejected as exc:
            if inbound.picked_faq is None:
                raise web.HTTPBadRequest(text=str(exc)) from None
            # A menu key mapped to a FAQ entry that is gone: keep the click, without the pick.
            log.warning("inbox %s: %s; storing the click without it", self.inbox, exc)
            key = inbound.meta.get("event_key")
            fallback = dataclasses.replace(
                inbound,
                picked_faq=None,
                kind=inbound.kind if inbound.text else MessageKind.EVENT,
                text=inbound.text or f"[菜单 menu click {key}]",
                bot=bool(inbound.text),
            )
            return await sink(fallback)

    def _reported(
        self, push: Push, now: datetime, admission: Admission | None = None, *, inline: bool = False
    ) -> InboundMessage:
        """The push's message with the facts intake acts on: a follow clears the inbox's unsubscribed flag and
        is greeted (when a welcome is configured), an unfollow sets the flag; the reply window it opens, stored
        with the message (a repeat delivery opens nothing); the nonce's ``admission``; and, for a push whose
        response waits (``inline``, not a replay), that a reply ready at once may ride in it. One copy of the
        message with all of them (each copy of a frozen dataclass sets every field again)."""
        message = push.message
        changes: dict[str, Any] = {}
        if admission is not None:
            changes["admission"] = admission
        if inline:
            changes["inline_reply"] = True
        if push.opens is not None:
            opening = self._window.opening(message.sender.value, push.opens, now)
            changes["checkpoints"] = (*message.checkpoints, opening)
        if push.action is not Action.NONE:
            unfollow = push.action is Action.UNSUBSCRIBE
            changes["contact_flags"] = (
                ContactFlag(identity=message.sender, flag=unsubscribed_flag(self.inbox), on=unfollow),
            )
            changes["greeting"] = (self._cfg.welcome or None) if push.action is Action.SUBSCRIBE else None
        return dataclasses.replace(message, **changes) if changes else message

    async def _await_reply(self, message_id: str, waiter: _Waiter, handled: asyncio.Task[None]) -> OutboundReply | None:
        """The bot's reply if it comes within the budget; None when it is late or there is none."""
        pending: set[asyncio.Future[Any]] = {waiter.reply, handled}
        await asyncio.wait(pending, timeout=self._cfg.reply_budget_s, return_when=asyncio.FIRST_COMPLETED)
        if waiter.committed and not waiter.reply.done() and not handled.done():
            # Its reply is being stored as this response's: that write is under way (bounded by the store's own
            # timeouts), wait for it rather than ask WeChat to retry a reply that is about to be there.
            await asyncio.wait(pending, timeout=COMMITTED_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        # From here on a late reply finds no waiter and goes through the customer-service API.
        self._waiters.pop(message_id, None)
        return waiter.reply.result() if waiter.reply.done() else None

    async def _write_passive(
        self, request: web.Request, push: Push, text: str, encrypted: bool
    ) -> tuple[web.StreamResponse, bool]:
        """Write the passive reply now, so the reply's sender learns whether it went out."""
        now = int(time.time())
        xml = render.passive_xml(account=push.account, openid=push.message.sender.value, text=text, at=now)
        if encrypted and self._key is not None:
            xml = crypto.envelope(
                xml, token=self._cfg.token, key=self._key, app_id=self._cfg.app_id, timestamp=str(now)
            )
        response = web.Response(text=xml, content_type="application/xml")
        try:
            await response.prepare(request)
            await response.write_eof()
        except (ConnectionError, RuntimeError) as exc:
            log.info("inbox %s: passive reply not written: %s", self.inbox, exc)
            return response, False
        return response, True

    async def replay(self, item: QuarantinedItem, sink: InboundSink) -> str | None:
        """A quarantined push (its HTTP body, encrypted or not), taken in as if WeChat pushed it now; a reply
        goes out through the customer-service API. Its signatures were checked when it arrived."""
        now = datetime.now(UTC)
        try:
            envelope = read_xml(item.raw)
            encrypt = envelope.get("Encrypt")
            if isinstance(encrypt, str) and "MsgType" not in envelope and self._key is not None:
                xml: bytes | str = crypto.decrypt(encrypt, key=self._key, app_id=self._cfg.app_id)
            else:
                xml = item.raw
            push = parse_push(xml, inbox=self.inbox, received_at=now, menu_faq=self._cfg.menu_faq)
            result = await self._intake(sink, self._reported(push, now))
        except (PushError, crypto.CryptoError, web.HTTPBadRequest):
            return None
        return stored_as(result)

    async def _quarantine(self, body: bytes, reason: str, now: datetime) -> None:
        digest = hashlib.sha256(body).hexdigest()[:32]
        item = QuarantinedItem(
            id=f"wechat:{self.inbox}:{digest}",
            channel=Channel.WECHAT,
            inbox=self.inbox,
            reason=reason,
            raw=body,
            received_at=now,
        )
        await self._store.quarantine(item)
