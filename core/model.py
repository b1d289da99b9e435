"""The one data model every channel's messages flow through."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.evolve import evolve
from core.ids import ordered_hex
from core.redact import scrub


class Channel(enum.StrEnum):
    EMAIL = "email"
    WECHAT = "wechat"
    WEBCHAT = "webchat"
    PHONE = "phone"


class IdentityKind(enum.StrEnum):
    EMAIL = "email"
    PHONE = "phone"  # E.164
    WECHAT_OPENID = "wechat"
    WECHAT_UNIONID = "wechat_union"
    WEBCHAT_VISITOR = "webchat"


_IDENTITY_KINDS = {kind.value: kind for kind in IdentityKind}


class SenderCheck(enum.StrEnum):
    """How far a message's sender address is vouched for.

    Most channels vouch for it by their nature (WeChat signs the openid, a web chat session holds its token, the
    phone network gives the number), and email did as written when nobody checks it. Email with a trusted
    authentication server (``trusted_authserv_ids``) knows more: the server authenticated the From: domain, or it
    looked and could not, and then the address is only claimed: anyone can write a customer's address in From:.
    """

    CHANNEL = "channel"  # as far as the channel vouches for it
    AUTHENTICATED = "authenticated"  # a trusted server authenticated it (email: DMARC, or aligned DKIM or SPF)
    UNVERIFIED = "unverified"  # a trusted server checked and could not: perhaps forged


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Author(enum.StrEnum):
    CUSTOMER = "customer"
    BOT = "bot"
    AGENT = "agent"
    SYSTEM = "system"


class MessageKind(enum.StrEnum):
    TEXT = "text"
    IMAGE = "image"
    VOICE = "voice"
    VIDEO = "video"
    LOCATION = "location"
    LINK = "link"
    FILE = "file"
    CALL = "call"
    EVENT = "event"
    UNSUPPORTED = "unsupported"


class ConversationStatus(enum.StrEnum):
    BOT = "bot"
    WAITING_FOR_AGENT = "waiting_for_agent"
    OPEN = "open"
    RESOLVED = "resolved"


# The conversation state machine. A resolved conversation goes back to the bot
# when the customer writes again, or straight to open when an agent reopens it.
CONVERSATION_TRANSITIONS: Mapping[ConversationStatus, frozenset[ConversationStatus]] = {
    ConversationStatus.BOT: frozenset(
        {ConversationStatus.WAITING_FOR_AGENT, ConversationStatus.OPEN, ConversationStatus.RESOLVED}
    ),
    ConversationStatus.WAITING_FOR_AGENT: frozenset({ConversationStatus.OPEN, ConversationStatus.RESOLVED}),
    ConversationStatus.OPEN: frozenset({ConversationStatus.RESOLVED, ConversationStatus.WAITING_FOR_AGENT}),
    ConversationStatus.RESOLVED: frozenset({ConversationStatus.BOT, ConversationStatus.OPEN}),
}


# The bot's latest tries kept on a conversation or ticket: an endless bot chat must not grow them without bound.
MAX_FAQ_TRIES = 20


class InvalidTransition(ValueError):
    pass


class DeliveryStatus(enum.StrEnum):
    SENT = "sent"
    QUEUED = "queued"  # stored for the customer to pick up later (e.g. web chat offline)
    RETRYABLE = "retryable"
    FAILED = "failed"


class TicketStatus(enum.StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    RESOLVED = "resolved"
    CLOSED = "closed"

    @property
    def is_active(self) -> bool:
        return self not in (TicketStatus.RESOLVED, TicketStatus.CLOSED)


class Priority(enum.StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class HandoffReason(enum.StrEnum):
    """Why a ticket exists: the bot handed off, or the channel asked for one."""

    ASKED_FOR_HUMAN = "asked_for_human"
    NO_MATCH = "no_match"
    NEGATIVE_SENTIMENT = "negative_sentiment"
    VIP = "vip"
    AGENT_TOOK_OVER = "agent_took_over"
    EMAIL = "email"
    MISSED_CALL = "missed_call"
    VOICEMAIL = "voicemail"
    CHANNEL_EVENT = "channel_event"
    FOLLOW_UP = "follow_up"  # a conversation joined the customer's active ticket


@dataclass(frozen=True, slots=True)
class Identity:
    """A contact's address on one channel, e.g. ``email:a@b.com`` or ``phone:+8613800000000``."""

    kind: IdentityKind
    value: str

    def __str__(self) -> str:
        # Concatenation, not an f-string: formatting the StrEnum went through Enum.__format__ in Python, and a
        # CDR import makes this string several times a row (keys, index lookups, stored JSON).
        return self.kind + ":" + self.value

    @classmethod
    def parse(cls, text: str) -> Identity:
        kind, sep, value = text.partition(":")
        if not sep or not value:
            raise ValueError(f"identity must look like kind:value, got {text!r}")
        # a dict lookup first: calling the enum class costs more than the rest (every stored conversation has one)
        return cls(_IDENTITY_KINDS.get(kind) or IdentityKind(kind), value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """A reference to media; bytes never travel through the model."""

    name: str
    content_type: str
    url: str | None = None
    media_id: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketRequest:
    """A connector's request that this message go to humans at once (an email, a missed call).

    With ``bot_first`` the bot may still answer it when it is confident; only then is no ticket opened.
    ``escalate`` raises the priority of an already open ticket that the message joins (a repeat caller).
    """

    reason: HandoffReason
    priority: Priority = Priority.NORMAL
    subject: str | None = None
    tags: tuple[str, ...] = ()
    bot_first: bool = False
    escalate: bool = False
    # False when the sender's address is only claimed (an email From: no trusted server authenticated): the
    # message may then not join another active ticket of that contact as a follow-up; it opens its own.
    follow_up: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactFlag:
    """A connector's fact about an address: its contact gets (``on``) or loses a flag, e.g.
    ``bounced:email:a@b.com`` after a hard bounce, ``unsubscribed:wechat:<inbox>`` on an unfollow."""

    identity: Identity
    flag: str
    on: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A connector's own state that a new message sets, in the same write as the message (a WeChat reply window
    opening): one store write per message instead of two, and never set by a repeat delivery."""

    key: str
    value: str
    ttl_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReopenRequest:
    """The customer wrote again on a resolved conversation that this inbox puts back in front of agents
    (email ``resolved_reply: reopen``): its resolved ticket and the conversation go back to open."""

    conversation_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VoicemailRequest:
    """A voicemail's transcript the bot may answer on the caller's written channels (``channels``, first
    usable wins); with ``resolve`` the callback ticket it opened is resolved when the answer went out."""

    transcript: str
    channels: tuple[str, ...]
    resolve: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """A claim the store must grant before anything of a message is written: a webhook's replay guard (WeChat's
    signed nonce, held for the body it came with, so only a byte-identical retry passes). Taken as a ``lease``,
    in the same store call as intake's first read (``conversation_for``), not in a round trip of its own."""

    key: str
    holder: str
    ttl_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundMessage:
    """What a connector hands to intake: one customer message as the channel gave it."""

    channel: Channel
    inbox: str
    external_id: str
    sender: Identity
    text: str
    kind: MessageKind = MessageKind.TEXT
    sent_at: datetime | None = None
    received_at: datetime
    # Which conversation of this sender on this inbox: "" for channels with one conversation per
    # address (web chat, WeChat); an email thread's root Message-ID, say, for threaded channels.
    thread: str = ""
    attachments: tuple[Attachment, ...] = ()
    raw: str = ""
    sender_name: str | None = None
    # Further verified identities of the sender (a WeChat unionid): they find or join the same contact.
    aliases: tuple[Identity, ...] = ()
    # A customer's pick from a "did you mean" list: the FAQ entry id.
    picked_faq: str | None = None
    # UNVERIFIED: the message lands on the address's contact, but sees none of that contact's other tickets, links
    # no address to it, joins none of its tickets as a follow-up, and a ticket it opens is flagged for agents.
    sender_check: SenderCheck = SenderCheck.CHANNEL
    subject: str | None = None
    ticket: TicketRequest | None = None
    # False for messages the bot must not answer (events, calls, auto-replies).
    bot: bool = True
    # Facts intake acts on, never on a repeat delivery of a stored message; connectors only report them.
    contact_flags: tuple[ContactFlag, ...] = ()
    reopen: ReopenRequest | None = None
    greeting: str | None = None  # sent in reply to this message (a WeChat welcome on a follow)
    voicemail: VoicemailRequest | None = None
    admission: Admission | None = None  # refused: nothing is written, intake raises AdmissionRefused
    checkpoints: tuple[Checkpoint, ...] = ()  # the connector's state the message sets, stored with it
    # The exchange that brought the message waits for its answer (a WeChat push's response): a bot reply that
    # needs nothing but the FAQ index is stored with the message, as delivered that way (``inline_delivery``),
    # and handed back in ``IntakeResult.reply`` for the connector to write.
    inline_reply: bool = False
    # Channel extras no other part reads (headers, call details), kept on the stored message.
    meta: Mapping[str, Any] = field(default_factory=dict)


