"""Signed webhooks from the events outbox: at-least-once, in order per conversation, retried, dead-lettered."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from core.config import WebhookConfig
from core.model import DownstreamEvent
from core.observe import NO_OBSERVER, Observer, breaker_key
from core.redact import scrub
from core.store.base import DeadLetter
from core.store.roles import Checkpoints, Conversations, Coordination, DeadLetters, EventLog
from gateway.downstream.guard import PublicOnlyResolver

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Huiliu-Signature"
TIMESTAMP_HEADER = "Huiliu-Timestamp"
DELIVERY_HEADER = "Huiliu-Delivery-Id"
EVENT_HEADER = "Huiliu-Event"
ATTEMPT_HEADER = "Huiliu-Attempt"
BATCH = 100
LEASE_TTL_S = 30.0
# Retrying these 4xx can succeed: the receiver was busy or rate-limiting, not rejecting the event.
_RETRYABLE_4XX = frozenset({408, 425, 429})
_MAX_RETRY_AFTER_S = 3600.0


def sign(secrets: Sequence[str], timestamp: str, body: bytes) -> str:
    """``v1=<hex>`` per secret, comma-separated: during a rotation receivers holding either secret verify."""
    payload = timestamp.encode() + b"." + body
    return ",".join("v1=" + hmac.new(s.encode(), payload, hashlib.sha256).hexdigest() for s in secrets)


def verify(secret: str, header: str, timestamp: str, body: bytes, *, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver does (docs/webhooks.md): any v1 signature matches, and the timestamp is recent."""
    try:
        if abs(now - int(timestamp)) > tolerance_s:
            return False
    except ValueError:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    given = [part.strip()[3:] for part in header.split(",") if part.strip().startswith("v1=")]
    return any(hmac.compare_digest(expected, g) for g in given)


def delivery_id(subscription: str, event: DownstreamEvent) -> str:
    """Stable for one event to one subscription, across retries, restarts and replays."""
    return f"{subscription}.{event.seq}"


def ordering_key(event: DownstreamEvent) -> str:
    """Events of one conversation (hence of each of its tickets) go out one at a time, in outbox order."""
    return event.conversation_id or event.ticket_id or "-"


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    ok: bool
    retryable: bool
    error: str
    status: int | None = None
    retry_after_s: float | None = None


class Breaker:
    """Per subscription: after ``threshold`` failures in a row, no POSTs for a cooldown that doubles while it
    keeps failing; then one probe at a time. Time waiting here does not count against an event's attempts."""

    def __init__(self, threshold: int, cooldown_s: float, max_cooldown_s: float = 600.0) -> None:
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._max_cooldown_s = max(cooldown_s, max_cooldown_s)
        self.failures = 0
        self._open_until = 0.0
        self._probing = False
        self._changed = asyncio.Event()

    @property
    def state(self) -> str:
        if self.failures < self._threshold:
            return "closed"
        return "open" if time.monotonic() < self._open_until else "half_open"

    async def admit(self) -> None:
        while True:
            if self.failures < self._threshold:
                return
            wait = self._open_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if not self._probing:
                self._probing = True
                return
            self._changed.clear()
            await self._changed.wait()

    def succeeded(self) -> None:
        self.failures = 0
        self._probing = False
        self._changed.set()

    def failed(self) -> None:
        self.failures += 1
        self._probing = False
        if self.failures >= self._threshold:
            cooldown = self._cooldown_s * 2 ** min(self.failures - self._threshold, 10)
            self._open_until = time.monotonic() + min(cooldown, self._max_cooldown_s)
            if self.failures == self._threshold:
                log.warning("webhook circuit opened after %d failures", self.failures)
        self._changed.set()


