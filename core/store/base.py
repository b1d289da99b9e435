"""The Store interface: the sum of its roles (roles.py), which every backend implements with the same guarantees.

Consumers depend on the roles they use: a connector gets a ChannelStore (its own state and the reads that
thread its messages), never the writes that change conversations, tickets or contacts (intake makes those).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from core.model import Channel, Contact, Conversation, Direction, Identity, Message, Ticket
from core.store.audit import AuditLog
from core.store.roles import (
    Checkpoints,
    Contacts,
    Conversations,
    Coordination,
    DeadLetters,
    EventLog,
    Frames,
    GaugeReader,
    Lifecycle,
    LogLines,
    Outbox,
    Quarantine,
    Secrets,
    Tickets,
    Timers,
    Transcript,
)
from core.store.types import (
    DeadLetter,
    Gauges,
    Hits,
    NotFound,
    Outgoing,
    StoredFrame,
    StoreError,
    StoreUnavailable,
    TicketEvents,
    TicketPage,
    TicketQuery,
    VersionConflict,
)

__all__ = [
    "ChannelStore",
    "DeadLetter",
    "GaugeReader",
    "Gauges",
    "Hits",
    "NotFound",
    "Outgoing",
    "ReportsDurability",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredFrame",
    "TicketEvents",
    "TicketPage",
    "TicketQuery",
    "VersionConflict",
]


class Store(
    Lifecycle,
    Contacts,
    Conversations,
    Transcript,
    LogLines,
    Outbox,
    Tickets,
    EventLog,
    Frames,
    Quarantine,
    DeadLetters,
    Coordination,
    Secrets,
    Checkpoints,
    AuditLog,
    Timers,
    GaugeReader,
    Protocol,
):
    """Every role: what the gateway's wiring opens and hands out in parts."""


class ChannelStore(Coordination, Checkpoints, Secrets, Frames, Quarantine, Protocol):
    """What a connector may use: its own state (claims, leases, checkpoints, secrets, frames, quarantine) and
    the reads that thread and address its messages. Domain state changes only through intake and services."""

    async def get_contact(self, contact_id: str) -> Contact | None: ...

    async def get_conversation(self, conversation_id: str) -> Conversation | None: ...

    async def find_conversation(self, inbox: str, address: Identity, thread: str = "") -> Conversation | None: ...

    async def get_message(self, message_id: str) -> Message | None: ...

    async def find_message(
        self, *, channel: Channel, inbox: str, direction: Direction, external_id: str
    ) -> Message | None: ...

    async def stored_external_ids(
        self, *, channel: Channel, inbox: str, direction: Direction, external_ids: Sequence[str]
    ) -> set[str]: ...

    async def messages(
        self, conversation_id: str, *, ticket_id: str | None = None, episode: int | None = None
    ) -> list[Message]: ...

    async def get_ticket(self, ticket_id_or_number: str) -> Ticket | None: ...


@runtime_checkable
class ReportsDurability(Protocol):
    """A backend that can say what an acknowledged message survives (shown by /readyz)."""

    async def durability(self) -> dict[str, str]: ...
