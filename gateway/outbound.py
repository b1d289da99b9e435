"""Replies back to the customer through the connector of the inbox they wrote to."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Protocol, TypeGuard

from connectors.base import Connector
from connectors.capabilities import AcknowledgesTickets, AnswersInline, DeliversByFrames, Notifies
from core import events
from core.model import (
    Author,
    Conversation,
    Delivery,
    DeliveryStatus,
    DownstreamEvent,
    EventType,
    Message,
    OutboundReply,
    Ticket,
    greeting_key,
    inline_delivery,
    outbound_message,
)
from core.observe import NO_OBSERVER, Observer
from core.outage import OutageLog
from core.store.base import Outgoing, StoreUnavailable
from core.store.roles import Conversations, Frames, Outbox, Transcript
from core.store.types import Frame
from core.tasks import TaskTracker

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (1.0, 4.0, 15.0, 60.0)


class OutboundStore(Transcript, Outbox, Conversations, Frames, Protocol):
    """The roles replies go through: the transcript, its outbox, the conversation a reply is on, and the frame
    log of a channel that delivers by frames."""


def delivery_failed(message: Message, delivery: Delivery, at: datetime) -> DownstreamEvent:
    return DownstreamEvent(
        type=EventType.MESSAGE_DELIVERY_FAILED,
        data={
            "message_id": message.id,
            "channel": str(message.channel),
            "inbox": message.inbox,
            "reason": delivery.reason,
            "error": delivery.error,
        },
        occurred_at=at,
        idempotency_key=f"message.delivery_failed:{message.id}",
        ticket_id=message.ticket_id,
        conversation_id=message.conversation_id,
    )


def _addressed(message: Message, conversation: Conversation, in_reply_to: str | None) -> OutboundReply:
    """``message`` as its connector sends it: to the conversation's address, answering ``in_reply_to``."""
    return OutboundReply(
        message=message, address=conversation.address, conversation=conversation, in_reply_to=in_reply_to
    )


