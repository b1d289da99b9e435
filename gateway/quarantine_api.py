"""``/api/v1/quarantine``: look at input that could not be read, and take it in again once it can."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from connectors.base import Connector, InboundSink
from connectors.capabilities import Replays
from core.jsonweb import json_response
from core.model import QuarantinedItem
from core.scopes import Scope
from core.store import NotFound, Store
from gateway.access import Guarded, error, needs
from gateway.api import PREFIX, json_errors
from gateway.audit import Auditor
from gateway.query import int_param

_PREVIEW_BYTES = 2000


def quarantined_view(item: QuarantinedItem) -> dict[str, Any]:
    """The reason and a preview of the raw input; the full bytes only on request (they may be large)."""
    return {
        "id": item.id,
        "channel": str(item.channel),
        "inbox": item.inbox,
        "reason": item.reason,
        "received_at": item.received_at.isoformat(),
        "replayed": item.replayed,
        "size": len(item.raw),
        "preview": item.raw[:_PREVIEW_BYTES].decode("utf-8", errors="replace"),
    }


class QuarantineApi:
    def __init__(self, store: Store, connectors: Mapping[str, Connector], sink: InboundSink, auditor: Auditor) -> None:
        """``sink``: intake as the running connectors use it, so a replay is counted like any message."""
        self._store = store
        self._connectors = connectors
        self._sink = sink
        self._audit = auditor

    def routes(self) -> list[Guarded]:
        """Raw customer input (mail, pushes) and taking it in again: for ``admin`` tokens only."""
        j = json_errors
        return [
            needs(Scope.ADMIN, web.get(f"{PREFIX}/quarantine", j(self.list_items))),
            needs(Scope.ADMIN, web.get(f"{PREFIX}/quarantine/{{item}}", j(self.get_item))),
            needs(Scope.ADMIN, web.post(f"{PREFIX}/quarantine/{{item}}/replay", j(self.replay))),
        ]

    async def list_items(self, request: web.Request) -> web.StreamResponse:
        include = request.query.get("all") in ("1", "true")
        limit = int_param(request.query.get("limit"), default=100, low=1, high=1000)
        if limit is None:
            return error(400, "bad_query", "limit must be an integer from 1 to 1000")
        items = await self._store.quarantined(include_replayed=include, limit=limit)
        return json_response({"items": [quarantined_view(i) for i in items]})

    async def get_item(self, request: web.Request) -> web.StreamResponse:
        item = await self._require(request)
        body = quarantined_view(item)
        body["raw_base64"] = base64.b64encode(item.raw).decode()
        return json_response(body)

    async def replay(self, request: web.Request) -> web.StreamResponse:
        item = await self._require(request)
        if item.replayed:
            return error(409, "conflict", f"item {item.id!r} was already replayed")
        connector = self._connectors.get(item.inbox)
        if not isinstance(connector, Replays):
            return error(409, "conflict", f"inbox {item.inbox!r} cannot replay its input")
        detail = await connector.replay(item, self._sink)
        if detail is None:
            return error(422, "still_unreadable", "it still cannot be read; it stays quarantined")
        await self._store.mark_replayed(item.id)
        await self._audit.record(request, action="quarantine.replay", target=f"quarantine:{item.id}",
                                 after={"detail": detail})  # fmt: skip
        return json_response({"id": item.id, "replayed": True, "detail": detail})

    async def _require(self, request: web.Request) -> QuarantinedItem:
        item = await self._store.get_quarantined(request.match_info["item"])
        if item is None:
            raise NotFound(f"no quarantined item {request.match_info['item']!r}")
        return item
