"""A voicemail the bot can answer goes to the caller in writing, on the channel they prefer."""

from __future__ import annotations

import logging
from typing import Protocol

from bot.policy import Decision, Outcome, decide
from bot.setup import BotSetup
from core import events
from core.clock import Clock
from core.meta import intake_facts
from core.model import (
    Author,
    Conversation,
    ConversationStatus,
    DeliveryStatus,
    FaqTry,
    Message,
    TicketStatus,
    outbound_message,
)
from core.store.roles import Contacts, Conversations, Transcript
from gateway.outbound import Outbound
from gateway.tickets import TicketChange, TicketService
from normalizer.text import clean_text

log = logging.getLogger(__name__)


class VoicemailStore(Contacts, Conversations, Transcript, Protocol):
    """The roles a voicemail answer reads and writes: the caller's contact, conversations and transcript."""


class VoicemailAnswers:
    def __init__(
        self, store: VoicemailStore, bot: BotSetup, outbound: Outbound, tickets: TicketService, clock: Clock
    ) -> None:
        self._store = store
        self._bot = bot
        self._outbound = outbound
        self._tickets = tickets
        self._clock = clock

    async def answer(self, conversation: Conversation, message: Message, ticket_id: str, *, opened: bool) -> None:
        """A voicemail whose transcript the bot answers with confidence: the answer goes to the caller on
        their preferred written channel, and the callback ticket says what was sent where.

        The phone connector asks for this (``InboundMessage.voicemail``) only when the inbox enables it. The
        ticket stays (agents still call back) unless the inbox resolves it and this voicemail opened it.
        Anything short of a confident answer on a usable written conversation changes nothing. The ticket
        is already saved here, so a failure is logged rather than retried with the whole handling.
        """
        wanted = intake_facts(message).voicemail
        transcript = clean_text(wanted.transcript) if wanted is not None else ""
        if wanted is None or not transcript:
            return
        try:
            target = await self._written_conversation(conversation.contact_id, list(wanted.channels))
            if target is None:
                return
            vip = self._bot.policy.vip_handoff and await self._is_vip(conversation.contact_id)
            decision = decide(self._bot.index, transcript, consecutive_misses=0, policy=self._bot.policy, vip=vip)
            if decision.outcome is not Outcome.ANSWER or decision.answer is None:
                return
            resolve = opened and wanted.resolve
            await self._send(conversation, message, ticket_id, target, decision, transcript, resolve)
        except Exception:
            log.exception("voicemail %s: answering it on a written channel failed", message.id)

    async def _is_vip(self, contact_id: str) -> bool:
        contact = await self._store.get_contact(contact_id)
        return contact is not None and contact.vip

    async def _written_conversation(self, contact_id: str, channels: list[str]) -> Conversation | None:
        """The contact's latest conversation on the first of ``channels`` that the bot may write on:
        not held by a human (the bot is silent there), not unsubscribed or bounced."""
        contact = await self._store.get_contact(contact_id)
        flags = set(contact.flags) if contact is not None else set()
        mine = await self._store.conversations_of(contact_id)
        for channel in channels:
            usable = [
                c
                for c in mine
                if c.channel == channel
                and c.status in (ConversationStatus.BOT, ConversationStatus.RESOLVED)
                and f"unsubscribed:{c.channel}:{c.inbox}" not in flags
                and f"bounced:{c.address.kind}:{c.address.value.lower()}" not in flags
            ]
            if usable:
                return max(usable, key=lambda c: c.updated_at)
        return None

    async def _send(
        self,
        conversation: Conversation,
        message: Message,
        ticket_id: str,
        target: Conversation,
        decision: Decision,
        transcript: str,
        resolve: bool,
    ) -> None:
        assert decision.answer is not None
        now = self._clock()
        entry = decision.answer
        where = {"channel": str(target.channel), "inbox": target.inbox, "conversation_id": target.id}
        # Keyed on the voicemail message (itself stored once per call): a re-handled call answers nothing twice.
        reply = outbound_message(
            target,
            author=Author.BOT,
            text=entry.answer,
            at=now,
            external_id=f"voicemail:{message.id}",
            meta={
                "outcome": "answer",
                "faq_id": entry.id,
                "voicemail": {"message_id": message.id, "ticket_id": ticket_id},
            },
        )
        stored, delivery = await self._outbound.store_and_send(reply, target)
        failed = delivery is not None and delivery.status is DeliveryStatus.FAILED
        status = f"{delivery.status}" if delivery is not None else "sent before"
        note_text = (
            f"机器人已在 {target.channel} ({target.inbox}) 回复这条留言 / "
            f"The bot answered this voicemail on {target.channel} ({target.inbox}), {status}"
            + (f" ({delivery.reason or delivery.error})" if failed and delivery is not None else "")
            + f":\n{entry.answer}"
        )
        note = outbound_message(
            conversation,
            author=Author.SYSTEM,
            text=note_text,
            at=now,
            external_id=f"voicemail-note:{message.id}",
            ticket_id=ticket_id,
            meta={
                "kind": "voicemail_answer",
                "faq_id": entry.id,
                "answer_message_id": stored.id,
                "delivery": str(delivery.status) if delivery is not None else None,
                **where,
            },
        )
        _, noted = await self._store.add_message(note, [events.message_created(note)])
        if not noted:
            return  # an earlier handling recorded it on the ticket
        attempt = FaqTry(query=transcript, outcome=str(decision.outcome), hits=decision.hits)
        await self._tickets.change(
            ticket_id,
            TicketChange(
                add_tags=("bot-answered",),
                faq_try=attempt,
                status=TicketStatus.RESOLVED if resolve and not failed else None,
            ),
        )
