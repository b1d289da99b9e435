"""The Store's roles: small protocols, each a consumer can depend on alone; Store is their sum."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from core.model import (
    Admission,
    Channel,
    Checkpoint,
    Contact,
    Conversation,
    Delivery,
    Direction,
    DownstreamEvent,
    Identity,
    Message,
    QuarantinedItem,
    Ticket,
)
from core.store.types import (
    Assignment,
    DeadLetter,
    DueTimer,
    FirstBuild,
    Frame,
    Gauges,
    Hits,
    LogLine,
    Outgoing,
    StoredFrame,
    TicketEvents,
    TicketLine,
    TicketLineStored,
    TicketPage,
    TicketQuery,
)


class Lifecycle(Protocol):
    """Open, close and health of the backend."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool: ...


class Contacts(Protocol):
    """Contacts and their flags: one person across channels."""

    async def contact_for(self, identity: Identity, *, name: str | None, now: datetime) -> Contact:
        """The contact owning ``identity``, created atomically if there is none."""
        ...

    async def get_contact(self, contact_id: str) -> Contact | None: ...

    async def save_contact(self, contact: Contact, *, expected_version: int | None = None) -> Contact:
        """Name, VIP mark, tags and flags; identities change only through ``conversation_for``, ``add_identity``
        and merges.

        Returns it saved with the version bumped. With ``expected_version`` it is saved only if the stored
        version is that one (VersionConflict otherwise); without, the last save wins.
        """
        ...

    async def contact_by_identity(self, identity: Identity) -> Contact | None:
        """The contact owning ``identity``, never creating one."""
        ...

    async def add_identity(self, contact_id: str, identity: Identity) -> bool:
        """Link an identity to a contact (an agent's word, or a customer's proof); False (and nothing changed) if
        another contact owns it."""
        ...

    async def merge_contacts(self, source_id: str, into_id: str, *, events: Sequence[DownstreamEvent] = ()) -> Contact:
        """One write: ``source``'s identities, conversations and tickets move to ``into`` (their versions bumped),
        its flags, tags and VIP mark join ``into``'s, and ``source`` stays behind as a pointer (``merged_into``).

        NotFound if either is missing; ValueError for a contact into itself or one already merged.
        """
        ...


class Conversations(Protocol):
    """The one mutable record, saved with a version check."""

    # Whether ``receive_first`` writes a ``FirstWrite.reply`` with its message in one transaction (SQLite's one
    # job). Where it cannot (Redis: two scripts, and a crash between them must leave the message unhandled),
    # intake never gives one, and the bot answers after the write as for every other message.
    replies_in_first_write: bool

    async def conversation_for(
        self,
        address: Identity,
        *,
        channel: Channel,
        inbox: str,
        name: str | None,
        now: datetime,
        thread: str = "",
        aliases: Sequence[Identity] = (),
        admit: Admission | None = None,
    ) -> Conversation:
        """The conversation for this address and thread on this inbox.

        ``admit``: first take this claim as ``lease`` would (in the same call: on Redis, the same script as the
        read), raising AdmissionRefused, with nothing read or written, when another holder has it.

        If there is none, it is created atomically, together with the contact if the address is new.
        A new address joins the contact of any of its ``aliases`` (verified identities such as a WeChat
        unionid); aliases owned by another contact are never merged, the contact is flagged instead.
        Finding an existing conversation is a single read: this is on every message's path.
        """
        ...

    async def receive_first(
        self,
        address: Identity,
        *,
        channel: Channel,
        inbox: str,
        name: str | None,
        now: datetime,
        build: FirstBuild,
        thread: str = "",
        aliases: Sequence[Identity] = (),
        admit: Admission | None = None,
    ) -> tuple[Conversation, tuple[Message, bool] | None]:
        """``conversation_for`` (with its ``admit``), then ``add_message`` of what ``build`` makes of that
        conversation, as the two calls would leave the store: (the conversation, add_message's (stored message,
        created)), or (the conversation, None) with nothing more written when ``build`` gives None.

        One write where the backend allows it (SQLite: one store job, so one hand-off to the store's thread
        and one commit for a message's nonce, conversation and message); two calls where it does not (Redis).
        ``build`` runs once, on the conversation as stored, and must not block: it may run in the store's thread.
        A write's ``reply`` (see ``replies_in_first_write``) is stored, and the conversation saved, only when the
        message is new: a repeat delivery writes nothing.
        """
        ...

    async def get_conversation(self, conversation_id: str) -> Conversation | None: ...

    async def find_conversation(self, inbox: str, address: Identity, thread: str = "") -> Conversation | None:
        """The conversation for this address and thread on this inbox, without creating one."""
        ...

    async def conversations_of(self, contact_id: str) -> list[Conversation]: ...

    async def save_conversation(
        self, conversation: Conversation, events: Sequence[DownstreamEvent] = ()
    ) -> Conversation:
        """Save if the stored version equals ``conversation.version``; return it with the version bumped.

        Raises VersionConflict otherwise. Events are written in the same transaction.
        """
        ...


