"""The operator's service rules at intake: on a new ticket, and on each customer message until an agent answers."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta

from bot.setup import BotSetup
from core.clock import Clock
from core.meta import message_language
from core.model import Author, Channel, Conversation, FaqTry, Message, Ticket, TicketStatus
from core.store import Store
from core.store.types import Assignment
from gateway.tickets import TicketChange, TicketService
from normalizer.rules import sla as sla_clock
from normalizer.rules.engine import Customer, ServiceRules, assess


class IntakeRules:
    def __init__(self, store: Store, bot: BotSetup, tickets: TicketService, clock: Clock) -> None:
        self._store = store
        self._bot = bot
        self._tickets = tickets
        self._clock = clock

    @property
    def rules(self) -> ServiceRules | None:
        return self._tickets.rules

    async def new_ticket(
        self, ticket: Ticket, conversation: Conversation, messages: Sequence[Message], latest: Message
    ) -> tuple[Ticket, Assignment | None]:
        """The draft ticket with fields, category, language, routing and SLA, and the assignment for the store
        to make if its queue has agents and no rule named an assignee."""
        rules = self.rules
        if rules is None:
            return ticket, None
        texts = _customer_texts(ticket.subject, [*messages, latest] if latest not in messages else messages)
        customer = await self._customer(conversation.contact_id, texts, ticket.faq_tries, latest)
        assessed = assess(rules, ticket, customer, self._clock(), new=True)
        queue = rules.queues.get(assessed.queue or "")
        if queue is None or assessed.assignee is not None or not queue.agents:
            return assessed, None
        return assessed, Assignment(queue=queue.name, agents=queue.agents, mode=queue.assign)

    async def customer_wrote(self, ticket_id: str, conversation: Conversation, message: Message) -> None:
        """Before the first agent reply the rules run again on the customer's words so far (a later message may
        carry the order number or the complaint); after it, the message starts the next-response clock; and on
        a ``pending`` ticket (waiting on the customer) it is the awaited answer, so the ticket opens again."""
        rules = self.rules
        if rules is None:
            return
        ticket = await self._store.get_ticket(ticket_id)
        if ticket is None or not ticket.status.is_active:
            return
        if ticket.status is TicketStatus.PENDING:
            await self._tickets.change(ticket.id, TicketChange(status=TicketStatus.OPEN))
            return
        answered = ticket.sla.first_responded_at is not None if ticket.sla else ticket.status is not TicketStatus.NEW
        now = self._clock()
        if answered:
            plan = rules.plan(ticket.sla.policy) if ticket.sla else None
            wechat = ticket.channel is Channel.WECHAT
            window = now + timedelta(hours=rules.sla.wechat_window_h) if wechat else None

            def next_response(current: Ticket) -> Ticket:
                if current.sla is None:
                    return current
                clocks = sla_clock.customer_wrote(current.sla, plan, now, reply_window_closes_at=window)
                return dataclasses.replace(current, sla=clocks)

            await self._tickets.revise(ticket.id, next_response, known=ticket)
            return
        messages = await self._store.messages(conversation.id, ticket_id=ticket.id)
        texts = _customer_texts(ticket.subject, [*messages, message] if message not in messages else messages)
        customer = await self._customer(ticket.contact_id, texts, ticket.faq_tries, message)
        # The fields of the earlier messages are on the ticket already: only this one is new.
        customer = dataclasses.replace(customer, new_texts=(message.text,))
        await self._tickets.revise(
            ticket.id, lambda current: assess(rules, current, customer, now, new=False), known=ticket
        )

    async def _customer(
        self, contact_id: str, texts: tuple[str, ...], tries: Sequence[FaqTry], latest: Message
    ) -> Customer:
        contact = await self._store.get_contact(contact_id)
        return Customer(
            texts=texts,
            vip=contact.vip if contact else False,
            tags=contact.flags if contact else (),
            language=message_language(latest),
            category=self._category(tries),
        )

    def _category(self, tries: Sequence[FaqTry]) -> str | None:
        """The category of the FAQ entry the bot last matched or suggested (its top hit)."""
        for attempt in reversed(tries):
            if attempt.hits and attempt.outcome in ("answer", "suggest"):
                entry = self._bot.index.entry(attempt.hits[0].entry_id)
                if entry is not None and entry.category:
                    return entry.category
        return None


def _customer_texts(subject: str, messages: Sequence[Message]) -> tuple[str, ...]:
    texts = [subject] if subject else []
    seen_agent = False
    for m in messages:
        if m.author is Author.AGENT:
            seen_agent = True  # only what the customer said before an agent answered
        elif m.author is Author.CUSTOMER and not seen_agent and m.text and m.text not in texts:
            texts.append(m.text)
    return tuple(texts)
