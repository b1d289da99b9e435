"""The audit trail of API writes: who (the token, and the agent it acted for), what, when, before and after."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from core.clock import Clock
from core.codec import to_jsonable
from core.jsonweb import json_response
from core.scopes import Scope
from core.store.audit import AuditEntry, AuditLog, AuditQuery
from gateway.access import PRINCIPAL, REQUEST_ID, Guarded, error, needs
from gateway.query import cursor_problem, int_param

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
_MAX_TEXT = 200
_MAX_ITEMS = 20


def short(value: Any, depth: int = 0) -> Any:
    """A summary small enough for the log: long strings cut, long lists cut, deep nesting dropped."""
    value = to_jsonable(value)
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "…"
    if isinstance(value, list):
        return [short(v, depth + 1) for v in value[:_MAX_ITEMS]] + (["…"] if len(value) > _MAX_ITEMS else [])
    if isinstance(value, dict):
        if depth >= 3:
            return "…"
        return {str(k): short(v, depth + 1) for k, v in list(value.items())[:_MAX_ITEMS]}
    return value


def entry_view(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "on_behalf_of": entry.on_behalf_of,
        "who": entry.who,
        "action": entry.action,
        "target": entry.target,
        "request_id": entry.request_id,
        "before": entry.before,
        "after": entry.after,
    }


class Auditor:
    def __init__(self, store: AuditLog, clock: Clock, *, retention_days: float) -> None:
        self._store = store
        self._clock = clock
        self._retention = timedelta(days=retention_days) if retention_days > 0 else None

    async def record(
        self,
        request: web.Request,
        *,
        action: str,
        target: str,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        on_behalf_of: str | None = None,
    ) -> None:
        """Record a change that has been made. If the store fails now, the change stands and the entry goes
        to the error log instead: the caller must not retry a change that happened."""
        principal = request.get(PRINCIPAL)
        entry = AuditEntry(
            id=f"au_{uuid.uuid4().hex}",
            at=self._clock(),
            actor=principal.name if principal is not None else "anonymous",
            on_behalf_of=on_behalf_of,
            action=action,
            target=target,
            request_id=request.get(REQUEST_ID, ""),
            before=short(before) if before is not None else None,
            after=short(after) if after is not None else None,
        )
        try:
            await self._store.record_audit(entry)
        except Exception:
            log.exception(
                "audit entry not stored: %s %s by %s (request %s)",
                entry.action,
                entry.target,
                entry.who,
                entry.request_id,
                extra={"audit": entry_view(entry)},
            )

    async def record_change(
        self,
        request: web.Request,
        *,
        action: str,
        target: str,
        was: Mapping[str, Any],
        now: Mapping[str, Any],
        unchanged_too: bool = False,
    ) -> None:
        """Record the fields of ``now`` that differ from ``was``, both sides; nothing when none does, unless
        ``unchanged_too`` (an edit asked for is worth an entry even when it changed nothing)."""
        changed = [k for k in now if now[k] != was.get(k)]
        if changed or unchanged_too:
            await self.record(
                request,
                action=action,
                target=target,
                before={k: was.get(k) for k in changed},
                after={k: now[k] for k in changed},
            )

    async def sweep(self, batch: int = 1000) -> int:
        """Drop entries older than the retention period, a batch at a time."""
        if self._retention is None:
            return 0
        cut = self._clock() - self._retention
        purged = 0
        while (n := await self._store.purge_audit(cut, batch)) > 0:
            purged += n
            if n < batch:
                break
        if purged:
            log.info("swept %d audit entries older than %s", purged, cut.isoformat())
        return purged

    def routes(self) -> list[Guarded]:
        return [needs(Scope.ADMIN, web.get(f"{PREFIX}/audit", self.list_entries))]

    async def list_entries(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        times: dict[str, datetime | None] = {}
        for name in ("since", "until"):
            times[name] = None
            if name in q:
                try:
                    at = datetime.fromisoformat(q[name])
                except ValueError:
                    return error(400, "bad_query", f"{name} must be an ISO 8601 timestamp with a timezone")
                if at.tzinfo is None:
                    return error(400, "bad_query", f"{name} must carry a timezone, e.g. 2026-01-01T00:00:00+08:00")
                times[name] = at
        limit = int_param(q.get("limit"), default=50, low=1, high=200)
        if limit is None:
            return error(400, "bad_query", "limit must be an integer from 1 to 200")
        cursor = q.get("cursor")
        if (problem := cursor_problem(cursor, 1)) is not None:
            return error(400, "bad_query", problem)
        page = await self._store.audit_entries(
            AuditQuery(
                actor=q.get("actor"),
                action=q.get("action"),
                target=q.get("target"),
                since=times["since"],
                until=times["until"],
                cursor=cursor,
                limit=limit,
            )
        )
        return json_response({"entries": [entry_view(e) for e in page.entries], "next_cursor": page.next_cursor})