class Subscription:
    def __init__(self, cfg: WebhookConfig) -> None:
        self.cfg = cfg
        self.key = cfg.key
        self.breaker = Breaker(cfg.breaker_threshold, cfg.breaker_cooldown_s)
        self.noted_state = "closed"  # the breaker state last written to the store for the health checks
        self.delivered = 0

    @property
    def cursor_key(self) -> str:
        return f"webhooks:{self.key}:cursor"

    def backoff_s(self, attempt: int) -> float:
        """Exponential with "equal jitter": never less than half the step, so retries keep spreading out."""
        step = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** (attempt - 1))
        return random.uniform(step / 2, step)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayResult:
    delivered: bool
    error: str
    status: int | None


class UnknownSubscription(Exception):
    pass


class _Stopped(Exception):
    """Shutdown came while an event was between attempts: it stays unsent and goes out after the restart."""


class WebhookStore(EventLog, DeadLetters, Checkpoints, Coordination, Conversations, Protocol):
    """The roles delivery uses: events after each subscription's cursor (a checkpoint), one sender per
    subscription (a lease), dead letters, and the conversation an event is about."""


class WebhookDispatcher:
    def __init__(
        self,
        store: WebhookStore,
        subscriptions: Sequence[WebhookConfig],
        *,
        instance: str | None = None,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._store = store
        self._observer = observer
        self.subscriptions = {s.key: Subscription(s) for s in subscriptions}
        self._instance = instance or uuid.uuid4().hex
        self._http: aiohttp.ClientSession | None = None
        self._inboxes: dict[str, str] = {}  # conversation id -> inbox: fixed for a conversation's life
        self._stopping = asyncio.Event()
        self._stop_deadline: float | None = None

    def stop(self, grace_s: float) -> None:
        """Start no new delivery; those in flight get ``grace_s`` from now to finish (see ``running``)."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + grace_s
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the dispatcher stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    @asynccontextmanager
    async def running(self, *, grace_s: float = 0.0) -> AsyncIterator[None]:
        """One dispatching loop per subscription; on another instance it waits for the subscription's lease.

        On exit, deliveries in flight finish (a POST is answered, its batch's cursor saved) within ``grace_s``
        of ``stop`` (or of the exit); what is still running then is cancelled and re-sent after a restart.
        """
        self._stopping.clear()
        self._stop_deadline = None
        if not self.subscriptions:
            yield
            return
        limit = sum(s.cfg.concurrency for s in self.subscriptions.values())
        private_ok = frozenset(
            (urlsplit(s.cfg.url).hostname or "").lower() for s in self.subscriptions.values() if s.cfg.allow_private
        )
        connector = aiohttp.TCPConnector(limit=limit + 4, resolver=PublicOnlyResolver(private_ok))
        self._http = aiohttp.ClientSession(connector=connector)
        tasks = [
            asyncio.get_running_loop().create_task(self._hold(sub), name=f"webhooks:{sub.key}")
            for sub in self.subscriptions.values()
        ]
        try:
            yield
        finally:
            self.stop(grace_s)
            assert self._stop_deadline is not None
            _, late = await asyncio.wait(tasks, timeout=max(0.0, self._stop_deadline - time.monotonic()))
            if late:
                log.warning("webhook deliveries still running after the shutdown grace period: cancelled")
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            http, self._http = self._http, None
            await http.close()

    # one subscription ------------------------------------------------------------
    async def _hold(self, sub: Subscription) -> None:
        lease = f"webhooks:{sub.key}"
        while not self._stopping.is_set():
            try:
                if await self._store.lease(lease, self._instance, LEASE_TTL_S):
                    log.info("dispatching webhook %s from this instance", sub.key)
                    try:
                        async with asyncio.TaskGroup() as group:
                            group.create_task(self._renew(lease))
                            group.create_task(self._pump(sub))
                    finally:
                        with contextlib.suppress(Exception):
                            await asyncio.shield(self._store.release(lease, self._instance))
            except* _LeaseLost:
                log.warning("lost the lease of webhook %s; another instance dispatches it", sub.key)
            except* Exception as group:  # the store was unreachable: wait and take the lease again
                log.error("webhook %s dispatcher failed; restarting", sub.key, exc_info=group.exceptions[0])
            await self._pause(min(sub.cfg.poll_s, LEASE_TTL_S / 3))

    async def _renew(self, lease: str) -> None:
        while True:
            await self._pause(LEASE_TTL_S / 3)
            if self._stopping.is_set():
                return
            if not await self._store.lease(lease, self._instance, LEASE_TTL_S):
                raise _LeaseLost

    async def _pump(self, sub: Subscription) -> None:
        """Batch by batch from the persisted cursor; the cursor moves only once the whole batch is settled."""
        while not self._stopping.is_set():
            cursor = int(await self._store.get_checkpoint(sub.cursor_key) or 0)
            batch = await self._store.events_after(cursor, BATCH)
            if not batch:
                await self._pause(sub.cfg.poll_s)
                continue
            held = {
                ordering_key(letter.event): letter.id
                for letter in await self._store.dead_letters(subscription=sub.key, limit=10_000)
            }
            groups: dict[str, list[DownstreamEvent]] = {}
            for event in batch:
                if await self._wanted(sub.cfg, event):
                    groups.setdefault(ordering_key(event), []).append(event)
            gate = asyncio.Semaphore(sub.cfg.concurrency)
            settled: set[int | None] = set()
            complete = await asyncio.gather(
                *(self._deliver_group(sub, events, held, gate, settled) for events in groups.values())
            )
            if all(complete):
                await self._store.set_checkpoint(sub.cursor_key, str(batch[-1].seq))
                continue
            # Stopping: keep what is settled up to the first event still owed, so an event whose POST finished in
            # the grace period is not sent again after the restart; the rest goes out then.
            wanted = {event.seq for events in groups.values() for event in events}
            upto = cursor
            for event in batch:
                if event.seq in wanted and event.seq not in settled:
                    break
                upto = event.seq or upto
            if upto > cursor:
                await self._store.set_checkpoint(sub.cursor_key, str(upto))
            return

    async def _deliver_group(
        self,
        sub: Subscription,
        events: list[DownstreamEvent],
        held: dict[str, str],
        gate: asyncio.Semaphore,
        settled: set[int | None],
    ) -> bool:
        """Deliver or dead-letter each event in order, adding it to ``settled``; False when stopping came first."""
        async with gate:
            for event in events:
                if self._stopping.is_set():
                    return False
                key = ordering_key(event)
                if key in held:
                    # Keep the conversation's order: nothing of it goes out past an event that is dead-lettered.
                    await self._dead_letter(sub, event, 0, f"held behind dead letter {held[key]} of this conversation")
                    settled.add(event.seq)
                    continue
                try:
                    attempts, error = await self._deliver(sub, event)
                except _Stopped:
                    return False
                if error is not None:
                    letter = await self._dead_letter(sub, event, attempts, error)
                    held[key] = letter
                settled.add(event.seq)
        return True

    async def _deliver(self, sub: Subscription, event: DownstreamEvent) -> tuple[int, str | None]:
        """(attempts, None) once delivered, or (attempts, last error) when it should be dead-lettered."""
        attempt = 0
        while True:
            await sub.breaker.admit()
            attempt += 1
            outcome = await self._post(sub, event, attempt)
            self._observer.webhook_attempt(sub.key, "delivered" if outcome.ok else "failed")
            if outcome.ok:
                sub.breaker.succeeded()
                await self._note_breaker(sub)
                sub.delivered += 1
                return attempt, None
            if not outcome.retryable:
                sub.breaker.succeeded()  # the endpoint answered: it is up, it just refuses this event
                await self._note_breaker(sub)
                return attempt, outcome.error
            sub.breaker.failed()
            await self._note_breaker(sub)
            if attempt >= sub.cfg.max_attempts:
                return attempt, outcome.error
            delay = sub.backoff_s(attempt)
            if outcome.retry_after_s is not None:
                delay = max(delay, min(outcome.retry_after_s, _MAX_RETRY_AFTER_S))
            log.info("webhook %s: event %s attempt %d failed (%s); retry in %.2fs", sub.key, event.seq, attempt,
                     outcome.error, delay)  # fmt: skip
            await self._pause(delay)
            if self._stopping.is_set():
                raise _Stopped

    async def _post(self, sub: Subscription, event: DownstreamEvent, attempt: int) -> Attempt:
        http = self._http
        if http is None:
            return Attempt(ok=False, retryable=True, error="dispatcher is not running")
        body = json.dumps(event.to_json(), ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Huiliu-Webhooks/1",
            DELIVERY_HEADER: delivery_id(sub.key, event),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(sub.cfg.secrets, timestamp, body),
            EVENT_HEADER: str(event.type),
            ATTEMPT_HEADER: str(attempt),
        }
        try:
            async with http.post(
                sub.cfg.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=sub.cfg.timeout_s),
            ) as resp:
                await resp.read()
                status = resp.status
                if 200 <= status < 300:
                    return Attempt(ok=True, retryable=False, error="", status=status)
                retryable = status >= 500 or status in _RETRYABLE_4XX
                return Attempt(
                    ok=False,
                    retryable=retryable,
                    error=f"HTTP {status}",
                    status=status,
                    retry_after_s=_retry_after(resp.headers.get("Retry-After")),
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Attempt(ok=False, retryable=True, error=scrub(f"{type(exc).__name__}: {exc}".rstrip(": ")))

    async def _wanted(self, cfg: WebhookConfig, event: DownstreamEvent) -> bool:
        if cfg.events and str(event.type) not in cfg.events:
            return False
        if not cfg.inboxes:
            return True
        inbox = await self._inbox_of(event)
        return inbox is not None and inbox in cfg.inboxes

    async def _inbox_of(self, event: DownstreamEvent) -> str | None:
        data: Any = event.data
        for part in ("message", "ticket"):
            inner = data.get(part)
            if isinstance(inner, dict) and isinstance(inner.get("inbox"), str):
                return str(inner["inbox"])
        if isinstance(data.get("inbox"), str):
            return str(data["inbox"])
        if event.conversation_id is None:
            return None
        inbox = self._inboxes.get(event.conversation_id)
        if inbox is None:
            conversation = await self._store.get_conversation(event.conversation_id)
            if conversation is None:
                return None
            inbox = self._inboxes[event.conversation_id] = conversation.inbox
        return inbox

    async def _dead_letter(self, sub: Subscription, event: DownstreamEvent, attempts: int, error: str) -> str:
        letter = DeadLetter(
            id=delivery_id(sub.key, event),
            subscription=sub.key,
            event=event,
            attempts=attempts,
            error=error,
            failed_at=datetime.now(UTC),
        )
        if await self._store.add_dead_letter(letter):
            self._observer.webhook_attempt(sub.key, "dead_lettered")
        log.warning("webhook %s: event %s dead-lettered after %d attempts: %s", sub.key, event.seq, attempts, error)
        return letter.id

    async def _note_breaker(self, sub: Subscription) -> None:
        """Keep the breaker's state in the store when it changes: only the instance dispatching a subscription
        knows it, and every instance's /readyz and /metrics should tell the same."""
        state = "closed" if sub.breaker.state == "closed" else "open"
        if state != sub.noted_state:
            sub.noted_state = state
            await self._store.set_checkpoint(breaker_key(sub.key), state)

    # operator ---------------------------------------------------------------------
    async def replay(self, letter: DeadLetter) -> ReplayResult:
        """One POST now, with the original delivery id; the letter is dropped only once it is delivered."""
        sub = self.subscriptions.get(letter.subscription)
        if sub is None:
            raise UnknownSubscription(f"webhook {letter.subscription!r} is no longer configured")
        outcome = await self._post(sub, letter.event, letter.attempts + 1)
        if outcome.ok:
            await self._store.remove_dead_letter(letter.id)
            sub.breaker.succeeded()
            await self._note_breaker(sub)
        return ReplayResult(delivered=outcome.ok, error=outcome.error, status=outcome.status)


class _LeaseLost(Exception):
    pass


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())