class Transcript(Protocol):
    """Messages, stored once by their external id, and what intake has handled."""

    async def add_message(
        self,
        message: Message,
        events: Sequence[DownstreamEvent] = (),
        *,
        answers: str | None = None,
        saving: Conversation | None = None,
        outgoing: Outgoing | None = None,
        handled: bool = False,
        checkpoints: Sequence[Checkpoint] = (),
        delivered: Delivery | None = None,
    ) -> tuple[Message, bool]:
        """Store a message once per (channel, inbox, direction, external_id).

        Returns (stored message, created). On a duplicate the earlier message is returned and
        nothing (not even the events) is written. ``answers`` names the inbound message this one
        replies to: it is marked handled in the same transaction. ``saving`` is a conversation to
        save with it, version-checked as in ``save_conversation`` (VersionConflict, and nothing
        written, if it changed): a bot reply and the conversation it updates are one write.
        ``outgoing`` puts a new message in the outbox in the same write. ``handled``: an inbound message that
        intake has nothing to do for (a call log line) is stored handled, as ``mark_handled`` would leave it.
        ``checkpoints`` are set as ``set_checkpoint`` would, with a new message only (a connector's state that the
        message changes, such as a WeChat reply window opening).
        ``delivered``: an outbound message handed to the channel in the exchange that stores it (a WeChat passive
        reply, written in the push's response once stored) is stored with that delivery, as ``record_delivery``
        would leave it, in the same write; such a message is not put in the outbox.
        """
        ...

    async def get_message(self, message_id: str) -> Message | None: ...

    async def find_message(
        self, *, channel: Channel, inbox: str, direction: Direction, external_id: str
    ) -> Message | None:
        """By the channel's own id (an email Message-ID we sent, a WeChat MsgId)."""
        ...

    async def stored_external_ids(
        self, *, channel: Channel, inbox: str, direction: Direction, external_ids: Sequence[str]
    ) -> set[str]:
        """Which of ``external_ids`` are stored already: one read for a whole import batch, so a re-import skips
        its known rows without building them (intake's unique key still decides for the rest)."""
        ...

    async def messages(
        self, conversation_id: str, *, ticket_id: str | None = None, episode: int | None = None
    ) -> list[Message]: ...

    async def mark_handled(self, message_id: str) -> None:
        """Intake finished with an inbound message (bot decision and reply stored)."""
        ...

    async def unhandled_messages(self) -> list[Message]:
        """Inbound messages stored but not handled, e.g. after a crash mid-request."""
        ...


class LogLines(Protocol):
    """Bulk intake of messages that need no handling (a CDR import's answered calls): one write for many."""

    async def add_log_lines(self, lines: Sequence[LogLine]) -> list[tuple[Message, bool] | None]:
        """Store ``lines`` in order, in one write, each as ``conversation_for`` and then ``add_message(...,
        handled=True)`` would: the same contact and conversation (opened if there is none), the same unique key
        and the same events, with (stored message, created) as ``add_message`` returns it.

        None for a line whose ``build`` gave None on its conversation, and for every later line of that
        conversation in ``lines``: the caller hands those to intake one at a time, in order.
        """
        ...

    async def add_ticket_lines(self, lines: Sequence[TicketLine]) -> list[TicketLineStored | None]:
        """Store ``lines`` in order, in one write where the backend can, each as intake alone would: its
        conversation (opened if there is none), ``build``'s decision on it, the message (``add_message``, stored
        handled), then, for a new message only, its ticket (``create_ticket``) or ticket change
        (``update_ticket``). Each line sees what the earlier ones wrote. None as in ``add_log_lines``; a
        backend may give None for every line (Redis: intake takes them one at a time).
        """
        ...


