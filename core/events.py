"""Builders for the versioned downstream events; idempotency keys are derived, so a retry writes nothing new."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson

from core.codec import Encoded, dumps, to_jsonable
from core.model import (
    Conversation,
    ConversationStatus,
    DownstreamEvent,
    EventType,
    HandoffReason,
    Message,
    Ticket,
)


def ticket_summary(ticket: Ticket) -> dict[str, Any]:
    data = to_jsonable(ticket)
    assert isinstance(data, dict)
    return data


K = TypeVar("K")
V = TypeVar("V")


class _Handover(Generic[K, V]):
    """Encodings an event made, kept until the store writes the record they were made of (``take``). Bounded: an
    event whose record is never written (a duplicate a bulk write skips) leaves an entry behind, and a full table
    starts over (a miss costs one encoding)."""

    __slots__ = ("_kept", "_most")

    def __init__(self, most: int = 4096) -> None:  # above a bulk write's batch (2,000 lines)
        self._kept: dict[K, V] = {}
        self._most = most

    def keep(self, key: K, value: V) -> None:
        if len(self._kept) >= self._most:
            self._kept.clear()
        self._kept[key] = value

    def take(self, key: K) -> V | None:
        return self._kept.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._kept


# The encoding each message.created event made of its message (raw left out), by the message object, until the
# store writes that message: a message and its event are written together, and the message's row is the same
# JSON with raw, so it is encoded once (``message_json``; both stores take it from here). Each entry keeps its
# message alive, so only messages with a small raw are kept (a call record or a push, a few hundred bytes; not a
# mail of megabytes): at most ~4096 x 8 KiB.
_ENCODED: _Handover[int, tuple[Message, str, str]] = _Handover()
_ENCODED_RAW_MAX = 8192  # characters of raw

# Where raw goes back into the event's text: before the field that follows it. Only strings, enums, a time and
# attachments (no field of that name) come before it, and a '"' right after a ',' is never inside a JSON string
# (it would be escaped), so the first ',"<field>":' is that field's.
_FIELDS = [f.name for f in dataclasses.fields(Message)]
_AFTER_RAW = f',"{_FIELDS[_FIELDS.index("raw") + 1]}":'


def message_created(message: Message) -> DownstreamEvent:
    """The event's data is its message's encoding less raw, and its text (``codec.Encoded``) is made here once:
    the store writes it as it is and makes the message's row from it (``message_json``), where the row and the
    event were two encodings of nearly the same dict and the event's a copy of it."""
    body = to_jsonable(message)
    raw = body.pop("raw")  # audit copy stays in the store; events stay small
    text = dumps(body)
    if len(raw) <= _ENCODED_RAW_MAX:
        _ENCODED.keep(id(message), (message, text, raw))  # held: its id is not reused meanwhile
    return DownstreamEvent(
        type=EventType.MESSAGE_CREATED,
        data=Encoded({"message": body}, '{"message":' + text + "}"),
        occurred_at=message.created_at,
        idempotency_key=f"message.created:{message.id}",
        ticket_id=message.ticket_id,
        conversation_id=message.conversation_id,
    )


def message_json(message: Message) -> str:
    """``codec.dumps(message)``: the stored form, from the encoding its message.created event made if it has one
    (raw put back in its place)."""
    found = _ENCODED.take(id(message))
    if found is not None and found[0] is message:
        _, text, raw = found
        at = text.find(_AFTER_RAW)
        if at > 0:  # always, while Message keeps its fields' order (a byte-for-byte test checks the row)
            return text[:at] + ',"raw":' + orjson.dumps(raw).decode() + text[at:]
    return dumps(message)


# The encoding a ticket event made of its ticket, by (ticket id, version), until the store writes that ticket's row
# (``ticket_json``): a ticket's row and its ticket.created or ticket.updated event were two encodings of the same
# ticket, plus the event's own. Each entry keeps its ticket (a few hundred bytes) alive.
_TICKETS: _Handover[tuple[str, int], tuple[Ticket, str]] = _Handover()


