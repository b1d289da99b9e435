"""The small interface every channel connector implements."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from aiohttp import web

from core.config import BusinessHours
from core.model import (
    Channel,
    Conversation,
    Delivery,
    InboundMessage,
    Message,
    OutboundReply,
    QuarantinedItem,
    Ticket,
)
from core.store.base import Store
from core.tasks import TaskTracker


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorDeps:
    """What every connector is given; nothing else of the app is reachable from a connector."""

    store: Store
    tasks: TaskTracker  # background work that shutdown must await
    data_dir: Path  # for files a connector keeps (attachments, watched folders' state)
    business_hours: BusinessHours | None = None  # bot.business_hours: pages a connector serves state them


@dataclass(frozen=True, slots=True, kw_only=True)
class IntakeResult:
    """What intake tells a connector: the stored message, whether it was a repeat delivery, and the
    task that handles it (bot answer or ticket), for channels that can answer in the same exchange."""

    message: Message
    duplicate: bool
    handled: asyncio.Task[None] | None = None


class Rejected(Exception):
    """Intake refused the message as invalid (e.g. a pick of a FAQ entry that does not exist); nothing was stored."""


InboundSink = Callable[[InboundMessage], Awaitable[IntakeResult]]


class Connector(Protocol):
    channel: ClassVar[Channel]
    inbox: str

    def routes(self) -> list[web.RouteDef]:
        """HTTP routes this inbox serves; [] for pull connectors (IMAP)."""
        ...

    def running(self, sink: InboundSink) -> AbstractAsyncContextManager[None]:
        """Start (and on exit stop and await) the connector's own background work."""
        ...

    async def send(self, reply: OutboundReply) -> Delivery: ...

    async def notify(self, conversation: Conversation) -> None:
        """The conversation's status changed; live channels tell the customer, others ignore it."""
        ...

    async def ticket_opened(self, ticket: Ticket, conversation: Conversation) -> OutboundReply | None:
        """A ticket was opened on this inbox: the message the channel wants sent about it (email: an
        acknowledgement with its number), or None.

        The connector only composes it. The gateway stores it once (by its external id) and sends it
        like any reply, so a temporary failure is retried rather than lost.
        """
        ...

    def is_running(self) -> bool: ...

    async def drain(self) -> None:
        """Shutdown began: let go of long-lived connections so in-flight requests can finish."""
        ...


@runtime_checkable
class Replays(Protocol):
    """A connector that can take its quarantined input in again (``huiliu quarantine replay``, after a fix)."""

    async def replay(self, item: QuarantinedItem, sink: InboundSink) -> str | None:
        """What the item became (for the operator), or None when it still cannot be read: it stays quarantined."""
        ...


def stored_as(result: IntakeResult) -> str:
    return f"{'duplicate of' if result.duplicate else 'stored as'} message {result.message.id}"
