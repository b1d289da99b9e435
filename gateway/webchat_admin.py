"""Admin control of web chat sessions: revoke a visitor's session token (a leaked link, an abusive visitor)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from aiohttp import web

from core.jsonweb import json_response
from core.scopes import Scope
from gateway.access import PRINCIPAL, Guarded, error, needs
from gateway.audit import Auditor

PREFIX = "/api/v1"
_VISITOR = re.compile(r"^[0-9a-f]{32}$")


@runtime_checkable
class RevokesSessions(Protocol):
    async def revoke(self, visitor: str) -> bool: ...


class WebchatSessions:
    """``DELETE /api/v1/webchat/{inbox}/sessions/{visitor_id}``: the token is refused from now on (on every
    instance) and the visitor's open sockets close with 4401; the conversation and its ticket stay."""

    def __init__(self, connectors: Mapping[str, object], auditor: Auditor) -> None:
        self._connectors = connectors
        self._audit = auditor

    def routes(self) -> list[Guarded]:
        return [
            needs(Scope.ADMIN, web.delete(f"{PREFIX}/webchat/{{inbox}}/sessions/{{visitor}}", self.revoke)),
        ]

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        inbox, visitor = request.match_info["inbox"], request.match_info["visitor"]
        connector = self._connectors.get(inbox)
        if not isinstance(connector, RevokesSessions) or not request[PRINCIPAL].sees(inbox):
            return error(404, "not_found", f"no web chat inbox named {inbox!r}")
        if not _VISITOR.match(visitor):
            return error(400, "bad_request", "visitor_id must be the 32 hex digits a welcome frame carries")
        was_live = await connector.revoke(visitor)
        await self._audit.record(
            request,
            action="webchat.session.revoke",
            target=f"webchat:{inbox}:{visitor}",
            before={"session": "live" if was_live else "expired"},
            after={"session": "revoked"},
        )
        return json_response({"inbox": inbox, "visitor_id": visitor, "revoked": True, "was_live": was_live})