def _ticket_text(ticket: Ticket) -> tuple[dict[str, Any], str]:
    """The ticket's summary and its ``dumps`` text, kept for its row (``ticket_json``)."""
    body = ticket_summary(ticket)
    text = dumps(body)  # the same text as dumps(ticket): the summary is what its encoder makes of it
    _TICKETS.keep((ticket.id, ticket.version), (ticket, text))
    return body, text


def ticket_json(ticket: Ticket) -> str:
    """``codec.dumps(ticket)``: the text the ticket's event made of it, if an event was made of this ticket (the
    same object, or an equal one: an update's event and row are two copies of the saved ticket)."""
    found = _TICKETS.take((ticket.id, ticket.version))
    if found is not None and (found[0] is ticket or found[0] == ticket):
        return found[1]
    return dumps(ticket)


def ticket_created(ticket: Ticket) -> DownstreamEvent:
    body, text = _ticket_text(ticket)
    return DownstreamEvent(
        type=EventType.TICKET_CREATED,
        data=Encoded({"ticket": body}, '{"ticket":' + text + "}"),
        occurred_at=ticket.created_at,
        idempotency_key=f"ticket.created:{ticket.id}",
        ticket_id=ticket.id,
        conversation_id=ticket.conversation_id,
    )


def ticket_updated(ticket: Ticket, changes: dict[str, Any]) -> DownstreamEvent:
    """``ticket`` is the saved ticket (its version is the one after the change)."""
    body, text = _ticket_text(ticket)
    diff = to_jsonable(changes)
    return DownstreamEvent(
        type=EventType.TICKET_UPDATED,
        data=Encoded({"ticket": body, "changes": diff}, '{"ticket":' + text + ',"changes":' + dumps(diff) + "}"),
        occurred_at=ticket.updated_at,
        idempotency_key=f"ticket.updated:{ticket.id}:{ticket.version}",
        ticket_id=ticket.id,
        conversation_id=ticket.conversation_id,
    )


def conversation_handoff(conversation: Conversation, ticket: Ticket, reason: HandoffReason) -> DownstreamEvent:
    return DownstreamEvent(
        type=EventType.CONVERSATION_HANDOFF,
        data={
            "conversation_id": conversation.id,
            "ticket_id": ticket.id,
            "ticket_number": ticket.number,
            "reason": str(reason),
            "faq_tries": to_jsonable(ticket.faq_tries),  # what the agent sees on the ticket
        },
        occurred_at=conversation.updated_at,
        idempotency_key=f"conversation.handoff:{conversation.id}:{ticket.id}",
        ticket_id=ticket.id,
        conversation_id=conversation.id,
    )


def status_changed(conversation: Conversation, previous: ConversationStatus, *, at: datetime) -> DownstreamEvent:
    """``conversation`` is the record about to be saved: each version is saved once, so it names this change."""
    return DownstreamEvent(
        type=EventType.CONVERSATION_STATUS_CHANGED,
        data={"conversation_id": conversation.id, "from": str(previous), "to": str(conversation.status)},
        occurred_at=at,
        idempotency_key=f"conversation.status_changed:{conversation.id}:{conversation.version}",
        ticket_id=conversation.ticket_id,
        conversation_id=conversation.id,
    )


def ticket_sla(ticket: Ticket, *, target: str, kind: str, due_at: datetime) -> DownstreamEvent:
    """``kind`` is ``warning`` or ``breach``: once per ticket, target and due time, however often it is found."""
    event_type = EventType.TICKET_SLA_BREACHED if kind == "breach" else EventType.TICKET_SLA_WARNING
    return DownstreamEvent(
        type=event_type,
        data={"ticket": ticket_summary(ticket), "target": target, "due_at": due_at.isoformat()},
        occurred_at=ticket.updated_at,
        idempotency_key=f"{event_type}:{ticket.id}:{target}:{due_at.isoformat()}",
        ticket_id=ticket.id,
        conversation_id=ticket.conversation_id,
    )
