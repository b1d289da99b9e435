"""The one path every inbound message takes: normalize, store once, apply its facts, then answer or hand off."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.handoff import handoff_message
from bot.policy import Decision, Outcome, decide, decide_pick
from bot.setup import BotSetup
from bot.status import status_question
from connectors.base import IntakeResult, Rejected
from core import events
from core.clock import Clock, utcnow
from core.config import CustomerConfig
from core.evolve import evolve
from core.ids import ordered_hex
from core.meta import (
    Suggestion,
    faq_tries_of,
    faq_try_meta,
    intake_facts,
    intake_meta,
    sender_check_of,
    suggestions_meta,
    survey_reply_meta,
)
from core.model import (
    MAX_FAQ_TRIES,
    Admission,
    Author,
    Channel,
    Conversation,
    ConversationStatus,
    Direction,
    DownstreamEvent,
    FaqTry,
    HandoffReason,
    Identity,
    InboundMessage,
    Message,
    MessageKind,
    NormalizedMessage,
    Priority,
    SenderCheck,
    Ticket,
    TicketRequest,
    TicketStatus,
    outbound_message,
    reply_key,
)
from core.store import Store, VersionConflict
from core.store.roles import Conversations
from core.store.types import (
    AdmissionRefused,
    FirstReply,
    FirstWrite,
    LineReads,
    LogLine,
    TicketEvents,
    TicketLine,
    TicketWrite,
)
from core.tasks import TaskTracker
from gateway.contacts import ContactService, apply_flags
from gateway.outbound import Outbound
from gateway.rules_at_intake import IntakeRules
from gateway.status import CHINA, StatusAnswers
from gateway.survey import SurveyService
from gateway.ticket_quota import TicketQuota
from gateway.tickets import TicketChange, TicketService
from gateway.voicemail import VoicemailAnswers
from normalizer import DEFAULT_STEPS, Step, normalize
from normalizer.identity import canonical_identity

log = logging.getLogger(__name__)

_MAX_RETRIES = 8
_STUCK_TRIES = 3  # recoveries of a message whose handling keeps failing, before it waits for a restart
__all__ = ["MAX_FAQ_TRIES", "BotSetup", "Clock", "Intake", "utcnow"]


async def open_conversation(
    store: Conversations, clock: Clock, address: Identity, channel: Channel, inbox: str
) -> Conversation:
    """The conversation of ``address`` on ``inbox``, opened with its contact if there is none: the same record
    the address's first message will land in (``conversation_for`` is idempotent)."""
    return await store.conversation_for(address, channel=channel, inbox=inbox, name=None, now=clock())