class Outbound:
    def __init__(
        self,
        store: OutboundStore,
        connectors: Mapping[str, Connector],
        tasks: TaskTracker,
        *,
        resend_after_s: float,
        retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
        observer: Observer = NO_OBSERVER,
        outage: OutageLog | None = None,
    ) -> None:
        """``resend_after_s`` (``server.resend_after_s``): how long a send may take before another sender (this
        process after a restart, or another instance) may take the message from the outbox and send it."""
        self._store = store
        self._connectors = connectors
        self._tasks = tasks
        self._retry_delays_s = retry_delays_s
        self._resend_after_s = resend_after_s
        self._observer = observer
        self._outage = outage or OutageLog()
        # Messages this process is sending now (a connector call, or a retry task between attempts): the outbox
        # hold is a time, and a send slower than ``resend_after_s`` must not be taken and sent again from here.
        self._sending: collections.Counter[str] = collections.Counter()
        self._capabilities: dict[tuple[type, type], bool] = {}  # (connector class, capability) -> has it

    @contextlib.contextmanager
    def _owned(self, message_id: str) -> Iterator[None]:
        self._sending[message_id] += 1
        try:
            yield
        finally:
            self._sending[message_id] -= 1
            if self._sending[message_id] <= 0:
                del self._sending[message_id]

    def _capable(self, connector: object, capability: type) -> bool:
        """``isinstance(connector, capability)``, decided once per connector class: a runtime-checkable protocol's
        ``isinstance`` walks the class's attributes on every call (~2% of a web chat message's server CPU, and two
        checks per ticket a CDR import opens, issue 23)."""
        key = (type(connector), capability)
        found = self._capabilities.get(key)
        if found is None:
            found = self._capabilities[key] = isinstance(connector, capability)
        return found

    def _frames(self, connector: object) -> TypeGuard[DeliversByFrames]:
        return self._capable(connector, DeliversByFrames)

    def _answers_inline(self, connector: object) -> TypeGuard[AnswersInline]:
        return self._capable(connector, AnswersInline)

    def _notifies(self, connector: object) -> TypeGuard[Notifies]:
        return self._capable(connector, Notifies)

    def _acknowledges_tickets(self, connector: object) -> TypeGuard[AcknowledgesTickets]:
        return self._capable(connector, AcknowledgesTickets)

    async def deliver_bot_reply(
        self,
        reply: Message,
        conversation: Conversation,
        *,
        in_reply_to: str,
        mark_handled: bool,
        saving: Conversation | None = None,
    ) -> Message:
        """Store the reply once (its external id is derived from the message it answers), then send it.

        With ``mark_handled`` the answered message is marked handled in the same write, and ``saving``
        (the conversation as the bot's decision left it) is saved in it too, version-checked.
        """
        stored, _ = await self.store_and_send(
            reply, conversation, in_reply_to=in_reply_to, answers=in_reply_to if mark_handled else None, saving=saving
        )
        return stored

    def replies_at_once(self, inbox: str, *, inline: bool) -> bool:
        """Whether a bot reply on ``inbox`` can be written with the message it answers (``Intake._answer_at_once``):
        it goes back in that message's own exchange (``inline``, a connector that answers so), or as a frame of the
        visitor's frame log (web chat). Any other channel sends through the outbox, after the write."""
        connector = self._connectors.get(inbox)
        return (inline and self._answers_inline(connector)) or self._frames(connector)

    def first_delivery(
        self, conversation: Conversation, reply: Message, *, in_reply_to: str, inline: bool
    ) -> tuple[Delivery, Frame | None]:
        """How a reply written with the message it answers is recorded (``replies_at_once`` said it can be): sent
        in that exchange, or its frame and the delivery the frame has (sent to a socket open here, else queued).
        Called inside the store's write: it reads the connector's state and writes nothing."""
        connector = self._connectors.get(conversation.inbox)
        if inline and self._answers_inline(connector):
            return inline_delivery(in_reply_to), None
        assert self._frames(connector), "replies_at_once said the connector delivers by frames"
        outbound = _addressed(reply, conversation, in_reply_to)
        frame, delivered = connector.reply_frame(outbound)
        return delivered, frame

    def answered_inline(self, reply: Message) -> None:
        """A bot reply intake stored with the message it answers (``first_delivery``): counted as the outbox counts
        what it stores. One going back in the message's own exchange is the connector's to write."""
        self._observer.message_stored(reply)

    async def send_first_frame(
        self,
        reply: Message,
        conversation: Conversation,
        *,
        in_reply_to: str,
        frame: Frame,
        seq: int,
        delivered: Delivery,
    ) -> None:
        """The frame of a reply intake stored with its message, to the visitor's sockets (as ``store_and_send`` sends
        one it stored)."""
        connector = self._connectors.get(conversation.inbox)
        assert self._frames(connector)
        outbound = _addressed(reply, conversation, in_reply_to)
        await self._send_stored_frame(connector, outbound, frame, seq, delivered)

    async def store_and_send(
        self,
        message: Message,
        conversation: Conversation,
        *,
        in_reply_to: str | None = None,
        answers: str | None = None,
        saving: Conversation | None = None,
    ) -> tuple[Message, Delivery | None]:
        """Store an outbound message once, in the outbox, and send it; (the stored message, its delivery).

        A repeat (its external id already stored) sends nothing and gets None: the first one was sent, or
        is being sent, or waits in the outbox for ``resend_unsent`` because its sender died.
        """
        connector = self._connectors.get(conversation.inbox)
        # A reply the waiting request carries back is stored as delivered, in the one write (no outbox entry,
        # no delivery record after it): if this process dies before the response is written, the channel's
        # retry of the request finds the stored reply and carries it (see the WeChat connector).
        inline = (
            connector.inline_delivery(in_reply_to)
            if in_reply_to is not None and self._answers_inline(connector)
            else None
        )
        if inline is None and self._frames(connector):
            return await self._store_framed(connector, message, conversation, in_reply_to, answers, saving)
        stored, created = await self._store.add_message(
            message,
            [events.message_created(message)],
            answers=answers,
            saving=saving,
            outgoing=Outgoing(in_reply_to=in_reply_to, hold_s=self._resend_after_s) if inline is None else None,
            delivered=inline,
        )
        if not created:
            return stored, None
        self._observer.message_stored(stored)
        return stored, await self.send(stored, conversation, in_reply_to=in_reply_to, recorded=inline)

    async def _store_framed(
        self,
        connector: DeliversByFrames,
        message: Message,
        conversation: Conversation,
        in_reply_to: str | None,
        answers: str | None,
        saving: Conversation | None,
    ) -> tuple[Message, Delivery | None]:
        """``store_and_send`` on a channel that delivers by frames: the reply, its frame and its delivery in one
        write (three store jobs were: the reply with its outbox entry, the frame, the delivery record), then the
        frame to the open sockets. Nothing waits in the outbox: the stored frame is the delivery, and a visitor
        who reconnects, to any instance, is sent what they missed from it."""
        reply = _addressed(message, conversation, in_reply_to)
        frame, delivered = connector.reply_frame(reply)
        stored, seq = await self._store.add_framed_message(
            message, [events.message_created(message)], frame=frame, delivered=delivered, answers=answers, saving=saving
        )
        if seq is None:
            return stored, None
        self._observer.message_stored(stored)
        return stored, await self._send_stored_frame(connector, reply, frame, seq, delivered)

    async def _send_stored_frame(
        self, connector: DeliversByFrames, reply: OutboundReply, frame: Frame, seq: int, delivered: Delivery
    ) -> Delivery:
        """A stored reply's frame (number ``seq``, stored with ``delivered``) to the visitor's open sockets; the
        delivery recorded again only when it turned out otherwise. A failure loses nothing: it is in the log."""
        stored = reply.message
        try:
            delivery = await connector.send_frame(reply, frame, seq)
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:  # stored, so not lost; an outage is one line per interval, not a traceback
            self._outage.report(f"sending the frame of {stored.id}", exc)
            return delivered
        except Exception:  # stored, so not lost: the next frame or a reconnect sends it from the frame log
            log.exception("sending the stored frame of %s failed; it waits in the frame log", stored.id)
            return delivered
        if delivery != delivered:
            await self._record(stored, delivery)
        return delivery

    async def record_greeting(self, answering: Message, text: str, at: datetime) -> Message:
        """A greeting the channel delivers itself, in the same exchange as the message it answers (a WeChat
        welcome in the push's response): stored once in the transcript (keyed on that message, so a retry
        finds it), and not put in the outbox."""
        greeting = outbound_message(
            answering,
            author=Author.BOT,
            text=text,
            at=at,
            external_id=greeting_key(answering.id),
            meta={"outcome": "welcome"},
        )
        stored, created = await self._store.add_message(greeting, [events.message_created(greeting)])
        if created:
            self._observer.message_stored(stored)
        return stored

    async def send(
        self,
        message: Message,
        conversation: Conversation,
        *,
        in_reply_to: str | None = None,
        recorded: Delivery | None = None,
    ) -> Delivery:
        """Send through the inbox's connector and record the outcome (which takes it out of the outbox).

        A retryable failure is retried in the background with backoff; a permanent one raises
        ``message.delivery_failed`` so the helpdesk can choose another channel. ``recorded``: the delivery the
        message was stored with (an inline reply); when it went out that way there is nothing left to record,
        and when it did not, the message goes back in the outbox before anything else is tried.
        """
        reply = _addressed(message, conversation, in_reply_to)
        with self._owned(message.id):
            delivery = await self._attempt(reply)
            if recorded is not None:
                if delivery == recorded:
                    return delivery
                await self._store.requeue(message.id, in_reply_to, self._resend_after_s)
            if delivery.status is DeliveryStatus.RETRYABLE:
                self._tasks.spawn(self._retry(reply), name=f"outbound-retry:{message.id}")
            await self._record(message, delivery)
        return delivery

    async def resend_unsent(self) -> int:
        """Send what waits in the outbox with nobody sending it: its sender died between storing and a final
        delivery (killed mid-send, or during the retries). Runs at start-up and then every little while."""
        taken = await self._store.take_outgoing(self._resend_after_s)
        for message, in_reply_to in taken:
            if message.id in self._sending:
                # Its send is still under way here (slower than resend_after_s): not dead, only slow. Taking it
                # held it for another resend_after_s, which keeps other instances off it while it lasts.
                log.info("%s is still being sent here; not sending it again", message.id)
                continue
            conversation = await self._store.get_conversation(message.conversation_id)
            if conversation is None:
                gone = Delivery(status=DeliveryStatus.FAILED, error="no conversation", reason="no_conversation")
                await self._record(message, gone)
                continue
            log.warning("sending %s again: its sender stopped before the delivery was known", message.id)
            await self.send(message, conversation, in_reply_to=in_reply_to)
        return len(taken)

    async def _attempt(self, reply: OutboundReply) -> Delivery:
        connector = self._connectors.get(reply.conversation.inbox)
        if connector is None:
            return Delivery(
                status=DeliveryStatus.FAILED,
                error=f"inbox {reply.conversation.inbox!r} is not configured",
                reason="inbox_not_configured",
            )
        try:
            return await connector.send(reply)
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:  # a connector's own store calls (web chat's frames): retried, no traceback
            self._outage.report(f"sending {reply.message.id}", exc)
            return Delivery(status=DeliveryStatus.RETRYABLE, error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a connector bug must not lose the record of what happened
            log.exception("connector for inbox %s failed to send %s", reply.conversation.inbox, reply.message.id)
            return Delivery(status=DeliveryStatus.RETRYABLE, error=f"{type(exc).__name__}: {exc}")

    async def _retry(self, reply: OutboundReply) -> None:
        with self._owned(reply.message.id):  # between attempts too: the task will send it
            await self._retry_owned(reply)

    async def _retry_owned(self, reply: OutboundReply) -> None:
        delivery = Delivery(status=DeliveryStatus.RETRYABLE)
        for delay in self._retry_delays_s:
            wait = delay * random.uniform(0.8, 1.2)
            await self._store.hold_outgoing(reply.message.id, wait + self._resend_after_s)
            await asyncio.sleep(wait)
            delivery = await self._attempt(reply)
            if delivery.status is not DeliveryStatus.RETRYABLE:
                break
        else:
            delivery = Delivery(
                status=DeliveryStatus.FAILED, error=delivery.error, reason=delivery.reason or "retries_exhausted"
            )
        await self._record(reply.message, delivery)

    async def _record(self, message: Message, delivery: Delivery) -> None:
        failed = delivery.status is DeliveryStatus.FAILED
        log_events = [delivery_failed(message, delivery, datetime.now(UTC))] if failed else []
        await self._store.record_delivery(message.id, delivery, log_events)
        if failed:
            log.warning("message %s not delivered: %s (%s)", message.id, delivery.reason, delivery.error)

    async def status_changed(self, conversation: Conversation) -> None:
        connector = self._connectors.get(conversation.inbox)
        if self._notifies(connector):
            await connector.notify(conversation)

    async def ticket_opened(self, ticket: Ticket, conversation: Conversation) -> None:
        """Send what the inbox's connector wants said about a new ticket, stored once and retried like a reply."""
        self._observer.ticket_opened(ticket)
        connector = self._connectors.get(conversation.inbox)
        if not self._acknowledges_tickets(connector):
            return
        notice = await connector.ticket_opened(ticket, conversation)
        if notice is not None:  # a repeat (a retried handling) finds it stored, and sends nothing
            await self.store_and_send(notice.message, notice.conversation, in_reply_to=notice.in_reply_to)