class Outbox(Protocol):
    """Outbound messages waiting for a final delivery."""

    async def record_delivery(
        self, message_id: str, delivery: Delivery, events: Sequence[DownstreamEvent] = ()
    ) -> None:
        """What the channel said when an outbound message was sent, with its events, in one write.

        A final delivery (anything but retryable) takes the message out of the outbox.
        """
        ...

    async def requeue(self, message_id: str, in_reply_to: str | None, hold_s: float) -> None:
        """Put a message (back) in the outbox, held for ``hold_s``: one stored as delivered whose delivery then
        failed (a passive reply whose response could not be written) is sent again like any other."""
        ...

    async def hold_outgoing(self, message_id: str, hold_s: float) -> None:
        """Keep an outbox message from ``take_outgoing`` for ``hold_s`` more seconds (a retry is scheduled)."""
        ...

    async def take_outgoing(self, hold_s: float, limit: int = 100) -> list[tuple[Message, str | None]]:
        """Outbox messages nobody holds (their sender died), each with what it answers; the caller now holds
        them for ``hold_s``, so two instances never both take one."""
        ...


class Tickets(Protocol):
    """Tickets, numbered and version-checked, created with their events in one transaction."""

    async def create_ticket(
        self,
        ticket: Ticket,
        conversation: Conversation,
        events: TicketEvents,
        *,
        assign: Assignment | None = None,
    ) -> tuple[Ticket, Conversation]:
        """One transaction: number the ticket, attach the conversation's current-episode messages,
        save the conversation (version-checked, with ``ticket_id`` set) and write the events that
        ``events`` builds from the numbered ticket and the saved conversation (the outbox).

        With ``assign`` (and no assignee on the ticket) the store picks the assignee in the same write.
        Every ticket write also sets the ticket's timer (``ticket_timer``) to its next SLA check.
        """
        ...

    async def get_ticket(self, ticket_id_or_number: str) -> Ticket | None: ...

    async def update_ticket(
        self, ticket: Ticket, events: Sequence[DownstreamEvent] = (), *, assign: Assignment | None = None
    ) -> Ticket:
        """Version-checked like conversations. With ``assign`` (and no assignee on the ticket) the store picks
        one as ``create_ticket`` does, and the events name it."""
        ...

    async def list_tickets(self, query: TicketQuery) -> TicketPage: ...

    async def tickets_of(self, contact_id: str) -> list[Ticket]:
        """Every ticket of the contact, oldest first."""
        ...

    async def join_ticket(self, conversation: Conversation, events: Sequence[DownstreamEvent] = ()) -> Conversation:
        """A follow-up on another conversation joins an open ticket: save ``conversation`` (version-checked, its
        ``ticket_id`` naming the ticket) and attach its current-episode messages that have no ticket, in one write."""
        ...


class Timers(Protocol):
    """A due-time index: timers survive restarts, and a due one is claimed by one instance at a time."""

    async def set_timer(self, key: str, due_at: datetime | None) -> None:
        """Set (or move) the timer ``key``; None removes it."""
        ...

    async def claim_due_timers(self, now: datetime, hold_s: float, limit: int = 100) -> list[DueTimer]:
        """Timers due by ``now``, each moved ``hold_s`` past ``now`` so no other caller takes it meanwhile; the
        caller moves or removes it once it acted (if it dies, the timer comes due again after ``hold_s``)."""
        ...


class EventLog(Protocol):
    """The downstream events, read after a position."""

    async def events_after(self, seq: int, limit: int = 100) -> list[DownstreamEvent]: ...

    async def append_events(self, events: Sequence[DownstreamEvent]) -> None:
        """Events about no stored change of their own (a health alarm), each kept once by its idempotency key.
        Events about a change are written with it, by the role that makes the change."""
        ...


class Frames(Protocol):
    """Frames pushed to a live channel (web chat): durable, numbered per address."""

    async def push_frame(self, address: Identity, body: dict[str, Any]) -> int:
        """Append a frame for ``address``; returns its sequence number (1, 2, 3, … with no gaps)."""
        ...

    async def frames_after(self, address: Identity, seq: int, limit: int = 500) -> list[StoredFrame]: ...

    async def last_frame_seq(self, address: Identity) -> int: ...

    async def add_framed_message(
        self,
        message: Message,
        events: Sequence[DownstreamEvent],
        *,
        frame: Frame,
        delivered: Delivery,
        answers: str | None = None,
        saving: Conversation | None = None,
    ) -> tuple[Message, int | None]:
        """``add_message(message, events, answers=..., saving=..., delivered=...)`` and, with a new message only,
        ``push_frame(frame.address, frame.body)`` in the same write: a reply whose delivery is the customer's frame
        log (web chat) is stored, delivered and numbered at once, with no outbox entry and no delivery record after
        (one store job instead of three). Returns (stored message, the frame's seq), or (the earlier message, None)
        for a repeat, which writes nothing. VersionConflict as ``add_message`` raises it."""
        ...


