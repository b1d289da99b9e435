"""What helpdesks do to tickets: change them and reply; the conversation follows the ticket."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from core import events
from core.clock import Clock
from core.evolve import evolve
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
    TicketSla,
    TicketStatus,
    outbound_message,
)
from core.store import NotFound, VersionConflict
from core.store.roles import Conversations, Tickets, Timers
from core.store.types import Assignment, ticket_timer
from gateway.outbound import Outbound
from normalizer.rules import sla as sla_clock
from normalizer.rules.engine import ServiceRules, apply_rule_set

_MAX_RETRIES = 8


class TicketStore(Tickets, Conversations, Timers, Protocol):
    """The roles ticket changes use: tickets, the conversation that follows its ticket, and the SLA timers."""


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
    agent_replied_at: datetime | None = None  # an agent's reply went out: first/next response targets are met


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyResult:
    message: Message
    created: bool
    delivery: str | None


# What follows a ticket's status change for the customer (a progress notice, the survey): saved ticket, old status.
OnStatus = Callable[[Ticket, TicketStatus], Awaitable[None]]


class TicketService:
    def __init__(
        self,
        store: TicketStore,
        outbound: Outbound,
        clock: Clock,
        rules: ServiceRules | None = None,
        *,
        on_status: OnStatus | None = None,
    ) -> None:
        self._store = store
        self._outbound = outbound
        self._clock = clock
        self._rules = rules
        self._on_status = on_status

    @property
    def rules(self) -> ServiceRules | None:
        return self._rules

    async def change(self, ticket_ref: str, change: TicketChange) -> Ticket:
        for _ in range(_MAX_RETRIES):
            ticket = await self._require(ticket_ref)
            revised = self._revised(ticket, change)
            if revised is None:
                return ticket
            updated, diff = revised
            if "status" in diff and change.status is not None and change.status.is_active:
                await self._claim_conversation(ticket)
            try:
                saved = await self._store.update_ticket(updated, _updated_events(updated, diff))
            except VersionConflict:
                continue
            if "status" in diff and not saved.status.is_active:
                await self._follow(saved, ConversationStatus.RESOLVED)
                await self._release_follow_ups(saved)
            if "status" in diff and self._on_status is not None:
                await self._on_status(saved, ticket.status)
            return saved
        raise VersionConflict(f"ticket {ticket_ref} kept changing")

    def revision(self, ticket: Ticket, change: TicketChange) -> tuple[Ticket, list[DownstreamEvent]] | None:
        """What ``change`` writes for ``ticket`` as read (``update_ticket``'s arguments), None when it changes
        nothing; only for a change that writes nothing else (no status: a raised priority), so a bulk write
        (``Store.add_ticket_lines``) can make it."""
        if change.status is not None:
            raise ValueError("a status change writes more than the ticket: use change()")
        revised = self._revised(ticket, change)
        return None if revised is None else (revised[0], _updated_events(*revised))

    def _revised(self, ticket: Ticket, change: TicketChange) -> tuple[Ticket, dict[str, Any]] | None:
        """The ticket after ``change`` and what changed, None when nothing does."""
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
        status = change.status or ticket.status
        sla = self._sla_after(ticket, status, change.agent_replied_at)
        if sla != ticket.sla:
            diff["sla"] = {"from": ticket.sla, "to": sla}
        if not diff:
            return None
        updated = evolve(
            ticket,
            status=status,
            priority=priority,
            tags=tags,
            faq_tries=faq_tries,
            assignee=assignee,
            sla=sla,
            updated_at=self._clock(),
        )
        return updated, diff

    def _sla_after(self, ticket: Ticket, status: TicketStatus, replied_at: datetime | None) -> TicketSla | None:
        """The SLA clocks after a change: an agent's reply meets the response targets, ``pending`` pauses the
        resolution clock and leaving it resumes it, resolving stops every clock."""
        sla = ticket.sla
        if sla is None:
            return None
        now = self._clock()
        plan = self._rules.plan(sla.policy) if self._rules is not None else None
        if replied_at is not None:
            sla = sla_clock.agent_replied(sla, replied_at)
        if not status.is_active:
            return sla_clock.finished(sla)
        if status is TicketStatus.PENDING:
            return sla_clock.pause(sla, plan, now)
        return sla_clock.resume(sla, plan, now)

    async def revise(
        self, ticket_ref: str, revise: Callable[[Ticket], Ticket], *, known: Ticket | None = None
    ) -> Ticket:
        """Save what ``revise`` makes of the current ticket (the rules re-applied to a new customer message,
        a new response clock), with a ``ticket.updated`` naming what changed; nothing if nothing did.
        ``known``: the ticket as just read (a stale one fails the version check and is read again)."""
        for _ in range(_MAX_RETRIES):
            ticket, known = known or await self._require(ticket_ref), None
            updated = revise(ticket)
            diff = _differences(ticket, updated)
            if not diff:
                return ticket
            updated = dataclasses.replace(updated, updated_at=self._clock())
            saved_as = dataclasses.replace(updated, version=updated.version + 1)
            try:
                return await self._store.update_ticket(
                    updated, [events.ticket_updated(saved_as, diff)], assign=self._assignment(ticket, updated)
                )
            except VersionConflict:
                continue
        raise VersionConflict(f"ticket {ticket_ref} kept changing")

    def _assignment(self, before: Ticket, after: Ticket) -> Assignment | None:
        """A ticket the rules moved to a queue with agents gets one of them, picked by the store."""
        if self._rules is None or after.assignee is not None or after.queue == before.queue:
            return None
        queue = self._rules.queues.get(after.queue or "")
        if queue is None or not queue.agents:
            return None
        return Assignment(queue=queue.name, agents=queue.agents, mode=queue.assign)

    async def fire_sla(self, ticket_ref: str) -> list[str]:
        """Record the SLA warnings and breaches due now, with their events and any ``on_breach`` escalation,
        in one version-checked write: each fires once, whichever instance finds it first. Returns what fired."""
        for _ in range(_MAX_RETRIES):
            ticket = await self._store.get_ticket(ticket_ref)
            if ticket is None or ticket.sla is None or not ticket.status.is_active:
                await self._store.set_timer(ticket_timer(ticket_ref), _check_at(ticket) if ticket else None)
                return []
            now = self._clock()
            fired = sla_clock.due_now(ticket.sla, now)
            if not fired:
                await self._store.set_timer(ticket_timer(ticket.id), ticket.sla.next_check_at())
                fresh = await self._store.get_ticket(ticket.id)
                if fresh is not None and fresh.version != ticket.version:  # changed meanwhile: its write set it
                    await self._store.set_timer(ticket_timer(ticket.id), _check_at(fresh))
                return []
            updated = dataclasses.replace(ticket, sla=sla_clock.record(ticket.sla, fired), updated_at=now)
            plan = self._rules.plan(ticket.sla.policy) if self._rules is not None else None
            if plan is not None and plan.on_breach is not None and any(f.kind == "breach" for f in fired):
                updated = apply_rule_set(updated, plan.on_breach)
            saved_as = dataclasses.replace(updated, version=updated.version + 1)
            out = [events.ticket_sla(saved_as, target=f.target, kind=f.kind, due_at=f.due_at) for f in fired]
            escalated = _differences(dataclasses.replace(ticket, sla=updated.sla), updated)
            if escalated:
                out.append(events.ticket_updated(saved_as, escalated))
            try:
                await self._store.update_ticket(updated, out, assign=self._assignment(ticket, updated))
            except VersionConflict:
                continue
            return [f"{f.target}:{f.kind}" for f in fired]
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
            await self.change(ticket.id, TicketChange(status=TicketStatus.OPEN, assignee=agent, agent_replied_at=now))
        else:
            await self.change(ticket.id, TicketChange(agent_replied_at=now))
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

    async def _release_follow_ups(self, ticket: Ticket) -> None:
        """Conversations that joined the ticket as follow-ups (other channels) are resolved with it, so the
        bot speaks there again instead of staying silent for a ticket that is done."""
        for conversation in await self._store.conversations_of(ticket.contact_id):
            if conversation.id == ticket.conversation_id or conversation.ticket_id != ticket.id:
                continue
            for _ in range(_MAX_RETRIES):
                fresh = await self._store.get_conversation(conversation.id)
                if fresh is None or fresh.ticket_id != ticket.id or fresh.status is ConversationStatus.RESOLVED:
                    break
                try:
                    moved = dataclasses.replace(fresh.moved_to(ConversationStatus.RESOLVED), updated_at=self._clock())
                except ValueError:
                    break
                try:
                    saved = await self._store.save_conversation(
                        moved, [events.status_changed(moved, fresh.status, at=moved.updated_at)]
                    )
                except VersionConflict:
                    continue
                await self._outbound.status_changed(saved)
                break


def _check_at(ticket: Ticket) -> datetime | None:
    return ticket.sla.next_check_at() if ticket.sla is not None and ticket.status.is_active else None


_REVISABLE = ("fields", "category", "language", "queue", "priority", "tags", "skills", "assignee", "routing", "sla")


def _differences(before: Ticket, after: Ticket) -> dict[str, Any]:
    diff: dict[str, Any] = {}
    for name in _REVISABLE:
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            diff[name] = {"from": old, "to": new}
    return diff


_ORDER = list(Priority)
# One step up, the highest staying put: listing the enum on every repeat call cost more than the rest of the change.
_RAISED = {p: _ORDER[min(i + 1, len(_ORDER) - 1)] for i, p in enumerate(_ORDER)}


def _raised(priority: Priority) -> Priority:
    return _RAISED[priority]


def _updated_events(updated: Ticket, diff: dict[str, Any]) -> list[DownstreamEvent]:
    """The ``ticket.updated`` of a change, carrying the version the store gives the ticket."""
    return [events.ticket_updated(evolve(updated, version=updated.version + 1), diff)]
