"""The audit log role: who changed what through the API, when, and a short before/after of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    id: str
    at: datetime
    actor: str  # the token's name
    on_behalf_of: str | None = None  # the agent an ``agents:act_as`` integration named ("li" via "zendesk-sync")
    action: str  # dotted, e.g. "ticket.update", "faq.update", "dead_letter.replay"
    target: str  # what was changed, e.g. "ticket:HL-000042", "faq:refund"
    request_id: str
    before: Mapping[str, Any] | None = None  # short summaries, never whole records or secrets
    after: Mapping[str, Any] | None = None
    seq: int = 0  # given by the store: the order entries were recorded in

    @property
    def who(self) -> str:
        return f"{self.on_behalf_of} via {self.actor}" if self.on_behalf_of else self.actor


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditQuery:
    """Newest first. ``actor`` matches the token's name or the agent it acted for."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    cursor: str | None = None  # from the previous page's ``next_cursor``
    limit: int = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditPage:
    entries: tuple[AuditEntry, ...]
    next_cursor: str | None = None


class AuditLog(Protocol):
    async def record_audit(self, entry: AuditEntry) -> AuditEntry:
        """Append the entry; returns it with its ``seq``."""
        ...

    async def audit_entries(self, query: AuditQuery) -> AuditPage:
        """A page of entries matching the query, newest first; ValueError for a cursor we did not issue."""
        ...

    async def purge_audit(self, before: datetime, limit: int = 1000) -> int:
        """Drop up to ``limit`` entries recorded before ``before``; returns how many went."""
        ...