class Quarantine(Protocol):
    """Input we could not parse, kept raw with the reason so it can be replayed."""

    async def quarantine(self, item: QuarantinedItem) -> bool:
        """Keep it once (by id); False if that id is already there."""
        ...

    async def quarantined(self, *, include_replayed: bool = False, limit: int = 100) -> list[QuarantinedItem]: ...

    async def get_quarantined(self, item_id: str) -> QuarantinedItem | None: ...

    async def mark_replayed(self, item_id: str) -> None: ...


class DeadLetters(Protocol):
    """Events a webhook subscription gave up on."""

    async def add_dead_letter(self, letter: DeadLetter) -> bool:
        """Keep it once (by id); False if that id is already there."""
        ...

    async def dead_letters(self, *, subscription: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Oldest first, optionally only one subscription's."""
        ...

    async def get_dead_letter(self, letter_id: str) -> DeadLetter | None: ...

    async def remove_dead_letter(self, letter_id: str) -> bool:
        """Drop it (it was replayed); False if it was not there, so two replays cannot both claim it."""
        ...


class Coordination(Protocol):
    """Claims and leases shared by instances, and the sweep of expired ones."""

    async def claim(self, key: str, ttl_s: float) -> bool:
        """True for the first caller to claim ``key`` while it lives; never get-then-set."""
        ...

    async def lease(self, key: str, holder: str, ttl_s: float) -> bool:
        """Take or renew a lease: True if ``holder`` holds ``key`` for the next ``ttl_s`` seconds.

        Another holder gets it only after it expires (e.g. one instance polls a mailbox; when it dies,
        another takes over once the lease runs out).
        """
        ...

    async def release(self, key: str, holder: str) -> None:
        """Give a lease up early, if ``holder`` still holds it."""
        ...

    async def hit(self, key: str, window_s: float) -> Hits:
        """Count one event under ``key`` in a fixed window of ``window_s`` seconds that starts at the first hit.

        A limit that must hold across instances (new web chat visitors per address, tickets per visitor per
        hour) reads the count this returns; one atomic write, never get-then-set. Expired windows go with
        ``purge_expired``.
        """
        ...

    async def purge_expired(self, limit: int = 1000) -> int:
        """Drop up to ``limit`` claims, leases, hit counters and checkpoints past their expiry; returns how many went.

        Every WeChat push claims its nonce and every reply a quota slot, and every call leaves its CTI
        state behind, so without a sweep these would pile up for ever. Redis expires its keys itself
        and has nothing to do.
        """
        ...


class Secrets(Protocol):
    """Secrets with an expiry (a channel's access token), shared by instances."""

    async def get_secret(self, name: str, now: datetime) -> str | None: ...

    async def set_secret(self, name: str, value: str, expires_at: datetime | None) -> None: ...


class Checkpoints(Protocol):
    """Positions and small per-channel state, with an optional expiry."""

    async def get_checkpoint(self, key: str) -> str | None: ...

    async def set_checkpoint(self, key: str, value: str, *, ttl_s: float | None = None) -> None:
        """Write ``value`` under ``key``, replacing the earlier value and expiry.

        With ``ttl_s`` it is gone (``get_checkpoint`` gives None) that many seconds from now: per-call and
        per-user state would otherwise grow the store without bound. Without it the checkpoint is kept
        until overwritten, as a position (IMAP UIDs, a file offset, a webhook cursor) must be.
        """
        ...

    async def set_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        """``set_checkpoint`` for each, in one store call: a WeChat push writes its reply window and its passive
        reply's mark together, one Redis round trip (a pipeline) or one SQLite job instead of two."""
        ...


class GaugeReader(Protocol):
    """Counts for metrics and health, read at scrape time so every instance reports the same."""

    async def gauges(self, *, since: datetime) -> Gauges:
        """Tickets by status, the pending quarantine (and how much of it arrived since ``since``), the outbox."""
        ...
