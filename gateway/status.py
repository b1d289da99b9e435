"""Answers to a customer's status question, from the store: their own tickets only."""

from __future__ import annotations

from datetime import timedelta, timezone, tzinfo

from bot.status import StatusQuestion, status_answer
from core.model import Conversation, Ticket
from core.store import Store


def ticket_queue(ticket: Ticket) -> str | None:
    """The ticket's queue when routing set one."""
    return ticket.queue or None


# China Standard Time has had no daylight saving since 1991: a fixed offset is exact and needs no tz database read.
CHINA = timezone(timedelta(hours=8), "CST")


class StatusAnswers:
    def __init__(self, store: Store, *, zone: tzinfo) -> None:
        self._store = store
        self._timezone = zone

    async def answer(self, conversation: Conversation, question: StatusQuestion, *, own_only: bool = False) -> str:
        """Looked up by the conversation's contact: a number of someone else's ticket is "not found", exactly like
        one that does not exist, so the answer tells nothing about other customers' tickets.

        ``own_only``: only this conversation's tickets, for a sender who only claims the contact's address (an
        unverified email From:): the contact's other tickets are then someone else's as far as we know.
        """
        tickets = await self._store.tickets_of(conversation.contact_id)
        if own_only:
            tickets = [t for t in tickets if t.conversation_id == conversation.id]
        queues = {t.id: q for t in tickets if (q := ticket_queue(t))}
        return status_answer(question, tickets, queue_of=queues, timezone=self._timezone)
