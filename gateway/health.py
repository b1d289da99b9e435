"""The gateway's health: one snapshot of its components and alarms, for /readyz, /metrics and the dashboard."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from connectors.base import Connector
from core import observe
from core.clock import Clock
from core.config import Config, EmailInbox, WechatInbox
from core.model import DownstreamEvent, EventType
from core.store import Store
from core.store.base import Gauges
from gateway.downstream.webhooks import WebhookDispatcher

log = logging.getLogger(__name__)

_DEAD_LETTERS_READ = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Alarm:
    name: str  # mailbox_stale, dead_letters_growing, webhook_breaker_open, quarantine_growing, token_refresh_failing
    subject: str  # the inbox or subscription it is about
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRefresh:
    ok: bool
    at: datetime
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    at: datetime
    store_ok: bool
    gauges: Gauges | None  # None when the store could not be read
    dead_letters: dict[str, int]  # by subscription
    dead_letters_recent: int
    connectors: dict[str, str]  # inbox -> running / stopped
    mail_fetched: dict[str, datetime | None]  # email inbox -> last successful fetch
    token_refresh: dict[str, TokenRefresh | None]  # WeChat inbox -> last access-token refresh
    breakers: dict[str, str]  # webhook subscription -> closed / open (as the instance dispatching it last saw)
    alarms: tuple[Alarm, ...]

    @property
    def ready(self) -> bool:
        return self.store_ok and all(state == "running" for state in self.connectors.values())


class Health:
    """Reads the store (so every instance agrees) and this process's connectors and webhook breakers."""

    def __init__(
        self,
        config: Config,
        store: Store,
        connectors: Mapping[str, Connector],
        webhooks: WebhookDispatcher,
        clock: Clock,
        *,
        started_at: datetime,
    ) -> None:
        self._config = config
        self._store = store
        self._connectors = connectors
        self._webhooks = webhooks
        self._clock = clock
        self._started_at = started_at

    async def snapshot(self) -> Snapshot:
        now = self._clock()
        alarms_cfg = self._config.ops.alarms
        connectors = {name: "running" if c.is_running() else "stopped" for name, c in self._connectors.items()}
        store_ok = await self._store.ping()
        gauges: Gauges | None = None
        dead: dict[str, int] = {}
        recent_dead = 0
        fetched: dict[str, datetime | None] = {}
        tokens: dict[str, TokenRefresh | None] = {}
        breakers = dict.fromkeys(self._webhooks.subscriptions, "closed")
        if store_ok:
            try:
                gauges = await self._store.gauges(since=now - timedelta(seconds=alarms_cfg.quarantine_window_s))
                dead_since = now - timedelta(seconds=alarms_cfg.dead_letter_window_s)
                for letter in await self._store.dead_letters(limit=_DEAD_LETTERS_READ):
                    dead[letter.subscription] = dead.get(letter.subscription, 0) + 1
                    recent_dead += letter.failed_at >= dead_since
                for inbox in self._config.inboxes:
                    if isinstance(inbox, EmailInbox):
                        fetched[inbox.name] = _time(
                            await self._store.get_checkpoint(observe.mail_fetched_key(inbox.name))
                        )
                    elif isinstance(inbox, WechatInbox):
                        raw = await self._store.get_checkpoint(observe.token_refresh_key(inbox.name))
                        tokens[inbox.name] = _token(raw)
                for key in breakers:
                    breakers[key] = await self._store.get_checkpoint(observe.breaker_key(key)) or "closed"
            except Exception:  # a store that answers ping but fails a read: report it, never a 500
                log.exception("reading the store for the health snapshot failed")
                store_ok = False
        snapshot = Snapshot(
            at=now,
            store_ok=store_ok,
            gauges=gauges,
            dead_letters=dead,
            dead_letters_recent=recent_dead,
            connectors=connectors,
            mail_fetched=fetched,
            token_refresh=tokens,
            breakers=breakers,
            alarms=(),
        )
        return _with_alarms(snapshot, self._config, self._started_at)

    async def notify(self, snapshot: Snapshot) -> int:
        """Write ``system.alarm`` events for alarms that began or ended; returns how many were written.

        Safe on every instance at once: one instance claims an alarm's start and keeps it in a checkpoint, and
        each event's idempotency key names the alarm and its start (and the renotify period), so the store
        writes each one once.
        """
        cfg = self._config.ops.alarms
        written: list[DownstreamEvent] = []
        firing = {(a.name, a.subject): a for a in snapshot.alarms}
        for (name, subject), alarm in firing.items():
            key = _alarm_key(name, subject)
            since = await self._store.get_checkpoint(key)
            if not since:
                # One instance starts the alarm (the others would each name another start time).
                if not await self._store.claim(f"{key}:starting", cfg.check_interval_s):
                    continue
                since = snapshot.at.isoformat()
                await self._store.set_checkpoint(key, since)
            period = int(snapshot.at.timestamp() // cfg.renotify_s)
            written.append(_alarm_event(alarm, "firing", snapshot.at, f"{since}:{period}", since))
        for name, subject in await self._known_alarms():
            if (name, subject) in firing:
                continue
            key = _alarm_key(name, subject)
            since = await self._store.get_checkpoint(key)
            if since:
                cleared = Alarm(name=name, subject=subject, detail="back to normal")
                written.append(_alarm_event(cleared, "resolved", snapshot.at, since, since))
                await self._store.set_checkpoint(key, "")
        if written:
            await self._store.append_events(written)
        return len(written)

    async def _known_alarms(self) -> list[tuple[str, str]]:
        names: list[tuple[str, str]] = []
        for inbox in self._config.inboxes:
            if isinstance(inbox, EmailInbox):
                names.append(("mailbox_stale", inbox.name))
            if isinstance(inbox, WechatInbox):
                names.append(("token_refresh_failing", inbox.name))
        for hook in self._config.webhooks:
            names += [("dead_letters_growing", hook.key), ("webhook_breaker_open", hook.key)]
        names.append(("quarantine_growing", ""))
        return names


def _with_alarms(snapshot: Snapshot, config: Config, started_at: datetime) -> Snapshot:
    cfg = config.ops.alarms
    alarms: list[Alarm] = []
    stale = timedelta(seconds=cfg.mail_stale_s)
    for inbox, fetched in snapshot.mail_fetched.items():
        last = fetched or started_at  # a mailbox never fetched is stale once the gateway has run that long
        if snapshot.at - last > stale:
            when = fetched.isoformat() if fetched else "never"
            alarms.append(Alarm(name="mailbox_stale", subject=inbox, detail=f"last successful fetch: {when}"))
    for inbox, refresh in snapshot.token_refresh.items():
        if refresh is not None and not refresh.ok:
            alarms.append(Alarm(name="token_refresh_failing", subject=inbox, detail=refresh.error))
    if snapshot.dead_letters_recent:
        for subscription, count in snapshot.dead_letters.items():
            detail = f"{snapshot.dead_letters_recent} new in {cfg.dead_letter_window_s:.0f} s; {count} in all"
            alarms.append(Alarm(name="dead_letters_growing", subject=subscription, detail=detail))
    for subscription, state in snapshot.breakers.items():
        if state == "open":
            alarms.append(Alarm(name="webhook_breaker_open", subject=subscription, detail="deliveries paused"))
    if snapshot.gauges is not None and snapshot.gauges.quarantined_since >= cfg.quarantine_growth:
        detail = f"{snapshot.gauges.quarantined_since} new in {cfg.quarantine_window_s:.0f} s"
        alarms.append(Alarm(name="quarantine_growing", subject="", detail=detail))
    return dataclasses.replace(snapshot, alarms=tuple(alarms))


def _alarm_key(name: str, subject: str) -> str:
    return f"health:alarm:{name}:{subject}"


def _alarm_event(alarm: Alarm, state: str, at: datetime, key: str, since: str) -> DownstreamEvent:
    return DownstreamEvent(
        type=EventType.SYSTEM_ALARM,
        data={"alarm": alarm.name, "subject": alarm.subject, "state": state, "detail": alarm.detail, "since": since},
        occurred_at=at,
        idempotency_key=f"system.alarm:{alarm.name}:{alarm.subject}:{state}:{key}",
    )


def _time(raw: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def _token(raw: str | None) -> TokenRefresh | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return TokenRefresh(ok=bool(data["ok"]), at=datetime.fromisoformat(data["at"]), error=str(data["error"]))
    except (ValueError, KeyError, TypeError):
        return None


def readiness(snapshot: Snapshot) -> dict[str, object]:
    """The /readyz body: each component's state, then the alarms (which do not make the gateway unready)."""
    gauges = snapshot.gauges
    return {
        "status": "ready" if snapshot.ready else "not_ready",
        "store": "ok" if snapshot.store_ok else "unreachable",
        "connectors": snapshot.connectors,
        "components": {
            "store": {"status": "ok" if snapshot.store_ok else "unreachable"},
            **{
                f"inbox:{name}": {"status": state, **_inbox_detail(snapshot, name)}
                for name, state in snapshot.connectors.items()
            },
            **{f"webhook:{key}": {"status": state} for key, state in snapshot.breakers.items()},
            "quarantine": {"pending": gauges.quarantine_pending if gauges else None},
            "outbox": {
                "waiting": gauges.outbox_size if gauges else None,
                "oldest_age_s": _age(snapshot.at, gauges.outbox_oldest) if gauges else None,
            },
            "dead_letters": {"count": sum(snapshot.dead_letters.values())},
        },
        "alarms": [{"name": a.name, "subject": a.subject, "detail": a.detail} for a in snapshot.alarms],
    }


def _inbox_detail(snapshot: Snapshot, name: str) -> dict[str, object]:
    if name in snapshot.mail_fetched:
        fetched = snapshot.mail_fetched[name]
        return {"last_fetch": fetched.isoformat() if fetched else None}
    if name in snapshot.token_refresh:
        refresh = snapshot.token_refresh[name]
        return {"token_refresh": None if refresh is None else {"ok": refresh.ok, "at": refresh.at.isoformat()}}
    return {}


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())
