"""``GET /api/v1/reports/summary``: the summary report as JSON or CSV."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from core.clock import Clock
from core.jsonweb import json_response
from core.model import Channel, DownstreamEvent
from core.scopes import Scope
from core.store import Store
from gateway.access import Guarded, error, needs
from gateway.api import PREFIX
from gateway.reports import Window, csv_rows, summarize

_PAGE = 1000
_DEFAULT_DAYS = 7


class BadQuery(ValueError):
    pass


def parse_window(query: dict[str, str], now: datetime, default_tz: str) -> Window:
    """``from``/``to``: a day (``to`` includes it) or a time with its offset; the last 7 days by default."""
    try:
        tz = ZoneInfo(query.get("tz", default_tz))
    except (ZoneInfoNotFoundError, ValueError):
        raise BadQuery(f"tz: unknown IANA timezone {query.get('tz')!r}") from None
    end = _bound(query.get("to"), tz, "to", end=True)
    if end is None:
        end = datetime.combine(now.astimezone(tz).date() + timedelta(days=1), time(), tz)
    start = _bound(query.get("from"), tz, "from", end=False)
    if start is None:
        start = end - timedelta(days=_DEFAULT_DAYS)
    if start >= end:
        raise BadQuery("from must be before to")
    if end - start > timedelta(days=366):
        raise BadQuery("the report covers at most 366 days")
    channel = query.get("channel")
    if channel is not None and channel not in {str(c) for c in Channel}:
        raise BadQuery(f"channel: one of {', '.join(str(c) for c in Channel)}")
    return Window(start=start, end=end, tz=tz, inbox=query.get("inbox") or None, channel=channel)


def _bound(raw: str | None, tz: ZoneInfo, name: str, *, end: bool) -> datetime | None:
    if raw is None or raw == "":
        return None
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            return datetime.combine(day + timedelta(days=1 if end else 0), time(), tz)
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise BadQuery(f"{name}: a date (2026-12-01) or a time with its offset (2026-12-01T08:00:00+08:00)") from None
    if at.tzinfo is None:
        raise BadQuery(f"{name}: a time needs its offset, e.g. 2026-12-01T08:00:00+08:00")
    return at


class ReportsApi:
    def __init__(self, store: Store, clock: Clock, default_tz: str) -> None:
        self._store = store
        self._clock = clock
        self._default_tz = default_tz

    def routes(self) -> list[Guarded]:
        return [needs(Scope.REPORTS_READ, web.get(f"{PREFIX}/reports/summary", self.summary))]

    async def summary(self, request: web.Request) -> web.StreamResponse:
        try:
            # A thread: finding a zone's file reads the disk the first time.
            window = await asyncio.to_thread(parse_window, dict(request.query), self._clock(), self._default_tz)
        except BadQuery as exc:
            return error(400, "bad_query", str(exc))
        fmt = request.query.get("format", "json")
        table = request.query.get("table", "daily")
        if fmt not in ("json", "csv") or table not in ("daily", "unanswered"):
            return error(400, "bad_query", "format is json or csv; table is daily or unanswered")
        # Off the loop: the whole log is read, and a large one takes a while to count.
        report = await asyncio.to_thread(summarize, await self._events(), window)
        if fmt == "json":
            return json_response(report)
        out = io.StringIO()
        csv.writer(out).writerows(csv_rows(report, table))
        name = f"huiliu-{table}-{window.start.date()}-{(window.end - timedelta(seconds=1)).date()}.csv"
        # A BOM so that Excel opens the Chinese text as UTF-8.
        return web.Response(
            body=("\ufeff" + out.getvalue()).encode(),
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{name}"',
            },
        )

    async def _events(self) -> list[DownstreamEvent]:
        """The whole event log: every message and ticket is in it (store first, event in the same write)."""
        found: list[DownstreamEvent] = []
        after = 0
        while batch := await self._store.events_after(after, _PAGE):
            found += batch
            after = batch[-1].seq or after
            if len(batch) < _PAGE:
                break
        return found
