"""What helpdesks do to tickets: change them and reply; the conversation follows the ticket."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from core import events
from core.clock import Clock
from core.model import (
    MAX_FAQ_TRIES,
    Author,
    Conversation,
    ConversationStatus,
    DownstreamEvent,
    FaqTry,
    Message,
    Priority,
    Ticket,
    TicketStatus,
    outbound_message,
)
from core.store import NotFound, VersionConflict
from core.store.roles import Conversations, Tickets
from gateway.outbound import Outbound

_MAX_RETRIES = 8


class TicketStore(Tickets, Conversations, Protocol):
    """The roles ticket changes use: tickets, and the conversation that follows its ticket."""


class TicketConflict(Exception):
    """The ticket's conversation is held by another active ticket (API: 409)."""


class IdempotencyMismatch(Exception):
    """An Idempotency-Key was reused for a different reply (API: 422)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketChange:
    """Absolute values from an agent; relative ones (raise, add) from the system, applied to the current ticket."""

    status: TicketStatus | None = None
    priority: Priority | None = None
    tags: tuple[str, ...] | None = None
    assignee: str | None = None
    clear_assignee: bool = False
    raise_priority: bool = False  # one step up (a repeat caller), never past urgent
    add_tags: tuple[str, ...] = ()
    faq_try: FaqTry | None = None  # the bot's try on the ticket's behalf (e.g. a voicemail it answered)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyResult:
    message: Message
    created: bool
    delivery: str | None


class TicketService:
    def __init__(self, store: TicketStore, outbound: Outbound, clock: Clock) -> None:
        self._store = store
        self._outbound = outbound
        self._clock = clock

    async def change(self, ticket_ref: str, change: TicketChange) -> Ticket:
        for _ in range(_MAX_RETRIES):
            ticket = await self._require(ticket_ref)
            diff: dict[str, Any] = {}
            if change.status is not None and change.status != ticket.status:
                diff["status"] = {"from": ticket.status, "to": change.status}
            priority = change.priority or (_raised(ticket.priority) if change.raise_priority else ticket.priority)
            if priority != ticket.priority:
                diff["priority"] = {"from": ticket.priority, "to": priority}
            tags = ticket.tags if change.tags is None else change.tags
            tags = (*tags, *(t for t in change.add_tags if t not in tags))
            if tags != ticket.tags:
                diff["tags"] = {"from": list(ticket.tags), "to": list(tags)}
            faq_tries = ticket.faq_tries
            if change.faq_try is not None:
                faq_tries = (*faq_tries, change.faq_try)[-MAX_FAQ_TRIES:]
                diff["faq_tries"] = {"added": change.faq_try}
            assignee = None if change.clear_assignee else (change.assignee or ticket.assignee)
            if assignee != ticket.assignee:
                diff["assignee"] = {"from": ticket.assignee, "to": assignee}
            if not diff:
                return ticket
            if "status" in diff and change.status is not None and change.status.is_active:
                await self._claim_conversation(ticket)
            updated = dataclasses.replace(
                ticket,
                status=change.status or ticket.status,
                priority=priority,
                tags=tags,
                faq_tries=faq_tries,
                assignee=assignee,
                updated_at=self._clock(),
            )
            try:
                saved = await self._store.update_ticket(
                    updated, [events.ticket_updated(dataclasses.replace(updated, version=updated.version + 1), diff)]
                )
            except VersionConflict:
                continue
            if "status" in diff and not saved.status.is_active:
                await self._follow(saved, ConversationStatus.RESOLVED)
            return saved
        raise VersionConflict(f"ticket {ticket_ref} kept changing")

    async def reply(
        self, ticket_ref: str, text: str, *, agent: str | None, idempotency_key: str | None, via: str | None = None
    ) -> ReplyResult:
        """``via``: the integration that posted it for ``agent`` (both names are kept on the message)."""
        ticket = await self._require(ticket_ref)
        conversation = await self._claim_conversation(ticket)
        now = self._clock()
        message = outbound_message(
            conversation,
            author=Author.AGENT,
            text=text,
            at=now,
            external_id=f"api:{ticket.id}:{idempotency_key}" if idempotency_key else None,
            ticket_id=ticket.id,
            meta=({"agent": agent} | ({"via": via} if via else {})) if agent else None,
        )
        stored, delivery = await self._outbound.store_and_send(message, conversation)
        if delivery is None:
            if stored.text != message.text:
                raise IdempotencyMismatch("this Idempotency-Key was already used for a different reply on this ticket")
            return ReplyResult(message=stored, created=False, delivery=None)
        stored = dataclasses.replace(stored, delivery=delivery.status, delivery_error=delivery.reason or delivery.error)
        if ticket.status is not TicketStatus.OPEN and ticket.status is not TicketStatus.PENDING:
            await self.change(ticket.id, TicketChange(status=TicketStatus.OPEN, assignee=agent))
        return ReplyResult(message=stored, created=True, delivery=str(delivery.status))

    async def reopen_resolved(self, conversation_id: str) -> None:
        """The customer wrote again on a resolved conversation of an inbox that reopens (email
        ``resolved_reply: reopen``): its resolved ticket, then the conversation, go back to open."""
        now = self._clock()
        conversation = await self._store.get_conversation(conversation_id)
        if conversation is None or conversation.ticket_id is None:
            return
        for _ in range(_MAX_RETRIES):
            ticket = await self._store.get_ticket(conversation.ticket_id)
            if ticket is None or ticket.status.is_active:
                break
            reopened = dataclasses.replace(ticket, status=TicketStatus.OPEN, updated_at=now)
            change = {"status": {"from": ticket.status, "to": TicketStatus.OPEN}}
            try:
                await self._store.update_ticket(
                    reopened,
                    [events.ticket_updated(dataclasses.replace(reopened, version=reopened.version + 1), change)],
                )
                break
            except VersionConflict:
                continue
        for _ in range(_MAX_RETRIES):
            fresh = await self._store.get_conversation(conversation.id)
            if fresh is None or fresh.status is not ConversationStatus.RESOLVED:
                return
            moved = dataclasses.replace(fresh.moved_to(ConversationStatus.OPEN), updated_at=now)
            try:
                await self._store.save_conversation(moved, [events.status_changed(moved, fresh.status, at=now)])
                return
            except VersionConflict:
                continue

    async def _claim_conversation(self, ticket: Ticket) -> Conversation:
        """An agent acts on the ticket: its conversation goes to the agent (open), attached to this ticket.

        A conversation that went back to the bot after this ticket was resolved is taken back; one that
        another active ticket holds is not (TicketConflict).
        """
        for _ in range(_MAX_RETRIES):
            conversation = await self._store.get_conversation(ticket.conversation_id)
            if conversation is None:
                raise NotFound(f"ticket {ticket.number} has no conversation")
            attached = conversation.ticket_id == ticket.id
            if attached and conversation.status is ConversationStatus.OPEN:
                return conversation
            if (
                not attached
                and conversation.ticket_id is not None
                and conversation.status
                in (
                    ConversationStatus.WAITING_FOR_AGENT,
                    ConversationStatus.OPEN,
                )
            ):
                other = await self._store.get_ticket(conversation.ticket_id)
                holder = other.number if other else conversation.ticket_id
                raise TicketConflict(f"the customer's conversation continues on ticket {holder}")
            moved = dataclasses.replace(
                conversation.moved_to(ConversationStatus.OPEN), ticket_id=ticket.id, updated_at=self._clock()
            )
            try:
                saved = await self._store.save_conversation(
                    moved, [events.status_changed(moved, conversation.status, at=moved.updated_at)]
                )
            except VersionConflict:
                continue
            await self._outbound.status_changed(saved)
            return saved
        raise VersionConflict(f"conversation of ticket {ticket.number} kept changing")

    async def _require(self, ticket_ref: str) -> Ticket:
        ticket = await self._store.get_ticket(ticket_ref)
        if ticket is None:
            raise NotFound(f"no ticket {ticket_ref!r}")
        return ticket

    async def _follow(self, ticket: Ticket, target: ConversationStatus | None) -> None:
        """Move the ticket's conversation to ``target`` if the state machine allows it."""
        if target is None:
            return
        for _ in range(_MAX_RETRIES):
            conversation = await self._store.get_conversation(ticket.conversation_id)
            if conversation is None or conversation.ticket_id != ticket.id or conversation.status == target:
                return
            try:
                moved = conversation.moved_to(target)
            except ValueError:
                return
            moved = dataclasses.replace(moved, updated_at=self._clock())
            change: list[DownstreamEvent] = [events.status_changed(moved, conversation.status, at=moved.updated_at)]
            try:
                saved = await self._store.save_conversation(moved, change)
            except VersionConflict:
                continue
            await self._outbound.status_changed(saved)
            return


def _raised(priority: Priority) -> Priority:
    order = list(Priority)
    return order[min(order.index(priority) + 1, len(order) - 1)]
