"""Auto-close: a ``pending`` ticket (waiting on the customer) with no answer gets one reminder, then closes.

Both steps are timers in the store (key ``autoclose:<ticket id>``) that the one periodic timer runner claims, so
they survive restarts and fire once across instances. Business days are working time on the calendar: N of
them are N times a working day's seconds, so nights, weekends and holidays do not count.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Protocol

from core.clock import Clock
from core.config import AutoCloseConfig
from core.model import Author, Direction, Ticket, TicketStatus, outbound_message
from core.store import Store
from gateway.outbound import Outbound
from gateway.tickets import TicketChange, TicketService

log = logging.getLogger(__name__)

PREFIX = "autoclose:"


class WorkingTime(Protocol):
    @property
    def day_seconds(self) -> float: ...

    def add(self, start: datetime, seconds: float) -> datetime: ...


def timer_key(ticket_id: str) -> str:
    return f"{PREFIX}{ticket_id}"


def _state_key(ticket_id: str) -> str:
    return f"autoclose-state:{ticket_id}"


class AutoClose:
    def __init__(
        self,
        store: Store,
        outbound: Outbound,
        tickets: TicketService,
        clock: Clock,
        cfg: AutoCloseConfig,
        calendar: WorkingTime,
    ) -> None:
        self._store = store
        self._outbound = outbound
        self._tickets = tickets
        self._clock = clock
        self._cfg = cfg
        self._calendar = calendar

    def _after_days(self, start: datetime, days: float) -> datetime:
        return self._calendar.add(start, days * self._calendar.day_seconds)

    async def on_status(self, ticket: Ticket, previous: TicketStatus) -> None:
        """A ticket that went ``pending`` starts its clock; one that left it needs none."""
        if not self._cfg.enabled:
            return
        if ticket.status is TicketStatus.PENDING and previous is not TicketStatus.PENDING:
            since = ticket.updated_at
            state = {"since": since.isoformat(), "reminded": False}
            await self._store.set_checkpoint(_state_key(ticket.id), json.dumps(state), ttl_s=self._state_ttl_s())
            await self._store.set_timer(timer_key(ticket.id), self._after_days(since, self._cfg.remind_after_days))
        elif previous is TicketStatus.PENDING:
            await self._store.set_timer(timer_key(ticket.id), None)

    def _state_ttl_s(self) -> float:
        # Long enough for any calendar (holidays included): the state goes once the ticket closed or moved on.
        return (self._cfg.after_days * 7 + 30) * 86400.0

    async def fire(self, ticket_id: str) -> str | None:
        """What became of the ticket's due timer: ``reminded``, ``closed``, or None (nothing to do any more)."""
        ticket = await self._store.get_ticket(ticket_id)
        raw = await self._store.get_checkpoint(_state_key(ticket_id))
        if ticket is None or ticket.status is not TicketStatus.PENDING or raw is None:
            await self._store.set_timer(timer_key(ticket_id), None)
            return None
        state = json.loads(raw)
        since = datetime.fromisoformat(state["since"])
        if await self._customer_answered(ticket, since):
            await self._store.set_timer(timer_key(ticket_id), None)
            return None
        now = self._clock()
        if not state["reminded"]:
            await self._remind(ticket, since)
            # The customer gets the days the reminder promises, even when it comes late (the gateway was down).
            close_at = max(self._after_days(since, self._cfg.after_days), self._after_days(now, self._grace_days()))
            state.update(reminded=True, close_at=close_at.isoformat())
            await self._store.set_checkpoint(_state_key(ticket_id), json.dumps(state), ttl_s=self._state_ttl_s())
            await self._store.set_timer(timer_key(ticket_id), close_at)
            return "reminded"
        close_at = datetime.fromisoformat(state["close_at"])
        if now < close_at:
            await self._store.set_timer(timer_key(ticket_id), close_at)
            return None
        await self._tickets.change(
            ticket_id, TicketChange(status=TicketStatus.CLOSED, add_tags=(self._cfg.tag,))
        )  # ticket.updated (pending -> closed, the tag) and the customer's "closed" notice
        await self._store.set_timer(timer_key(ticket_id), None)
        return "closed"

    def _grace_days(self) -> float:
        return self._cfg.after_days - self._cfg.remind_after_days

    async def _customer_answered(self, ticket: Ticket, since: datetime) -> bool:
        """The customer wrote on the ticket since it went pending (the service rules reopen it then, too)."""
        messages = await self._store.messages(ticket.conversation_id, ticket_id=ticket.id)
        return any(m.direction is Direction.INBOUND and m.created_at > since for m in messages)

    async def _remind(self, ticket: Ticket, since: datetime) -> None:
        conversation = await self._store.get_conversation(ticket.conversation_id)
        if conversation is None:
            return
        reminder = outbound_message(
            conversation,
            author=Author.SYSTEM,
            text=self._cfg.reminder.format(number=ticket.number, days=f"{self._grace_days():g}"),
            at=self._clock(),
            external_id=f"autoclose-reminder:{ticket.id}:{since.isoformat()}",  # one per pending spell
            ticket_id=ticket.id,
            meta={"kind": "autoclose_reminder", "ticket_number": ticket.number},
        )
        await self._outbound.store_and_send(reminder, conversation)
