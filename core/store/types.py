"""The Store's value types and errors, shared by its roles, its backends and their callers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from core.model import (
    Channel,
    Conversation,
    ConversationStatus,
    Delivery,
    DownstreamEvent,
    Identity,
    Message,
    Ticket,
    TicketStatus,
)
from core.model import Checkpoint as Checkpoint  # re-exported: the store's word for it


class StoreError(Exception):
    pass


class StoreUnavailable(StoreError):
    """The store cannot be reached now (down, partitioned, out of connections): try again shortly.

    Nothing was acknowledged, so callers answer 503 with Retry-After and the sender's own retry delivers it.
    """


class VersionConflict(StoreError):
    """Someone else saved the record first: reload and try again."""


class AdmissionRefused(Exception):
    """A message's ``Admission`` is held by another holder (a replayed nonce with another body): nothing written."""


class NotFound(StoreError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketQuery:
    """Without ``sla`` tickets come in update order; with it (``at_risk`` or ``breached``) by due time."""

    status: TicketStatus | None = None
    channel: Channel | None = None
    updated_since: datetime | None = None
    queue: str | None = None
    category: str | None = None
    assignee: str | None = None
    sla: str | None = None
    cursor: str | None = None
    limit: int = 50
    inboxes: frozenset[str] | None = None  # None: every inbox


@dataclass(frozen=True, slots=True, kw_only=True)
class Assignment:
    """Ask the store to pick the ticket's assignee among a queue's agents, in the write that creates it, so two
    instances creating tickets at once still take turns (round_robin) or balance (least_open: fewest active
    tickets of that queue)."""

    queue: str
    agents: tuple[str, ...]
    mode: str = "round_robin"


@dataclass(frozen=True, slots=True, kw_only=True)
class DueTimer:
    key: str
    due_at: datetime


def opened_conversation(
    conversation_id: str, contact_id: str, channel: Channel, inbox: str, address: Identity, thread: str, now: datetime
) -> Conversation:
    """A conversation as either backend first stores it: with the bot, version 1."""
    return Conversation(
        id=conversation_id,
        contact_id=contact_id,
        channel=channel,
        inbox=inbox,
        address=address,
        thread=thread,
        status=ConversationStatus.BOT,
        version=1,
        created_at=now,
        updated_at=now,
    )


def fill_assignee(events: Sequence[DownstreamEvent], assignee: str) -> list[DownstreamEvent]:
    """Events written with a ticket whose assignee the store picks in the same write: each names ``assignee``
    (a ``ticket.updated`` also lists it among its changes). Redis passes a placeholder its script fills in."""
    out = []
    for event in events:
        data = dict(event.data)
        ticket = data.get("ticket")
        if isinstance(ticket, dict) and ticket.get("assignee") is None:
            data["ticket"] = {**ticket, "assignee": assignee}
            changes = data.get("changes")
            if isinstance(changes, dict) and "assignee" not in changes:
                data["changes"] = {**changes, "assignee": {"from": None, "to": assignee}}
        out.append(dataclasses.replace(event, data=data))
    return out


def ticket_timer(ticket_id: str) -> str:
    """The timer every ticket write keeps at the ticket's next SLA check (``TicketSla.next_check_at``)."""
    return f"ticket:{ticket_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketPage:
    tickets: tuple[Ticket, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """A frame to append for ``address`` (web chat), numbered by the store as ``push_frame`` numbers it."""

    address: Identity
    body: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredFrame:
    seq: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """An event a webhook subscription gave up on, kept for an operator to inspect and replay."""

    id: str
    subscription: str
    event: DownstreamEvent
    attempts: int
    error: str
    failed_at: datetime


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An outbound message that is to be sent: it waits in the outbox until its delivery is final (sent,
    queued or failed), so a send the process died in is sent again by ``take_outgoing`` instead of lost.

    ``hold_s``: nobody takes it from the outbox for that long (the sender is still at it).
    """

    in_reply_to: str | None
    hold_s: float


TicketEvents = Callable[[Ticket, Conversation], Sequence[DownstreamEvent]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Hits:
    """A rate counter's window after one more hit: a limit compares ``count``; ``reset_in_s`` is its Retry-After."""

    count: int
    reset_in_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Gauges:
    """What the store holds right now, for metrics and health: read at scrape time, so every instance
    reports the same numbers."""

    tickets_by_status: dict[str, int]
    quarantine_pending: int
    quarantined_since: int  # pending items received at or after the ``since`` asked for
    outbox_size: int
    outbox_oldest: datetime | None  # when the oldest message still waiting in the outbox was written


# What a log line becomes on its conversation as the store finds it: the message and its events, or None when
# that conversation needs intake's full handling for it (a ticket's rules to run, a resolved one to reopen).
LogLineBuild = Callable[[Conversation], tuple[Message, Sequence[DownstreamEvent]] | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class LogLine:
    """An inbound message that intake stores handled, with nothing more to do, when its conversation lets it (an
    answered call in a CDR import): ``add_log_lines`` stores many in one write. The address part is what
    ``conversation_for`` takes; ``build`` makes the message from the conversation the store found or opened."""

    address: Identity
    channel: Channel
    inbox: str
    name: str | None
    now: datetime
    build: LogLineBuild
    thread: str = ""
    aliases: tuple[Identity, ...] = ()


class LineReads(Protocol):
    """What a ticket line's ``build`` may read, inside the write that stores the line: what intake reads alone."""

    def tickets_of(self, contact_id: str) -> list[Ticket]: ...

    def transcript(self, conversation: Conversation) -> list[Message]:
        """The conversation's messages of its current episode, in order (``messages(..., episode=...)``)."""
        ...

    def ticket(self, ticket_id: str) -> Ticket | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketWrite:
    """What a ticket line becomes: its message (stored handled) with its events, then either a new ticket for
    the conversation (``opened``: the draft, unnumbered, and the conversation as it is to be saved, as
    ``create_ticket`` takes them) or a change to an existing ticket (``changed``: as ``update_ticket`` takes it),
    or neither."""

    message: Message
    events: Sequence[DownstreamEvent]
    opened: tuple[Ticket, Conversation, TicketEvents] | None = None
    changed: tuple[Ticket, Sequence[DownstreamEvent]] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketLine:
    """An inbound message whose handling is a ticket write and nothing else intake must do in between (a missed
    call in a CDR import: a callback ticket, or a raised priority on the open one): ``add_ticket_lines`` stores
    many in one write. ``build`` decides on the conversation the store found or opened, reading through
    ``LineReads``; None when that conversation needs intake's full handling."""

    address: Identity
    channel: Channel
    inbox: str
    name: str | None
    now: datetime
    build: Callable[[Conversation, LineReads], TicketWrite | None]
    thread: str = ""
    aliases: tuple[Identity, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketLineStored:
    """A ticket line as stored: the message and whether it is new (as ``add_message``), and the ticket opened
    with the conversation as saved (for intake to announce), None when it opened none (a repeat, a change)."""

    message: Message
    created: bool
    opened: tuple[Ticket, Conversation] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FirstReply:
    """The bot's reply to a first write's message, written with it when that message is new: the reply, its
    events, the conversation as the bot's decision leaves it (saved version-checked) and its delivery. With a
    ``frame`` (a channel that delivers by frames: web chat), the frame is appended in the same write, as
    ``add_framed_message`` appends it, and its number handed to ``numbered`` before the write returns."""

    message: Message
    events: tuple[DownstreamEvent, ...]
    saving: Conversation
    delivered: Delivery
    frame: Frame | None = None
    numbered: Callable[[int], None] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FirstWrite:
    """An inbound message as intake stores it on the conversation the store just found or opened: what
    ``add_message`` takes for it (``Transcript.receive_first`` writes both in one go). With a ``reply`` (only
    for a store whose ``replies_in_first_write`` is true) the message is stored handled, and its reply with it,
    in the same transaction: one write where the reply was a second one after the bot's task."""

    message: Message
    events: tuple[DownstreamEvent, ...]
    handled: bool = False
    checkpoints: tuple[Checkpoint, ...] = ()
    reply: FirstReply | None = None


# What an inbound message becomes on its conversation as the store finds it, or None when that conversation
# needs intake's full path first (a resolved one to reopen, a survey reply to read).
FirstBuild = Callable[[Conversation], FirstWrite | None]