class Intake:
    def __init__(
        self,
        store: Store,
        bot: BotSetup,
        outbound: Outbound,
        tasks: TaskTracker,
        clock: Clock = utcnow,
        tickets: TicketService | None = None,
        steps: Sequence[Step] = DEFAULT_STEPS,
        customer: CustomerConfig | None = None,
        contacts: ContactService | None = None,
        surveys: SurveyService | None = None,
        quota: TicketQuota | None = None,
    ) -> None:
        self._store = store
        self._quota = quota
        self._customer = customer or CustomerConfig()
        self._contacts = contacts or ContactService(store, clock)
        self._surveys = surveys
        # The business hours' zone was loaded when the config was read; the customer reads times in it.
        self._status = StatusAnswers(store, zone=ZoneInfo(bot.hours.timezone) if bot.hours else CHINA)
        self._bot = bot
        self._outbound = outbound
        self._tasks = tasks
        self._clock = clock
        self._steps = steps
        self._tickets = tickets or TicketService(store, outbound, clock)
        self._voicemail = VoicemailAnswers(store, bot, outbound, self._tickets, clock)
        self._rules = IntakeRules(store, bot, self._tickets, clock)
        self._locks: dict[str, asyncio.Lock] = {}
        self._tries: dict[str, int] = {}  # message id -> recoveries that failed
        # Conversation id -> its messages handed to handle() and not through it yet (new ones, and recoveries'). The
        # bot answers a message in its own write (``_answer_at_once``) only on a conversation with none: its reply
        # must not overtake theirs. Counted from the write's ``build`` (the store's thread) to handle()'s end (the
        # loop), so locked.
        self._handing: collections.Counter[str] = collections.Counter()
        self._handing_lock = threading.Lock()

    async def receive(self, inbound: InboundMessage) -> IntakeResult:
        """Store first; the bot's answer follows in a tracked task, so the channel can acknowledge at once."""
        now = self._clock()
        normalized = normalize(inbound, self._steps)
        picked = self._bot.index.entry(inbound.picked_faq) if inbound.picked_faq else None
        if inbound.picked_faq and picked is None:
            raise Rejected(f"there is no FAQ entry {inbound.picked_faq!r} to pick")
        # Facts that are safe to apply twice go before the message is stored, so a crash in between loses none
        # (the channel's redelivery applies them again); a repeat of a stored message applies nothing.
        checks_first = inbound.reopen is not None or bool(inbound.contact_flags)
        # The channel's admission (a replay guard) is taken before anything is read or written: in the
        # conversation's read when that comes first (one store call), on its own before the facts otherwise.
        admit = inbound.admission
        if admit is not None and checks_first:
            if not await self._store.lease(admit.key, admit.holder, admit.ttl_s):
                raise AdmissionRefused(f"{admit.key} is held for another holder")
            admit = None
        seen = await self._seen(inbound) if checks_first else False
        if inbound.reopen is not None and not seen:
            await self._tickets.reopen_resolved(inbound.reopen.conversation_id)
        if not checks_first:
            # the transcript shows the question the customer picked
            shown = picked.questions[0] if picked is not None and not normalized.text else normalized.text
            first = await self._receive_first(inbound, normalized, shown, now, admit)
            if first.stored is not None:
                stored, created = first.stored
                return await self._received_then(
                    inbound,
                    first.conversation,
                    stored,
                    created,
                    settled=first.settled,
                    now=now,
                    reply=first.reply,
                    frame_seq=first.frame_seq,
                )
            conversation = first.conversation  # a resolved one: the full path below, with the claim taken
        else:
            conversation = await self._store.conversation_for(
                normalized.sender,
                channel=inbound.channel,
                inbox=inbound.inbox,
                name=inbound.sender_name,
                now=now,
                thread=inbound.thread,
                aliases=normalized.aliases,
                admit=admit,
            )
        text = normalized.text
        survey_reply = (
            await self._surveys.reply_in(conversation, text)
            if self._surveys is not None and inbound.bot and inbound.kind is MessageKind.TEXT
            else None
        )
        if conversation.status is ConversationStatus.RESOLVED and survey_reply is None:
            reopened = await self._reopen_ticket(conversation)  # the ticket took the conversation back (and said so)
            if reopened is not None:
                conversation = reopened
            else:
                conversation = await self._reopen_for_bot(conversation)
                await self._outbound.status_changed(conversation)
        if picked is not None and not text:  # the transcript shows the question the customer picked
            text = picked.questions[0]
        meta = {**intake_meta(inbound, normalized.language), **survey_reply_meta(survey_reply)}
        message = _customer_message(inbound, text, meta, now, conversation)
        if inbound.contact_flags and not seen:
            await apply_flags(self._store, inbound.contact_flags, now)
        settled = not inbound.greeting and self._nothing_to_do(conversation, message)
        if not settled:
            self._hand(conversation.id)
        try:
            stored, created = await self._store.add_message(
                message, [events.message_created(message)], handled=settled, checkpoints=inbound.checkpoints
            )
        except BaseException:
            if not settled:
                self._handed(conversation.id)
            raise
        return await self._received_then(inbound, conversation, stored, created, settled=settled, now=now)

    async def _receive_first(
        self, inbound: InboundMessage, normalized: NormalizedMessage, text: str, now: datetime, admit: Admission | None
    ) -> _First:
        """The common path in one store call: the claim, the conversation and the message (SQLite: one job, one
        commit, where the claim, the read and the write were three hand-offs to the store's thread). A resolved
        conversation is left to the full path (a survey reply to read, a ticket or the bot to reopen it), with
        nothing but the claim and the conversation taken."""
        meta = intake_meta(inbound, normalized.language)
        settled = False
        reply: FirstReply | None = None
        handing: str | None = None  # the conversation counted in _handing by build, until _received_then
        frame_seq: int | None = None  # the reply's frame's number, when it has one

        def numbered(seq: int) -> None:
            nonlocal frame_seq
            frame_seq = seq

        def build(conversation: Conversation) -> FirstWrite | None:
            nonlocal settled, reply, handing
            if conversation.status is ConversationStatus.RESOLVED:
                return None
            message = _customer_message(inbound, text, meta, now, conversation)
            settled = not inbound.greeting and self._nothing_to_do(conversation, message)
            reply = None if settled else self._answer_at_once(conversation, message, inbound, numbered)
            if not settled and reply is None:
                handing = conversation.id
                self._hand(handing)
            return FirstWrite(
                message=message,
                events=(events.message_created(message),),
                handled=settled,
                checkpoints=tuple(inbound.checkpoints),
                reply=reply,
            )

        try:
            conversation, stored = await self._store.receive_first(
                normalized.sender,
                channel=inbound.channel,
                inbox=inbound.inbox,
                name=inbound.sender_name,
                now=now,
                build=build,
                thread=inbound.thread,
                aliases=normalized.aliases,
                admit=admit,
            )
        except BaseException:
            if handing is not None:
                self._handed(handing)
            raise
        return _First(conversation=conversation, stored=stored, settled=settled, reply=reply, frame_seq=frame_seq)

    def _answer_at_once(
        self, conversation: Conversation, message: Message, inbound: InboundMessage, numbered: Callable[[int], None]
    ) -> FirstReply | None:
        """The bot's reply to a new ``message``, to be stored with it, when ``_respond`` would answer it from the
        FAQ index alone and the reply goes out without the outbox (``Outbound.replies_at_once``: in the message's
        own exchange, or as a web chat frame): one store write instead of the message's, a task's and the
        reply's (issue 23). None whenever ``_respond`` would read or write anything else first (a status
        question, a linking step, a VIP check, a ticket or handoff, a human holding the conversation) or another
        message of the conversation is still being handled: it then goes the usual way. It runs inside the
        store's write (``build``), so a failure here must not fail that write. ``numbered``: told the reply's
        frame's number."""
        if not self._store.replies_in_first_write or inbound.greeting:
            return None
        if not self._outbound.replies_at_once(conversation.inbox, inline=inbound.inline_reply):
            return None
        facts = intake_facts(message)
        if message.author is not Author.CUSTOMER or not facts.bot or facts.ticket is not None:
            return None
        if facts.survey_reply is not None or conversation.status is not ConversationStatus.BOT:
            return None
        claimed = facts.sender_check is SenderCheck.UNVERIFIED
        if message.kind is MessageKind.TEXT and (
            status_question(message.text) is not None or (not claimed and self._contacts.may_step(message.text))
        ):
            return None
        if self._bot.policy.vip_handoff and not claimed:  # whether the contact is a VIP is a read
            return None
        with self._handing_lock:
            if self._handing[conversation.id]:
                return None
        try:
            decision, attempt = self._decide(conversation, message, vip=False)
            if decision.outcome is Outcome.HANDOFF:
                return None
            now = self._clock()
            reply = self._bot_reply(conversation, message, decision, now, attempt)
            saving = self._after_decision(conversation, decision, now)
            delivered, frame = self._outbound.first_delivery(
                conversation, reply, in_reply_to=message.id, inline=inbound.inline_reply
            )
        except Exception:
            log.exception("answering message %s at once failed; it is handled the usual way", message.id)
            return None
        return FirstReply(
            message=reply,
            events=(events.message_created(reply),),
            saving=saving,
            delivered=delivered,
            frame=frame,
            numbered=numbered if frame is not None else None,
        )

    def _hand(self, conversation_id: str) -> None:
        with self._handing_lock:
            self._handing[conversation_id] += 1

    def _handed(self, conversation_id: str) -> None:
        with self._handing_lock:
            self._handing[conversation_id] -= 1
            if self._handing[conversation_id] <= 0:
                del self._handing[conversation_id]

    async def _handle_handed(self, message: Message, conversation: Conversation) -> None:
        """``handle`` for a message counted in ``_handing``, which it leaves when done."""
        try:
            await self.handle(message, conversation)
        finally:
            self._handed(conversation.id)

    async def _received_then(
        self,
        inbound: InboundMessage,
        conversation: Conversation,
        stored: Message,
        created: bool,
        *,
        settled: bool,
        now: datetime,
        reply: FirstReply | None = None,
        frame_seq: int | None = None,
    ) -> IntakeResult:
        """After the message's write: a repeat does nothing; a new one is greeted and handed to the bot, unless
        the bot's reply was written with it (``reply``): its frame is then sent (number ``frame_seq``), or the
        reply goes back to the connector for the message's own exchange."""
        handing = not settled and reply is None  # counted in _handing before the write, until handle() is done
        try:
            if not created:
                return IntakeResult(message=stored, duplicate=True, handled=None)
            if settled:  # what handle() would decide from this same conversation: nothing but "handled"
                return IntakeResult(message=stored, duplicate=False, handled=None)
            if reply is not None:
                self._outbound.answered_inline(reply.message)
                if reply.frame is not None:
                    assert frame_seq is not None, "the store numbers a reply's frame in the write"
                    sending = self._outbound.send_first_frame(
                        reply.message,
                        conversation,
                        in_reply_to=stored.id,
                        frame=reply.frame,
                        seq=frame_seq,
                        delivered=reply.delivered,
                    )
                    task = self._tasks.spawn(sending, name=f"intake-frame:{stored.id}")
                    return IntakeResult(message=stored, duplicate=False, handled=task)
                unsent = functools.partial(
                    self._outbound.send, reply.message, conversation, in_reply_to=stored.id, recorded=reply.delivered
                )
                return IntakeResult(message=stored, duplicate=False, handled=None, reply=reply.message, unsent=unsent)
            if inbound.greeting:  # keyed on the stored message, so it follows it
                await self._outbound.record_greeting(stored, inbound.greeting, now)
            task = self._tasks.spawn(self._handle_handed(stored, conversation), name=f"intake:{stored.id}")
            handing = False  # the task's now
            return IntakeResult(message=stored, duplicate=False, handled=task)
        finally:
            if handing:
                self._handed(conversation.id)

    def _nothing_to_do(self, conversation: Conversation, message: Message) -> bool:
        """Whether ``_respond`` would do nothing for ``message`` on ``conversation`` (the one handle() is given):
        a log line such as an answered call, not for the bot, asking for no ticket, with no service rules to run
        on it. Such a message is stored handled in the same write, one store job and one task fewer."""
        facts = intake_facts(message)
        if message.author is not Author.CUSTOMER or facts.bot or facts.ticket is not None:
            return False
        return facts.survey_reply is None and self._leaves_alone(conversation)

    def _leaves_alone(self, conversation: Conversation) -> bool:
        """Whether a log line on ``conversation`` needs nothing of ``_respond``: not resolved (a message reopens),
        and no human's ticket whose service rules look at every customer message."""
        if conversation.status is ConversationStatus.RESOLVED:
            return False
        return conversation.status is ConversationStatus.BOT or not conversation.ticket_id or self._rules.rules is None

    def _in_bulk(
        self, inbounds: Sequence[InboundMessage], fits: Callable[[InboundMessage], bool]
    ) -> Iterator[tuple[int, InboundMessage, NormalizedMessage, datetime, Callable[[Conversation], Message]]]:
        """The messages of ``inbounds`` that may go in one bulk write (``fits``), each with its index, normalized
        form, time and how to make its stored message once the store's ``build`` knows the conversation
        (``_customer_message``: one Message each, where a draft placed later was two). Once a sender and thread
        has a message left for ``receive`` (one that does not fit), every later one of theirs is left too, so that
        customer's messages keep their order."""
        held: set[tuple[str, str, str]] = set()  # sender and thread with a message left for receive()
        for i, inbound in enumerate(inbounds):
            given = (inbound.inbox, f"given:{inbound.sender}", inbound.thread)  # spares normalizing the rest
            if given in held:
                continue
            if not self._steps and not fits(inbound):
                # Left for receive(): only its sender matters, which is normalize's sender when no rule runs
                # after the built-in steps (a missed call offered as a log line, then normalized as a ticket line).
                held.update(((inbound.inbox, str(canonical_identity(inbound.sender)), inbound.thread), given))
                continue
            normalized = normalize(inbound, self._steps)
            key = (inbound.inbox, str(normalized.sender), inbound.thread)
            if key in held:
                continue
            if not fits(inbound):
                held.update((key, given))
                continue
            now = self._clock()
            meta = intake_meta(inbound, normalized.language)
            yield i, inbound, normalized, now, functools.partial(_customer_message, inbound, normalized.text, meta, now)

    async def receive_log_lines(self, inbounds: Sequence[InboundMessage]) -> list[IntakeResult | None]:
        """Many messages that are log lines (an answered call: not for the bot, asking for no ticket, no facts to
        apply) in one store write, each stored exactly as ``receive`` would store it handled. None for a message
        ``receive`` must take on its own, in order: one that is not a log line, one whose conversation needs
        handling (see ``_nothing_to_do``), and every later message of the same sender and thread after it."""
        lines: list[LogLine] = []
        at: list[int] = []
        for i, inbound, normalized, now, place in self._in_bulk(inbounds, _is_log_line):

            def build(
                conversation: Conversation, place: Callable[[Conversation], Message] = place
            ) -> tuple[Message, list[DownstreamEvent]] | None:
                if not self._leaves_alone(conversation):  # the facts were checked: a log line (_is_log_line)
                    return None
                message = place(conversation)
                return message, [events.message_created(message)]

            lines.append(
                LogLine(
                    address=normalized.sender,
                    channel=inbound.channel,
                    inbox=inbound.inbox,
                    name=inbound.sender_name,
                    now=now,
                    build=build,
                    thread=inbound.thread,
                    aliases=normalized.aliases,
                )
            )
            at.append(i)
        results: list[IntakeResult | None] = [None] * len(inbounds)
        for i, stored in zip(at, await self._store.add_log_lines(lines), strict=True):
            if stored is not None:
                results[i] = IntakeResult(message=stored[0], duplicate=not stored[1], handled=None)
        return results

    async def receive_ticket_lines(self, inbounds: Sequence[InboundMessage]) -> list[IntakeResult | None]:
        """Many messages whose handling is one ticket write (a missed call: a callback ticket, or a raised
        priority on the ticket a human holds) in one store write (``Store.add_ticket_lines``), each stored and
        handled exactly as ``receive`` and ``handle`` would, then the new tickets announced. None for a message
        ``receive`` must take on its own, in order: one asking for more (see ``_is_ticket_line``), one whose
        conversation needs more (``_ticket_write``), and every later message of the same sender and thread.
        With service rules every message goes alone (the rules read the contact and may assign an agent)."""
        if self._rules.rules is not None:
            return [None] * len(inbounds)
        lines: list[TicketLine] = []
        at: list[int] = []
        for i, inbound, normalized, now, place in self._in_bulk(inbounds, _is_ticket_line):
            request = inbound.ticket
            assert request is not None  # _is_ticket_line

            def build(
                conversation: Conversation,
                reads: LineReads,
                place: Callable[[Conversation], Message] = place,
                request: TicketRequest = request,
            ) -> TicketWrite | None:
                if conversation.status is ConversationStatus.RESOLVED:  # it reopens: intake alone
                    return None
                return self._ticket_write(conversation, reads, place(conversation), request)

            lines.append(
                TicketLine(
                    address=normalized.sender,
                    channel=inbound.channel,
                    inbox=inbound.inbox,
                    name=inbound.sender_name,
                    now=now,
                    build=build,
                    thread=inbound.thread,
                    aliases=normalized.aliases,
                )
            )
            at.append(i)
        results: list[IntakeResult | None] = [None] * len(inbounds)
        for i, stored in zip(at, await self._store.add_ticket_lines(lines), strict=True):
            if stored is None:
                continue
            if stored.opened is not None:
                await self._announce(*stored.opened)
            results[i] = IntakeResult(message=stored.message, duplicate=not stored.created, handled=None)
        return results

    def _ticket_write(
        self, conversation: Conversation, reads: LineReads, message: Message, request: TicketRequest
    ) -> TicketWrite | None:
        """What ``receive`` and then ``_respond`` write for a ticket line (not for the bot, no service rules, no
        voicemail) on ``conversation`` (not resolved) as the store has it, ``message`` stored in it, reading what
        they read; None when they would do more than one ticket write (a ticket the customer joins)."""
        created = [events.message_created(message)]
        if conversation.status is not ConversationStatus.BOT:  # a human holds it: escalate the ticket
            if not (request.escalate and conversation.ticket_id):
                return TicketWrite(message=message, events=created)
            ticket = reads.ticket(conversation.ticket_id)
            if ticket is None:
                return None
            changed = self._tickets.revision(ticket, TicketChange(raise_priority=True))
            return TicketWrite(message=message, events=created, changed=changed)
        now = self._clock()
        if self._follows_up(request) and self._joinable(reads.tickets_of(conversation.contact_id), now):
            return None
        transcript = [*reads.transcript(conversation), message]  # as stored once the message is
        ticket = self._draft_ticket(conversation, message, request, now, transcript)
        waiting, ticket_events = _taken(conversation, request, now)
        return TicketWrite(message=message, events=created, opened=(ticket, waiting, ticket_events))

    async def _seen(self, inbound: InboundMessage) -> bool:
        """Whether this message was stored before: a repeat delivery changes nothing."""
        found = await self._store.find_message(
            channel=inbound.channel, inbox=inbound.inbox, direction=Direction.INBOUND, external_id=inbound.external_id
        )
        return found is not None

    async def recover(self, *, older_than_s: float | None = None) -> int:
        """Finish messages that were stored but never handled; returns how many were tried.

        At start-up (no ``older_than_s``) every one: the process died between storing and answering. Then,
        periodically, those stored more than ``older_than_s`` ago, which no live handler still holds: their
        handling failed (the store went away mid-way, say). One that keeps failing is left for a restart after
        ``_STUCK_TRIES`` tries, and one that fails never keeps the others waiting.
        """
        pending = await self._store.unhandled_messages()
        if older_than_s is not None:
            cutoff = self._clock() - timedelta(seconds=older_than_s)
            pending = [m for m in pending if m.created_at <= cutoff and self._tries.get(m.id, 0) < _STUCK_TRIES]
        for message in pending:
            self._hand(message.conversation_id)  # the conversation's next message waits its turn behind it
            try:
                await self.handle(message)
            except Exception:
                self._tries[message.id] = tries = self._tries.get(message.id, 0) + 1
                given_up = " (giving up until a restart)" if tries >= _STUCK_TRIES else ""
                log.exception("handling message %s failed again%s", message.id, given_up)
            else:
                self._tries.pop(message.id, None)
            finally:
                self._handed(message.conversation_id)
        return len(pending)

    async def handle(self, message: Message, known: Conversation | None = None) -> None:
        """``known``: the conversation as receive() just read it, saving a read; if it changed since,
        the version check fails and the loop reads it fresh."""
        lock = self._locks.setdefault(message.conversation_id, asyncio.Lock())
        async with lock:
            for _ in range(_MAX_RETRIES):
                conversation, known = known or await self._store.get_conversation(message.conversation_id), None
                if conversation is None:  # nothing to answer on, now or later: recoveries need not try again
                    log.error("message %s has no conversation; left unanswered", message.id)
                    await self._store.mark_handled(message.id)
                    return
                try:
                    settled = await self._respond(conversation, message)
                    break
                except VersionConflict:
                    log.info("conversation %s changed meanwhile; retrying", conversation.id)
            else:
                log.error("gave up on message %s after %d version conflicts", message.id, _MAX_RETRIES)
                return
            if not settled:
                await self._store.mark_handled(message.id)
        if not lock.locked():
            self._locks.pop(message.conversation_id, None)

    async def _reopen_ticket(self, conversation: Conversation) -> Conversation | None:
        """The customer answers soon after their ticket was resolved (``customer.reopen_window_s``): the ticket
        reopens and takes the conversation back, so the answer reaches the agent. None when it does not apply."""
        window = self._customer.reopen_window_s
        if window <= 0 or conversation.ticket_id is None:
            return None
        ticket = await self._store.get_ticket(conversation.ticket_id)
        if ticket is None or ticket.status is not TicketStatus.RESOLVED:
            return None
        if (self._clock() - ticket.updated_at).total_seconds() > window:
            return None
        await self._tickets.change(ticket.id, TicketChange(status=TicketStatus.OPEN))
        return await self._store.get_conversation(conversation.id)

    async def _reopen_for_bot(self, conversation: Conversation) -> Conversation:
        for _ in range(_MAX_RETRIES):
            reopened = dataclasses.replace(
                conversation.moved_to(ConversationStatus.BOT),
                episode=conversation.episode + 1,
                ticket_id=None,
                consecutive_misses=0,
                updated_at=self._clock(),
            )
            try:
                return await self._store.save_conversation(
                    reopened, [events.status_changed(reopened, conversation.status, at=reopened.updated_at)]
                )
            except VersionConflict:
                fresh = await self._store.get_conversation(conversation.id)
                assert fresh is not None
                if fresh.status is not ConversationStatus.RESOLVED:
                    return fresh
                conversation = fresh
        raise VersionConflict(f"conversation {conversation.id} kept changing")

    async def _respond(self, conversation: Conversation, message: Message) -> bool:
        """Answer, suggest, open a ticket or hand off; True when the message was marked handled on the way."""
        facts = intake_facts(message)
        request = facts.ticket
        if message.author is not Author.CUSTOMER:
            return False
        survey_reply = facts.survey_reply
        if survey_reply is not None and self._surveys is not None:
            text = await self._surveys.record(survey_reply, message.channel)
            await self._say(conversation, message, text, {"outcome": "survey"})
            return True
        may_answer = facts.bot
        claimed = facts.sender_check is SenderCheck.UNVERIFIED  # the address may be someone else's
        question = status_question(message.text) if may_answer and message.kind is MessageKind.TEXT else None
        if question is not None:
            # The one thing the bot still says once a human holds the conversation; the agent sees it too.
            text = await self._status.answer(conversation, question, own_only=claimed)
            await self._say(conversation, message, text, {"outcome": "status"})
            return True
        linking = (
            await self._contacts.chat_step(conversation.contact_id, message.text)
            if may_answer and message.kind is MessageKind.TEXT and not claimed  # else a forger could link an address
            else None
        )
        if linking is not None:
            await self._say(conversation, message, linking, {"outcome": "link_identity"})
            return True
        if conversation.status is not ConversationStatus.BOT:
            # A human holds the conversation: the bot stays silent, the service rules look at the message.
            if conversation.ticket_id:
                await self._rules.customer_wrote(conversation.ticket_id, conversation, message)
            if request is not None and request.escalate and conversation.ticket_id:
                await self._escalate(conversation.ticket_id)
                await self._voicemail.answer(conversation, message, conversation.ticket_id, opened=False)
            return False
        if request is not None and not (request.bot_first and may_answer):
            if await self._follow_up(conversation, message, request):
                return True
            ticket, saved = await self._open_ticket(conversation, message, request)
            await self._voicemail.answer(saved, message, ticket.id, opened=True)
            return False
        if not may_answer:
            return False
        vip = self._bot.policy.vip_handoff and not claimed and await self._is_vip(conversation.contact_id)
        decision, attempt = self._decide(conversation, message, vip=vip)
        if request is not None and decision.outcome is not Outcome.ANSWER:
            # The channel wants humans unless the bot is sure: no suggestions or "please rephrase" here.
            if await self._follow_up(conversation, message, request):
                return True
            await self._open_ticket(conversation, message, request, attempt=attempt)
            return False
        now = self._clock()
        updated = self._after_decision(conversation, decision, now)
        if decision.outcome is Outcome.HANDOFF:
            reason = decision.handoff_reason or HandoffReason.NO_MATCH
            if await self._follow_up(updated, message, TicketRequest(reason=reason)):
                return True
            if self._quota is not None and not await self._quota.allows(conversation.inbox, conversation.address):
                # A flood of visitors asking for humans would bury the agents: past the inbox's hourly cap the
                # customer is told to come back, the message stays in the transcript, and no ticket opens.
                await self._say(conversation, message, self._bot.messages.ticket_limit, {"outcome": "ticket_limit"})
                return True
            await self._handoff(updated, message, reason, now, attempt)
            return True  # the handoff message marked it handled
        reply = self._bot_reply(conversation, message, decision, now, attempt)
        await self._outbound.deliver_bot_reply(
            reply, conversation, in_reply_to=message.id, mark_handled=True, saving=updated
        )
        return True

    def _decide(self, conversation: Conversation, message: Message, *, vip: bool) -> tuple[Decision, FaqTry]:
        """The bot's decision on ``message`` (the customer's pick, else a search), and the try it records."""
        picked = intake_facts(message).picked_faq
        decision = (decide_pick(self._bot.index, picked) if picked else None) or decide(
            self._bot.index,
            message.text,
            consecutive_misses=conversation.consecutive_misses,
            policy=self._bot.policy,
            vip=vip,
        )
        return decision, FaqTry(query=message.text, outcome=str(decision.outcome), hits=decision.hits)

    @staticmethod
    def _after_decision(conversation: Conversation, decision: Decision, now: datetime) -> Conversation:
        """The conversation as the bot's decision leaves it: its misses in a row counted, or reset."""
        return dataclasses.replace(
            conversation,
            consecutive_misses=conversation.consecutive_misses + 1 if decision.is_miss else 0,
            updated_at=now,
        )

    def _bot_reply(
        self, conversation: Conversation, message: Message, decision: Decision, now: datetime, attempt: FaqTry
    ) -> Message:
        """The bot's answer, suggestions or "please rephrase", carrying its try for a later ticket."""
        messages = self._bot.messages
        meta: dict[str, object] = {"outcome": str(decision.outcome), **faq_try_meta(attempt)}
        if decision.outcome is Outcome.ANSWER and decision.answer is not None:
            text = decision.answer.answer
            meta["faq_id"] = decision.answer.id
        elif decision.outcome is Outcome.SUGGEST:
            text = messages.suggest
            meta.update(
                suggestions_meta([Suggestion(faq_id=e.id, question=e.questions[0]) for e in decision.suggestions])
            )
        else:
            text = messages.miss
        return self._reply_message(conversation, message, text, now, meta)

    def _reply_message(
        self, conversation: Conversation, message: Message, text: str, now: datetime, meta: dict[str, object]
    ) -> Message:
        # One reply per inbound message: the unique key makes a retried handling write nothing new.
        return outbound_message(
            conversation, author=Author.BOT, text=text, at=now, external_id=reply_key(message.id), meta=meta
        )

    async def _handoff(
        self, conversation: Conversation, message: Message, reason: HandoffReason, now: datetime, attempt: FaqTry
    ) -> None:
        # An angry customer (complaint wording) or a VIP waits less: the ticket starts at high priority.
        urgent = reason in (HandoffReason.NEGATIVE_SENTIMENT, HandoffReason.VIP)
        request = TicketRequest(reason=reason, priority=Priority.HIGH if urgent else Priority.NORMAL)
        # The ticket first: its version check is what stops a second, concurrent handoff, so the
        # customer never gets the handoff message twice. The message then joins the ticket.
        created, saved = await self._create_ticket(conversation, message, request, now, attempt)
        text = handoff_message(self._bot.messages, self._bot.hours, now)
        number = self._bot.messages.ticket_number.format(number=created.number)
        text = f"{text}\n{number}" if number else text
        meta: dict[str, object] = {"outcome": "handoff", "reason": str(reason), "ticket_number": created.number}
        reply = self._reply_message(saved, message, text, now, meta)
        await self._outbound.deliver_bot_reply(reply, saved, in_reply_to=message.id, mark_handled=True)
        await self._announce(created, saved)

    async def _say(self, conversation: Conversation, message: Message, text: str, meta: dict[str, object]) -> None:
        """The bot's one reply to ``message``, leaving the conversation as it is."""
        reply = self._reply_message(conversation, message, text, self._clock(), meta)
        await self._outbound.deliver_bot_reply(reply, conversation, in_reply_to=message.id, mark_handled=True)

    async def _follow_up(self, conversation: Conversation, message: Message, request: TicketRequest) -> bool:
        """A customer with an active ticket (updated within the follow-up window) who now needs a human again, on
        any channel, joins that ticket instead of getting a new one; True when it did (the message is handled)."""
        if not self._follows_up(request):
            return False
        now = self._clock()
        ticket = self._joinable(await self._store.tickets_of(conversation.contact_id), now)
        if ticket is None:
            return False
        joined = dataclasses.replace(
            conversation.moved_to(ConversationStatus.WAITING_FOR_AGENT), ticket_id=ticket.id, updated_at=now
        )
        saved = await self._store.join_ticket(
            joined,
            [
                events.conversation_handoff(joined, ticket, HandoffReason.FOLLOW_UP),
                events.status_changed(joined, conversation.status, at=now),
            ],
        )
        await self._outbound.status_changed(saved)
        if request.escalate:
            await self._escalate(ticket.id)
        joined_message = dataclasses.replace(message, ticket_id=ticket.id)
        if intake_facts(message).bot:
            text = self._bot.messages.followup_joined.format(number=ticket.number)
            meta: dict[str, object] = {"outcome": "followup", "ticket_number": ticket.number}
            reply = self._reply_message(saved, joined_message, text, now, meta)
            await self._outbound.deliver_bot_reply(reply, saved, in_reply_to=message.id, mark_handled=True)
        else:
            await self._voicemail.answer(saved, joined_message, ticket.id, opened=False)
            await self._store.mark_handled(message.id)
        return True

    def _follows_up(self, request: TicketRequest) -> bool:
        """Whether ``request`` may join an active ticket: the window is on, and the sender's address is not only
        claimed."""
        return self._customer.followup.window_s > 0 and request.follow_up

    def _joinable(self, tickets: Sequence[Ticket], now: datetime) -> Ticket | None:
        """The contact's ticket a follow-up joins: the latest active one updated within the window."""
        window = self._customer.followup.window_s
        active = [
            t
            for t in tickets
            # a ticket opened under the contact's address by an unverified sender is no ticket of theirs to join
            if t.status.is_active and (now - t.updated_at).total_seconds() <= window and not t.sender_unverified
        ]
        return max(active, key=lambda t: t.updated_at) if active else None

    async def _is_vip(self, contact_id: str) -> bool:
        contact = await self._store.get_contact(contact_id)
        return contact is not None and contact.vip

    async def _open_ticket(
        self, conversation: Conversation, message: Message, request: TicketRequest, attempt: FaqTry | None = None
    ) -> tuple[Ticket, Conversation]:
        """The channel asked for humans (an email, a missed call): a ticket at once, no bot reply."""
        ticket, saved = await self._create_ticket(conversation, message, request, self._clock(), attempt)
        await self._announce(ticket, saved)
        return ticket, saved

    async def _announce(self, ticket: Ticket, conversation: Conversation) -> None:
        await self._outbound.status_changed(conversation)
        await self._outbound.ticket_opened(ticket, conversation)

    async def _create_ticket(
        self,
        conversation: Conversation,
        message: Message,
        request: TicketRequest,
        now: datetime,
        attempt: FaqTry | None = None,
    ) -> tuple[Ticket, Conversation]:
        """``attempt``: the bot's try at ``message``, which no stored reply carries; the episode's earlier tries
        are on the bot's replies in the transcript."""
        transcript = await self._store.messages(conversation.id, episode=conversation.episode)
        ticket = self._draft_ticket(conversation, message, request, now, transcript, attempt)
        ticket, assign = await self._rules.new_ticket(ticket, conversation, transcript, message)
        waiting, ticket_events = _taken(conversation, request, now)
        return await self._store.create_ticket(ticket, waiting, ticket_events, assign=assign)

    def _draft_ticket(
        self,
        conversation: Conversation,
        message: Message,
        request: TicketRequest,
        now: datetime,
        transcript: Sequence[Message],
        attempt: FaqTry | None = None,
    ) -> Ticket:
        """The new ticket before the service rules and the store's number: ``transcript`` is the episode's
        messages, ``message`` stored among them."""
        tries = faq_tries_of(transcript) + ((attempt,) if attempt is not None else ())
        first = next((m for m in transcript if m.author is Author.CUSTOMER), message)
        return Ticket(
            id=f"tk_{ordered_hex()}",  # ordered, as messages: a batch's tickets share their indexes' last pages
            number="",
            conversation_id=conversation.id,
            contact_id=conversation.contact_id,
            subject=request.subject or _subject(first.text),
            status=TicketStatus.NEW,
            priority=request.priority,
            tags=request.tags,
            channel=conversation.channel,
            inbox=conversation.inbox,
            created_at=now,
            updated_at=now,
            handoff_reason=request.reason,
            faq_tries=tries[-MAX_FAQ_TRIES:],
            sender_unverified=sender_check_of(message) is SenderCheck.UNVERIFIED,
        )

    async def _escalate(self, ticket_id: str) -> None:
        """A repeat (another missed call while a ticket is open) raises the ticket's priority one step."""
        await self._tickets.change(ticket_id, TicketChange(raise_priority=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class _First:
    """What ``receive_first`` left: the conversation, the message's (stored, created) unless the conversation
    needs the full path, and whether it was stored handled."""

    conversation: Conversation
    stored: tuple[Message, bool] | None
    settled: bool
    reply: FirstReply | None = None  # the bot's, written with the message
    frame_seq: int | None = None  # the number of the reply's frame, when it has one


def _is_log_line(inbound: InboundMessage) -> bool:
    """Whether ``receive`` would store ``inbound`` with no fact to apply before or after: no ticket request and
    nothing else asked (an answered call)."""
    return inbound.ticket is None and _asks_nothing_else(inbound)


def _asks_nothing_else(inbound: InboundMessage) -> bool:
    """No reopen request, no contact flag, no FAQ pick, no greeting, no checkpoint, not for the bot, no voicemail
    to answer."""
    return (
        not inbound.bot
        and inbound.voicemail is None
        and inbound.reopen is None
        and not inbound.contact_flags
        and not inbound.picked_faq
        and not inbound.greeting
        and not inbound.checkpoints  # stored with the message by add_message, which the bulk writes do not take
    )


def _is_ticket_line(inbound: InboundMessage) -> bool:
    """Whether ``receive`` would store ``inbound`` with no fact to apply before and hand it to ``_respond`` for
    a ticket request alone: no admission to take, and nothing else asked (``_asks_nothing_else``)."""
    return inbound.ticket is not None and inbound.admission is None and _asks_nothing_else(inbound)


def _taken(conversation: Conversation, request: TicketRequest, now: datetime) -> tuple[Conversation, TicketEvents]:
    """The conversation as a new ticket takes it (waiting for an agent), and the events of that ticket's
    creation, given the ticket as numbered and the conversation as saved."""
    waiting = evolve(conversation.moved_to(ConversationStatus.WAITING_FOR_AGENT), updated_at=now)

    def ticket_events(numbered: Ticket, saved: Conversation) -> list[DownstreamEvent]:
        return [
            events.ticket_created(numbered),
            events.conversation_handoff(saved, numbered, request.reason),
            events.status_changed(evolve(waiting, ticket_id=numbered.id), conversation.status, at=now),
        ]

    return waiting, ticket_events


def _subject(text: str, limit: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _customer_message(
    inbound: InboundMessage,
    text: str,
    meta: Mapping[str, Any],
    now: datetime,
    conversation: Conversation,
) -> Message:
    """The stored form of a customer's message, one for ``receive`` and the bulk path alike."""
    return Message(
        id=f"msg_{ordered_hex()}",
        conversation_id=conversation.id,
        channel=inbound.channel,
        inbox=inbound.inbox,
        direction=Direction.INBOUND,
        author=Author.CUSTOMER,
        kind=inbound.kind,
        text=text,
        created_at=now,
        external_id=inbound.external_id,
        attachments=inbound.attachments,
        raw=inbound.raw,
        ticket_id=conversation.ticket_id,
        episode=conversation.episode,
        meta=meta,
    )
