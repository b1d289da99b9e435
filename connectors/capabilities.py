"""Optional connector abilities as small protocols: the gateway asks for an ability, never for a class."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from connectors.base import InboundSink, LogLinesSink
from core.model import Conversation, Delivery, Identity, OutboundReply, QuarantinedItem, Ticket
from core.progress import Progress
from core.store.types import Frame

if TYPE_CHECKING:
    from connectors.phone.cdr import CdrFormat
    from connectors.phone.connector import ImportReport


@runtime_checkable
class Notifies(Protocol):
    """A live channel that tells the customer when their conversation's status changes (web chat)."""

    async def notify(self, conversation: Conversation) -> None: ...


@runtime_checkable
class AcknowledgesTickets(Protocol):
    """A channel that says something when a ticket is opened (email: an acknowledgement with its number)."""

    async def ticket_opened(self, ticket: Ticket, conversation: Conversation) -> OutboundReply | None:
        """The message to send about it, or None. The connector only composes it: the gateway stores it once
        (by its external id) and sends it like any reply, so a temporary failure is retried rather than lost."""
        ...


@runtime_checkable
class AnswersInline(Protocol):
    """A channel whose inbound request can carry the reply back while it waits (a WeChat passive reply)."""

    def inline_delivery(self, in_reply_to: str) -> Delivery | None:
        """The delivery a reply to ``in_reply_to`` gets in that request's response, or None when nothing waits
        for it there. Given, the request is committed to wait for the reply now being stored (and to ask for a
        retry should that fail), so the reply is stored with this delivery in its own write, not recorded after.
        """
        ...


@runtime_checkable
class DeliversByFrames(Protocol):
    """A live channel whose delivery is the customer's durable, numbered frame log (web chat): a reply is theirs
    once its frame is stored, open socket or not, so the gateway stores the reply, its frame and its delivery in
    one write (``Frames.add_framed_message``) and the connector then sends the numbered frame to open sockets."""

    def reply_frame(self, reply: OutboundReply) -> tuple[Frame, Delivery]:
        """The frame to store with ``reply.message``, and the delivery to store it with (what is known before)."""
        ...

    async def send_frame(self, reply: OutboundReply, frame: Frame, seq: int) -> Delivery:
        """After the write: frame ``seq`` to the customer's open sockets, in seq order, here and on other instances.
        The delivery it turned out to be (the gateway records it when it differs from the stored one)."""
        ...


@runtime_checkable
class Drains(Protocol):
    """A connector holding long-lived connections (web chat sockets) that shutdown must let go first."""

    async def drain(self) -> None:
        """Shutdown began: let go of long-lived connections so in-flight requests can finish."""
        ...


@runtime_checkable
class ShowsTyping(Protocol):
    """A live channel that shows the customer that someone is typing."""

    async def typing(self, address: Identity, *, author: str, on: bool) -> bool:
        """False when the customer has nothing open to show it on."""
        ...


@runtime_checkable
class Replays(Protocol):
    """A connector that can take its quarantined input in again (``huiliu quarantine replay``, after a fix)."""

    async def replay(self, item: QuarantinedItem, sink: InboundSink) -> str | None:
        """What the item became (for the operator), or None when it still cannot be read: it stays quarantined."""
        ...


@runtime_checkable
class ImportsCalls(Protocol):
    """A phone inbox that takes call detail records in (``huiliu calls import``)."""

    async def import_cdr(
        self,
        data: bytes,
        fmt: CdrFormat,
        sink: InboundSink,
        *,
        first_line: int = 1,
        progress: Progress | None = None,
        log_lines: LogLinesSink | None = None,
        ticket_lines: LogLinesSink | None = None,
    ) -> ImportReport: ...


@runtime_checkable
class SendsCodes(Protocol):
    """A connector that can send a one-time code to an address nobody has written from yet (email: SMTP), so a
    customer can prove an address they want linked to themself."""

    async def send_code(self, to: Identity, text: str) -> Delivery:
        """Send ``text`` to ``to`` outside any conversation; FAILED for an address of another kind."""
        ...
