"""The small interface every channel connector implements, and what it is given (ConnectorDeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from aiohttp import web

from core.config import BusinessHours
from core.model import (
    Channel,
    Conversation,
    Delivery,
    Identity,
    InboundMessage,
    Message,
    OutboundReply,
)
from core.observe import NO_OBSERVER, Observer
from core.outage import OutageLog
from core.store.base import ChannelStore
from core.tasks import TaskTracker

OpenConversation = Callable[[Identity, Channel, str], Awaitable[Conversation]]


# Messages taken in at once when a connector is given no shared gate (``ConnectorDeps.intake_gate``): fewer than
# the Redis store's pooled connections (50 by default), so those taken in never wait out the pool's timeout.
ACTIVE_PUSHES = 40


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorDeps:
    """What every connector is given; nothing else of the app is reachable from a connector."""

    store: ChannelStore  # its own state and the reads that thread its messages; never domain writes
    tasks: TaskTracker  # background work that shutdown must await
    data_dir: Path  # for files a connector keeps (attachments, watched folders' state)
    business_hours: BusinessHours | None = None  # bot.business_hours: pages a connector serves state them
    # The conversation of an address on this inbox, opened (with its contact) if it has none yet: for a channel
    # that greets a visitor with the conversation before the first message. A service, not a store write.
    open_conversation: OpenConversation | None = None
    observer: Observer = NO_OBSERVER  # counts what the connector sees (a channel API's errors)
    # Messages taken in at once, shared by every inbox of the process: fewer than the store's pooled connections,
    # so a burst queues before intake instead of each store call waiting out the pool's timeout (None: its own).
    intake_gate: asyncio.Semaphore | None = None
    # The process's one rate-limited report of a store outage: a connector that answers "retry later" on its own
    # (web chat's error frame) logs it there, once per interval with a count, as the HTTP side does.
    outage: OutageLog = field(default_factory=OutageLog)


@dataclass(frozen=True, slots=True, kw_only=True)
class IntakeResult:
    """What intake tells a connector: the stored message, whether it was a repeat delivery, and the
    task that handles it (bot answer or ticket), for channels that can answer in the same exchange."""

    message: Message
    duplicate: bool
    handled: asyncio.Task[None] | None = None
    # The bot's reply, stored with the message as delivered in this exchange (``InboundMessage.inline_reply``):
    # the connector writes it in its response, and calls ``unsent`` when it could not (the reply then goes out
    # the channel's other way, as a reply whose inline write failed always has).
    reply: Message | None = None
    unsent: Callable[[], Coroutine[Any, Any, object]] | None = None


class Rejected(Exception):
    """Intake refused the message as invalid (e.g. a pick of a FAQ entry that does not exist); nothing was stored."""


InboundSink = Callable[[InboundMessage], Awaitable[IntakeResult]]
# Intake of many log lines in one store write (a CDR import's answered calls): a result per message, None for
# one that the InboundSink must take on its own, in order (``Intake.receive_log_lines``).
LogLinesSink = Callable[[Sequence[InboundMessage]], Awaitable[list[IntakeResult | None]]]


class Connector(Protocol):
    """What every connector does. Optional abilities (notify, acknowledge tickets, drain, typing, replay,
    import calls) are the small protocols in ``connectors/capabilities.py``."""

    channel: ClassVar[Channel]
    inbox: str

    def routes(self) -> list[web.RouteDef]:
        """HTTP routes this inbox serves; [] for pull connectors (IMAP)."""
        ...

    def running(self, sink: InboundSink) -> AbstractAsyncContextManager[None]:
        """Start (and on exit stop and await) the connector's own background work."""
        ...

    async def send(self, reply: OutboundReply) -> Delivery: ...

    def is_running(self) -> bool: ...


def stored_as(result: IntakeResult) -> str:
    return f"{'duplicate of' if result.duplicate else 'stored as'} message {result.message.id}"