class Language(enum.StrEnum):
    ZH = "zh"
    EN = "en"
    UNKNOWN = "unknown"  # no letters to tell (an emoji, a number, an empty call summary)


@dataclass(frozen=True, slots=True, kw_only=True)
class NormalizedMessage:
    """An inbound message after the normalizer: the one form intake and the rules read.

    ``inbound`` stays as the channel gave it (raw payload, channel extras, facts); the fields here are the
    cleaned and canonical values that replace its text, sender and aliases from now on.
    """

    inbound: InboundMessage
    text: str
    sender: Identity
    aliases: tuple[Identity, ...] = ()
    language: Language = Language.UNKNOWN
    # Which conversation the message belongs to, as one string: inbox, canonical address and thread.
    thread_key: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Contact:
    id: str
    name: str | None
    identities: tuple[Identity, ...]
    created_at: datetime
    vip: bool = False
    # e.g. "unsubscribed:wechat", "bounced:email:a@b.com", "ambiguous:phone:+86..."; connectors report them
    # (InboundMessage.contact_flags) and intake sets them.
    flags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # an agent's labels (API)
    version: int = 1  # bumped on every save: a PATCH may name the version it read
    merged_into: str | None = None  # merged into that contact: this record stays only to point there


@dataclass(frozen=True, slots=True, kw_only=True)
class FaqHit:
    entry_id: str
    question: str
    score: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FaqTry:
    """One bot attempt, kept on the ticket so agents see what the bot tried."""

    query: str
    outcome: str
    hits: tuple[FaqHit, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversation:
    """The one mutable record: saved with a version check."""

    id: str
    contact_id: str
    channel: Channel
    inbox: str
    address: Identity
    status: ConversationStatus
    version: int
    created_at: datetime
    updated_at: datetime
    thread: str = ""
    consecutive_misses: int = 0
    ticket_id: str | None = None  # the active ticket, if any
    # The bot's tries are not kept here: each bot reply carries its own in its meta (``core.meta.faq_try_of``),
    # and a new ticket takes the episode's from the transcript it reads anyway. Kept here, they made the one
    # record every message reads and writes back grow to ~5.5 KB for a repeat sender.
    episode: int = 1  # bumped when a resolved conversation starts anew

    def moved_to(self, status: ConversationStatus) -> Conversation:
        if status == self.status:
            return self
        if status not in CONVERSATION_TRANSITIONS[self.status]:
            raise InvalidTransition(f"conversation cannot go from {self.status} to {status}")
        return evolve(self, status=status)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    id: str
    conversation_id: str
    channel: Channel
    inbox: str
    direction: Direction
    author: Author
    kind: MessageKind
    text: str
    created_at: datetime
    external_id: str | None = None
    attachments: tuple[Attachment, ...] = ()
    raw: str = ""
    ticket_id: str | None = None
    episode: int = 1
    meta: Mapping[str, Any] = field(default_factory=dict)
    # Outbound only: what the channel said when we sent it (None until a send was attempted).
    delivery: DeliveryStatus | None = None
    delivery_error: str | None = None


def reply_key(message_id: str) -> str:
    """The external id of the bot's one reply to a message: its unique key stores the reply once, however
    often the message is handled, and lets a channel find the reply again (a WeChat retry answers with it)."""
    return f"reply:{message_id}"


def greeting_key(message_id: str) -> str:
    """The external id of the greeting answering a message (a WeChat welcome on a follow): stored once, and
    found again by a retried push."""
    return f"welcome:{message_id}"


def inline_delivery(in_reply_to: str | None) -> Delivery:
    """How a reply carried back in the response to the message it answers is recorded: sent, in that exchange
    (stored so before the response is written; a channel's retry of the request finds it and carries it)."""
    return Delivery(status=DeliveryStatus.SENT, external_id=f"passive:{in_reply_to}")


def outbound_message(
    on: Conversation | Message,
    *,
    author: Author,
    text: str,
    at: datetime,
    external_id: str | None,
    ticket_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Message:
    """A reply on a conversation (or on the conversation of the message it answers), in its current
    episode and on its active ticket unless told otherwise.

    ``external_id`` is the idempotency key: a reply derived from what it answers is stored once.
    """
    if isinstance(on, Message):
        conversation_id, active_ticket = on.conversation_id, on.ticket_id
    else:
        conversation_id, active_ticket = on.id, on.ticket_id
    return Message(
        id=f"msg_{ordered_hex()}",
        conversation_id=conversation_id,
        channel=on.channel,
        inbox=on.inbox,
        direction=Direction.OUTBOUND,
        author=author,
        kind=MessageKind.TEXT,
        text=text,
        created_at=at,
        external_id=external_id,
        ticket_id=ticket_id or active_ticket,
        episode=on.episode,
        meta=meta or {},
    )


class SlaTarget(enum.StrEnum):
    FIRST_RESPONSE = "first_response"
    NEXT_RESPONSE = "next_response"
    RESOLUTION = "resolution"


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketSla:
    """The ticket's service targets under one policy: when each is due, which were warned about or missed.

    A met or paused target has no due time. ``resolution_left_s``: working seconds the resolution target had
    left when the ticket went ``pending`` (waiting on the customer); the clock restarts from it on resume.
    ``first_response_capped``: the first response is due earlier than the policy says because WeChat's
    48-hour reply window closes first.
    """

    policy: str
    calendar: str = "default"
    first_response_due_at: datetime | None = None
    first_response_warn_at: datetime | None = None
    next_response_due_at: datetime | None = None
    next_response_warn_at: datetime | None = None
    resolution_due_at: datetime | None = None
    resolution_warn_at: datetime | None = None
    first_responded_at: datetime | None = None
    first_response_capped: str | None = None  # "wechat_window" when the reply window closes first
    breached: tuple[SlaTarget, ...] = ()
    warned: tuple[SlaTarget, ...] = ()
    paused: bool = False
    resolution_left_s: float | None = None

    def _clocks(self) -> list[tuple[SlaTarget, datetime, datetime | None]]:
        out = []
        for target, due, warn in (
            (SlaTarget.FIRST_RESPONSE, self.first_response_due_at, self.first_response_warn_at),
            (SlaTarget.NEXT_RESPONSE, self.next_response_due_at, self.next_response_warn_at),
            (SlaTarget.RESOLUTION, self.resolution_due_at, self.resolution_warn_at),
        ):
            if due is not None:
                out.append((target, due, warn))
        return out

    def next_check_at(self) -> datetime | None:
        """When the SLA runner must look at the ticket next: its earliest warning or breach not yet recorded."""
        times: list[datetime] = []
        for target, due, warn in self._clocks():
            if target in self.breached:
                continue
            times.append(due)
            if warn is not None and target not in self.warned:
                times.append(warn)
        return min(times, default=None)

    def earliest_due_at(self) -> datetime | None:
        """The earliest target still running (breached ones too): what tickets are sorted by."""
        return min((due for _, due, _ in self._clocks()), default=None)

    def flag(self) -> str:
        """``breached`` if a target was missed, ``at_risk`` if a running one was warned about, else ``""``."""
        if self.breached:
            return "breached"
        if any(t in self.warned for t, _, _ in self._clocks()):
            return "at_risk"
        return ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Csat:
    """The customer's satisfaction rating of a resolved ticket (1-5)."""

    score: int
    comment: str | None
    at: datetime
    channel: Channel


@dataclass(frozen=True, slots=True, kw_only=True)
class Survey:
    """The one satisfaction survey a ticket gets, sent when it was resolved; a rating counts until ``expires_at``."""

    sent_at: datetime
    expires_at: datetime
    channel: Channel


@dataclass(frozen=True, slots=True, kw_only=True)
class Ticket:
    id: str
    number: str  # human-readable, e.g. HL-000123
    conversation_id: str
    contact_id: str
    subject: str
    status: TicketStatus
    priority: Priority
    channel: Channel
    inbox: str
    created_at: datetime
    updated_at: datetime
    tags: tuple[str, ...] = ()
    assignee: str | None = None
    handoff_reason: HandoffReason | None = None
    faq_tries: tuple[FaqTry, ...] = ()
    version: int = 1
    # Service rules (config ``extract``, ``routing``, ``queues``, ``sla``): what the ticket is, who takes it, by when.
    fields: Mapping[str, str] = field(default_factory=dict)
    category: str | None = None
    language: str | None = None
    queue: str | None = None
    skills: tuple[str, ...] = ()
    routing: tuple[str, ...] = ()  # the routing rules that fired, in order
    sla: TicketSla | None = None
    survey: Survey | None = None
    csat: Csat | None = None
    # Opened by a message whose sender a trusted server could not authenticate (SenderCheck.UNVERIFIED): the
    # contact it is filed under may not have written it, so agents check before acting on it.
    sender_unverified: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundReply:
    """A reply on its way back to the customer through the channel they used."""

    message: Message
    address: Identity
    conversation: Conversation
    # The inbound message this answers (bot replies): a channel may answer it in the same exchange.
    in_reply_to: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    status: DeliveryStatus
    external_id: str | None = None
    error: str | None = None
    # Permanent failures the helpdesk should act on (choose another channel); never retried blindly.
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.error:  # stored and shown to the helpdesk: never a token URL or a password
            object.__setattr__(self, "error", scrub(self.error))


@dataclass(frozen=True, slots=True, kw_only=True)
class QuarantinedItem:
    """Input we could not turn into a message, kept raw with the reason so it can be replayed."""

    id: str
    channel: Channel
    inbox: str
    reason: str
    raw: bytes
    received_at: datetime
    replayed: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", scrub(self.reason))  # the raw input is kept; the reason is shown


class EventType(enum.StrEnum):
    MESSAGE_CREATED = "message.created"
    TICKET_CREATED = "ticket.created"
    TICKET_UPDATED = "ticket.updated"
    CONVERSATION_HANDOFF = "conversation.handoff"
    CONVERSATION_STATUS_CHANGED = "conversation.status_changed"
    MESSAGE_DELIVERY_FAILED = "message.delivery_failed"
    SYSTEM_ALARM = "system.alarm"
    TICKET_SLA_WARNING = "ticket.sla_warning"
    TICKET_SLA_BREACHED = "ticket.sla_breached"
    TICKET_RATED = "ticket.rated"
    TICKET_CALLBACK = "ticket.callback_requested"
    CONTACT_UPDATED = "contact.updated"
    CONTACT_IDENTITY_LINKED = "contact.identity_linked"
    CONTACT_MERGED = "contact.merged"


EVENT_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class DownstreamEvent:
    """A versioned JSON event for helpdesks. ``seq`` is assigned by the store's outbox."""

    type: EventType
    data: Mapping[str, Any]
    occurred_at: datetime
    idempotency_key: str
    ticket_id: str | None = None
    conversation_id: str | None = None
    seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "v": EVENT_VERSION,
            "id": self.seq,
            "type": str(self.type),
            "occurred_at": self.occurred_at.isoformat(),
            "idempotency_key": self.idempotency_key,
            "ticket_id": self.ticket_id,
            "conversation_id": self.conversation_id,
            "data": dict(self.data),
        }
