"""config.yaml → typed, validated config; secrets come from ``${ENV}`` references."""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import os
import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from core.rules_config import (
    QueueConfig,
    Regex,
    RoutingRule,
    RulesLimits,
    SlaConfig,
    check_rule_references,
)
from core.scopes import Scope


class ConfigError(Exception):
    """A config problem, naming the key path and what was expected."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    max_body_bytes: Annotated[int, Field(gt=0)] = 1 << 20
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 10.0
    # How often expired claims (WeChat nonces, reply-quota slots, leases) are swept from the store.
    sweep_interval_s: Annotated[float, Field(gt=0)] = 300.0
    # A reply whose delivery is still unknown this long after its send began (the process died mid-send) is
    # sent again from the outbox, by this instance after a restart or by any other; checked 4 times as often.
    resend_after_s: Annotated[float, Field(ge=1)] = 120.0
    # Processes serving one port (``huiliu serve --workers N``): a supervisor starts them, restarts one that dies,
    # and stops them all on SIGTERM. 1: the server is one process, as before.
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    # The event loop: "auto" runs on uvloop when it is installed (it is a dependency on Linux and macOS),
    # "asyncio" on the standard library's loop; "uvloop" insists on uvloop.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"


class SqliteStoreConfig(_Model):
    backend: Literal["sqlite"] = "sqlite"
    path: str = "huiliu.sqlite3"  # relative paths live under data_dir


class RedisStoreConfig(_Model):
    """The scale-out store: many gateway instances share one Redis (or Redis Cluster slot)."""

    backend: Literal["redis"]
    url: Annotated[str, Field(pattern=r"^(redis|rediss|unix)://")] = "redis://127.0.0.1:6379/0"
    # Every key starts with it, wrapped in a Cluster hash tag: "huiliu:" gives keys like "{huiliu}:conv:cv_1".
    prefix: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:{}-]+$")] = "huiliu:"
    stream_maxlen: Annotated[int, Field(ge=1000)] = 1_000_000  # XADD MAXLEN ~: events kept on the stream
    event_key_ttl_s: Annotated[int, Field(ge=0)] = 90 * 86400  # how long an idempotency key blocks a repeat; 0: forever
    # One bounded pool per instance: a request waits up to pool_timeout_s for a free connection rather than
    # opening one more (redis-py's default pool refused the 101st: 84% of 200 concurrent pushes got a 500).
    max_connections: Annotated[int, Field(ge=2, le=10_000)] = 50
    pool_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    socket_timeout_s: Annotated[float, Field(gt=0)] = 5.0  # a reply that takes longer means Redis is in trouble
    connect_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    # "aof": an inbound message is acknowledged only once its write reached the append-only file on disk
    # (WAITAOF, Redis 7.2+ with appendonly yes); "none": once Redis has it in memory. See README "Durability".
    durability: Literal["none", "aof"] = "none"
    aof_timeout_ms: Annotated[int, Field(gt=0, le=60_000)] = 1000

    @model_validator(mode="after")
    def _waits_within_the_socket_timeout(self) -> RedisStoreConfig:
        if self.durability == "aof" and self.aof_timeout_ms / 1000 >= self.socket_timeout_s:
            raise ValueError("aof_timeout_ms must be shorter than socket_timeout_s, or the wait looks like an outage")
        return self


def _store_backend(value: Any) -> str:
    """Configs written before Redis existed have no ``backend``: they mean SQLite."""
    if isinstance(value, dict):
        return str(value.get("backend", "sqlite"))
    return str(getattr(value, "backend", "sqlite"))


StoreConfig = Annotated[
    Annotated[SqliteStoreConfig, Tag("sqlite")] | Annotated[RedisStoreConfig, Tag("redis")],
    Discriminator(_store_backend),
]

_EVENT_TYPES = (
    "message.created",
    "ticket.created",
    "ticket.updated",
    "conversation.handoff",
    "conversation.status_changed",
    "message.delivery_failed",
    "system.alarm",
    "ticket.sla_warning",
    "ticket.sla_breached",
    "ticket.rated",
    "ticket.callback_requested",
    "contact.updated",
    "contact.identity_linked",
    "contact.merged",
)


def public_host(host: str) -> bool:
    """False for localhost and for literal addresses that are not globally routable (a name is checked again
    when it resolves, see gateway/downstream/guard.py)."""
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return True
    return address.is_global


class WebhookConfig(_Model):
    """One downstream subscription: signed POSTs of the events it asks for, in order per ticket."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$")]
    # Names the subscription's cursor and dead letters; defaults to a hash of the URL.
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")] | None = None
    events: tuple[str, ...] = ()  # empty: every type
    inboxes: tuple[str, ...] = ()  # empty: every inbox
    # [current, previous]: during a rotation each POST carries a signature for both.
    secrets: Annotated[tuple[Annotated[str, Field(min_length=16)], ...], Field(min_length=1, max_length=2)]
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    max_attempts: Annotated[int, Field(ge=1)] = 15
    backoff_base_s: Annotated[float, Field(gt=0)] = 1.0
    backoff_max_s: Annotated[float, Field(gt=0)] = 600.0
    breaker_threshold: Annotated[int, Field(ge=1)] = 5
    breaker_cooldown_s: Annotated[float, Field(gt=0)] = 30.0
    concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    poll_s: Annotated[float, Field(gt=0)] = 1.0
    # Events carry customers' messages: plain http, and loopback, link-local or private addresses (the cloud
    # metadata service, the admin port next door) are refused unless this subscription allows them.
    allow_http: bool = False
    allow_private: bool = False

    @model_validator(mode="after")
    def _safe_target(self) -> WebhookConfig:
        parts = urlsplit(self.url)
        if parts.scheme == "http" and not self.allow_http:
            raise ValueError("url: plain http is refused (events hold customer data); use https or set allow_http")
        host = (parts.hostname or "").lower()
        if not self.allow_private and not public_host(host):
            raise ValueError(
                f"url: {host} is a loopback, link-local or private address; set allow_private to deliver there"
            )
        return self

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in _EVENT_TYPES:
                raise ValueError(f"unknown event type {name!r}; known: {', '.join(_EVENT_TYPES)}")
        return value

    @property
    def key(self) -> str:
        return self.name or "wh-" + hashlib.sha256(self.url.encode()).hexdigest()[:12]


SAMPLE_TOKEN = "dev-token-change-me"  # the README's and the sample config's token: never good off loopback
_PLAIN_TOKEN_NAME = re.compile(r"^tokens\[\d+\]$")


class ApiToken(_Model):
    """One named bearer token: who it is (the author of what it changes), what it may do, and where."""

    name: Annotated[str, Field(pattern=r"^(?:[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}|tokens\[\d+\])$")]
    token: Annotated[str | None, Field(min_length=8, repr=False)] = None
    # The hex SHA-256 of the token (``huiliu token new`` prints it): the config then holds no secret.
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    scopes: tuple[Scope, ...]
    inboxes: tuple[str, ...] = ()  # empty: every inbox; otherwise only these inboxes' tickets and conversations

    @field_validator("scopes")
    @classmethod
    def _some_scope(cls, value: tuple[Scope, ...]) -> tuple[Scope, ...]:
        if not value:
            raise ValueError(f"name at least one scope: {', '.join(Scope)}")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> ApiToken:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("give exactly one of token and token_sha256")
        return self

    @property
    def plain(self) -> bool:
        """Written as a bare string (the old format): an admin token named after its position."""
        return _PLAIN_TOKEN_NAME.match(self.name) is not None

    @property
    def digest(self) -> bytes:
        if self.token is not None:
            return hashlib.sha256(self.token.encode()).digest()
        assert self.token_sha256 is not None
        return bytes.fromhex(self.token_sha256)

    def weakness(self) -> str | None:
        """Why this token must not guard a server others can reach, if it must not."""
        if self.digest == hashlib.sha256(SAMPLE_TOKEN.encode()).digest():
            return "is the sample token"
        if self.token is not None and len(self.token) < 16:
            return "is shorter than 16 characters"
        return None


class ApiConfig(_Model):
    tokens: tuple[ApiToken, ...] = ()
    # How long the audit log keeps an entry; 0: for ever.
    audit_retention_days: Annotated[float, Field(ge=0)] = 365.0

    @field_validator("tokens", mode="before")
    @classmethod
    def _plain_strings_are_admin(cls, value: Any) -> Any:
        """A bare string is the old format: it keeps working as an ``admin`` token named ``tokens[i]``."""
        if not isinstance(value, (list, tuple)):
            return value
        return [
            {"name": f"tokens[{i}]", "token": item, "scopes": ["admin"]} if isinstance(item, str) else item
            for i, item in enumerate(value)
        ]

    @model_validator(mode="after")
    def _distinct(self) -> ApiConfig:
        names = [t.name for t in self.tokens]
        for i, token in enumerate(self.tokens):
            if names.index(token.name) != i:
                raise ValueError(f"api.tokens[{i}].name: {token.name!r} is used twice")
            if any(other.digest == token.digest for other in self.tokens[:i]):
                raise ValueError(f"api.tokens[{i}]: the same token is given twice")
        return self


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class BusinessHours(_Model):
    timezone: str = "Asia/Shanghai"
    days: tuple[Weekday, ...] = _WEEKDAYS[:5]
    start: time = time(9, 0)
    end: time = time(18, 0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _ordered(self) -> BusinessHours:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def weekday_numbers(self) -> frozenset[int]:
        return frozenset(_WEEKDAYS.index(d) for d in self.days)


_DAY_NAMES = {"mon": "一", "tue": "二", "wed": "三", "thu": "四", "fri": "五", "sat": "六", "sun": "日"}


def business_hours_text(hours: BusinessHours | None) -> str:
    """The configured hours as customers read them, in Chinese and English (no hours: always open)."""
    if hours is None:
        return "全天 24 小时 / 24 hours a day"
    days = "、".join("周" + _DAY_NAMES[str(d)] for d in hours.days)
    span = f"{hours.start:%H:%M}–{hours.end:%H:%M}"
    return f"{days} {span}（{hours.timezone}）/ {', '.join(str(d).title() for d in hours.days)} {span}"


class BotMessages(_Model):
    handoff: str = "正在为您转接人工客服，请稍候。/ Connecting you to a human agent, please wait."
    handoff_off_hours: str = (
        "现在是非工作时间，人工客服上班后会第一时间回复您。/ "
        "Our agents are offline now; they will reply as soon as they are back."
    )
    suggest: str = "您是想问以下问题吗？/ Did you mean:"
    miss: str = (
        "抱歉，我没有理解您的问题，请换个说法，或输入“转人工”。/ Sorry, I didn't get that. Rephrase, or type 'human'."
    )
    welcome: str = ""
    # Added to the handoff message, so every channel's customer learns the number of the ticket just opened.
    ticket_number: str = (
        "您的工单号是 {number}，发送“工单进度”可随时查询。/ Your ticket is {number}; ask 'where is my ticket' any time."
    )
    followup_joined: str = "已将您的消息补充到工单 {number}。/ Added to your ticket {number}."
    # Instead of the handoff, once a customer has opened the inbox's tickets_per_visitor_per_hour.
    ticket_limit: str = "近一小时新建工单过多，请稍后再试。/ Too many new tickets from you this hour; try again later."


class FollowupConfig(_Model):
    """A customer with an active ticket who writes again, on any channel, joins it instead of opening another."""

    # Only a ticket updated within this long is joined; 0: never join (every new matter gets its own ticket).
    window_s: Annotated[float, Field(ge=0)] = 30 * 86400.0


class SurveyConfig(_Model):
    """The satisfaction survey (CSAT) a customer gets once their ticket is resolved."""

    enabled: bool = True
    expires_s: Annotated[float, Field(gt=0)] = 7 * 86400.0  # a rating after this no longer counts
    low_score: Annotated[int, Field(ge=0, le=5)] = 2  # at or below: the ticket reopens for a callback (回访)
    callback_tag: Annotated[str, Field(min_length=1, max_length=64)] = "回访"
    # Where the email survey's one-click links point: this gateway's public URL (no link when unset).
    public_url: Annotated[str, Field(pattern=r"^https?://[^\s]+$")] | None = None
    question: str = (
        "您的问题已解决，请为本次服务打分：回复 1-5（5 为非常满意），或回复 满意 / 一般 / 不满意。/ "
        "Your ticket {number} is resolved. How did we do? Reply 1-5 (5 = very satisfied)."
    )
    thanks: str = "感谢您的评价！/ Thank you for your rating!"
    callback: str = "很抱歉没能让您满意，我们会尽快回访。/ Sorry we fell short; an agent will call you back."


class AutoCloseConfig(_Model):
    """A ``pending`` ticket (waiting on the customer) with no answer: one reminder, then closed."""

    enabled: bool = True
    remind_after_days: Annotated[float, Field(gt=0)] = 2  # business days after it went pending
    after_days: Annotated[float, Field(gt=0)] = 3  # business days after it went pending: closed
    tag: Annotated[str, Field(min_length=1, max_length=64)] = "auto-closed"
    reminder: str = (
        "您的工单 {number} 仍在等待您的回复，{days} 个工作日内未回复将自动关闭。/ "
        "Your ticket {number} is waiting for your reply; it closes after {days} business days without one."
    )

    @model_validator(mode="after")
    def _reminder_first(self) -> AutoCloseConfig:
        if self.remind_after_days >= self.after_days:
            raise ValueError("remind_after_days must be less than after_days")
        return self


_NOTICE_STATUSES = ("new", "open", "pending", "resolved", "closed")

DEFAULT_NOTICES: dict[str, str] = {
    "pending": "您的工单 {number} 需要您补充信息，请直接回复本消息。/ "
    "Your ticket {number} is waiting for details from you; just reply here.",
    "closed": "您的工单 {number} 已关闭。如需帮助，请随时联系我们。/ Your ticket {number} is closed.",
}


class CustomerConfig(_Model):
    """What the customer hears about their tickets after the handoff."""

    followup: FollowupConfig = FollowupConfig()
    survey: SurveyConfig = SurveyConfig()
    autoclose: AutoCloseConfig = AutoCloseConfig()
    # A customer who writes again within this long of their ticket's resolution reopens it (the agent sees the
    # message on it); later, or with 0, the bot takes the message and a new matter gets a new ticket.
    reopen_window_s: Annotated[float, Field(ge=0)] = 0.0
    # A short message on the customer's own channel when an agent moves the ticket to one of these statuses
    # ({number} is the ticket number); a status left out says nothing. Resolved tickets get the survey.
    notices: dict[str, str] = DEFAULT_NOTICES

    @field_validator("notices")
    @classmethod
    def _known_statuses(cls, value: dict[str, str]) -> dict[str, str]:
        for status in value:
            if status not in _NOTICE_STATUSES:
                raise ValueError(f"unknown ticket status {status!r}; known: {', '.join(_NOTICE_STATUSES)}")
        return value


class BotConfig(_Model):
    kb: str = "kb/faq.yaml"
    kb_watch_s: Annotated[float, Field(ge=0)] = 2.0  # how often the KB file is checked for changes; 0: never
    answer_threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    suggest_threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    margin: Annotated[float, Field(ge=0, le=1)] | None = None
    max_suggestions: Annotated[int, Field(ge=1, le=10)] = 3
    max_misses: Annotated[int, Field(ge=1)] = 2
    human_phrases: tuple[str, ...] | None = None
    negative_phrases: tuple[str, ...] | None = None  # complaint wording: hand off at high priority
    vip_handoff: bool = False  # VIP contacts go straight to a human
    business_hours: BusinessHours | None = None
    messages: BotMessages = BotMessages()

    @model_validator(mode="after")
    def _ordered(self) -> BotConfig:
        if (
            self.answer_threshold is not None
            and self.suggest_threshold is not None
            and self.suggest_threshold > self.answer_threshold
        ):
            raise ValueError("suggest_threshold must not exceed answer_threshold")
        return self


class WebchatInbox(_Model):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
    channel: Literal["webchat"]
    path: Annotated[str, Field(pattern=r"^/[a-z0-9/_-]*$")] = "/chat"
    allowed_origins: tuple[str, ...] = ()
    max_frame_bytes: Annotated[int, Field(gt=0, le=1 << 20)] = 8192
    max_text_chars: Annotated[int, Field(gt=0)] = 4000
    heartbeat_s: Annotated[float, Field(gt=0)] = 30.0
    frames_per_minute: Annotated[int, Field(gt=0)] = 120
    # Reverse proxies (addresses or networks) whose X-Forwarded-Proto/-Host say what the browser sees: behind
    # a TLS proxy the same-origin check otherwise compares https://host with http://host and refuses the page.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Abuse limits. Per address: the client's IP (from X-Forwarded-For only when the peer is a trusted proxy).
    # Those kept in the store hold across instances; open sockets are counted by each instance.
    max_sockets: Annotated[int, Field(gt=0)] = 10_000  # open sockets on this instance, all addresses
    sockets_per_address: Annotated[int, Field(gt=0)] = 50  # open sockets on this instance from one address
    connections_per_address_per_minute: Annotated[int, Field(gt=0)] = 120  # new sockets (store)
    new_visitors_per_address_per_hour: Annotated[int, Field(gt=0)] = 60  # hellos without a token (store)
    tickets_per_visitor_per_hour: Annotated[int, Field(gt=0)] = 5  # conversations a visitor opens (store)
    # A session token not used (no hello, no message) for this long is refused: the visitor starts afresh.
    session_idle_s: Annotated[float, Field(gt=0)] = 30 * 86400

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(f"origin {origin!r} must look like scheme://host[:port] with no path, or be '*'")
        return value


_INBOX_NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class WechatInbox(_Model):
    """One WeChat Official Account (公众号). Extended by the WeChat channel."""

    name: Annotated[str, Field(pattern=_INBOX_NAME)]
    channel: Literal["wechat"]
    token: Annotated[str, Field(min_length=3, max_length=32)]
    app_id: Annotated[str, Field(min_length=1)]
    app_secret: Annotated[str, Field(min_length=1)]
    encoding_aes_key: Annotated[str, Field(min_length=43, max_length=43)] | None = None
    mode: Literal["plain", "compatible", "safe"] = "plain"
    api_base: Annotated[str, Field(pattern=r"^https?://[^\s]+$")] = "https://api.weixin.qq.com"
    # Sent as the passive reply to a subscribe event; empty sends nothing.
    welcome: str = ""
    # Menu CLICK EventKey → FAQ entry id: the click is answered like a pick of that entry.
    menu_faq: dict[str, str] = {}
    # WeChat waits 5 s for the POST answer; a bot reply ready within this budget goes back passively,
    # a later one through the customer-service API.
    reply_budget_s: Annotated[float, Field(gt=0, le=4.5)] = 0.8
    # Pushes whose timestamp is further than this from our clock are refused (replay protection).
    timestamp_window_s: Annotated[float, Field(gt=0)] = 300.0
    max_body_bytes: Annotated[int, Field(gt=0, le=1 << 20)] = 64 * 1024
    api_timeout_s: Annotated[float, Field(gt=0)] = 10.0

    @model_validator(mode="after")
    def _key_for_encrypted_modes(self) -> WechatInbox:
        if self.mode != "plain" and self.encoding_aes_key is None:
            raise ValueError(f"mode {self.mode!r} needs encoding_aes_key")
        return self


class ImapConfig(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None  # default: 993 for tls, else 143
    tls: Literal["none", "starttls", "tls"] = "tls"
    ca_file: str | None = None  # PEM CA bundle to verify the server with, instead of the system's
    user: str = ""
    password: str = ""
    folders: tuple[Annotated[str, Field(min_length=1)], ...] = ("INBOX",)
    poll_interval_s: Annotated[float, Field(gt=0)] = 60.0
    idle: bool = True  # use IDLE when the server offers it; polling otherwise
    idle_timeout_s: Annotated[float, Field(gt=0, le=1740)] = 600.0  # re-issue IDLE before servers drop it (29 min)
    mark_seen: bool = False
    move_to: str | None = None  # move processed mail to this folder
    timeout_s: Annotated[float, Field(gt=0)] = 30.0
    backoff_max_s: Annotated[float, Field(gt=0)] = 300.0
    # How long the instance polling a mailbox holds it without renewing (a heartbeat renews it every third;
    # default 15 s): after a crash another instance takes over within it.
    lease_ttl_s: Annotated[float, Field(gt=0)] | None = None

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.tls == "tls" else 143)


class SmtpConfig(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None  # default: 465 for tls, 587 for starttls, else 25
    tls: Literal["none", "starttls", "tls"] = "starttls"
    ca_file: str | None = None  # PEM CA bundle to verify the server with, instead of the system's
    user: str = ""
    password: str = ""
    timeout_s: Annotated[float, Field(gt=0)] = 30.0

    @property
    def effective_port(self) -> int:
        return self.port or {"tls": 465, "starttls": 587, "none": 25}[self.tls]


class EmailInbox(_Model):
    """One mailbox: IMAP in, SMTP out."""

    name: Annotated[str, Field(pattern=_INBOX_NAME)]
    channel: Literal["email"]
    address: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]
    from_name: str = ""
    imap: ImapConfig = ImapConfig()
    smtp: SmtpConfig = SmtpConfig()
    # Our Message-IDs look like <msg_…@message_id_domain>; default: the address's domain.
    message_id_domain: str | None = None
    acknowledge: bool = True
    ack_subject: str = "[{number}] {subject}"
    ack_template: str = (
        "您好，我们已收到您的邮件，工单号 {number}。回复本邮件即可补充信息。\n"
        "Hello, we have received your email as ticket {number}. Reply to this email to add anything.\n"
    )
    ack_min_interval_s: Annotated[float, Field(ge=0)] = 600.0  # at most one acknowledgement per sender per interval
    bot_answer: bool = False  # let the FAQ bot answer when it is sure (TicketRequest.bot_first)
    resolved_reply: Literal["reopen", "new"] = "new"  # a reply to a resolved ticket reopens it or opens a new one
    reply_all: bool = True  # an agent's reply is copied (Cc) to the others on the mail it answers already on the ticket
    # Authentication-Results from these servers (authserv-id, e.g. "mx.example.com") are believed: a sender whose
    # DMARC passes (or DKIM aligns) may join a ticket by its signed subject tag. Your MTA must strip these ids
    # from incoming mail. Empty: no header is believed.
    trusted_authserv_ids: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    # Keys the signature on ticket tags in subjects ([HL-000001-7f3a9c]); use ${ENV}. Unset: a random secret kept
    # in data_dir/email/<inbox>.tag-secret (set it when several instances serve one inbox).
    tag_secret: Annotated[str | None, Field(min_length=16, repr=False)] = None
    max_attachment_bytes: Annotated[int, Field(gt=0)] = 10 << 20
    max_attachments_total_bytes: Annotated[int, Field(gt=0)] = 25 << 20

    @property
    def domain(self) -> str:
        return self.message_id_domain or self.address.rpartition("@")[2]


class PhoneCallerIdRoute(_Model):
    """Outbound calls to ``dest`` (a number, or a pattern such as ``41*``) present ``caller_id``."""

    dest: Annotated[str, Field(min_length=1)]
    caller_id: Annotated[str, Field(min_length=1)]


class PhoneCdrConfig(_Model):
    """How this inbox's call-detail records look, and the folder ``serve`` watches for them."""

    format: Literal["asterisk-csv", "freeswitch-csv", "freeswitch-json"] = "asterisk-csv"
    # Column order for cdr_custom layouts (field names, "-" to ignore); Master.csv and templates need none.
    columns: tuple[str, ...] | None = None
    # FreeSWITCH cdr_csv: a stock template name (example, sql, snom, asterisk, ...) or the template text.
    template: str | None = None
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    extension_max_digits: Annotated[int, Field(ge=0, le=12)] = 6
    watch_folder: str | None = None
    watch_pattern: str = "*"
    watch_poll_s: Annotated[float, Field(gt=0)] = 5.0


class VoicemailFaq(_Model):
    """The bot answers a voicemail whose transcript matches a FAQ on the caller's written channel."""

    enabled: bool = False
    # The caller's conversations on these channels are tried in this order (the first one the bot may use).
    channels: tuple[Literal["wechat", "email", "webchat"], ...] = ("wechat", "email", "webchat")
    # True: resolve the callback ticket the voicemail opened once the answer went out; false: agents close it.
    resolve: bool = False


class PhoneInbox(_Model):
    """One call centre: CTI events in, CDR files imported."""

    name: Annotated[str, Field(pattern=_INBOX_NAME)]
    channel: Literal["phone"]
    cti_enabled: bool = True
    # The CTI webhook accepts a request carrying this token, or one signed with hmac_secret.
    token: Annotated[str, Field(min_length=8)] | None = None
    hmac_secret: Annotated[str, Field(min_length=16)] | None = None
    # "timestamped": the signature covers "<X-Huiliu-Timestamp>." + body and older than hmac_window_s is refused,
    # so a captured request cannot be replayed later; "body": the body alone, for PBXes that cannot send a time.
    hmac_scheme: Literal["timestamped", "body"] = "timestamped"
    hmac_window_s: Annotated[int, Field(gt=0, le=3600)] = 300
    blocked_callers: tuple[str, ...] = ()
    caller_id_routes: tuple[PhoneCallerIdRoute, ...] = ()
    default_caller_id: str | None = None
    default_region: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "CN"
    # Regions a national number may also belong to (e.g. HK, MO): a number valid there but not in
    # default_region is ambiguous, so it is flagged on a contact of its own and never merged.
    other_regions: tuple[Annotated[str, Field(pattern=r"^[A-Z]{2}$")], ...] = ()
    timezone: str = "Asia/Shanghai"  # CDRs carry local times
    # A hangup that arrives before its newCall waits this long for it before the call is logged as is.
    settle_s: Annotated[float, Field(ge=0)] = 30.0
    # How long a call's CTI state (each event, kept once per call) stays in the store after it arrives:
    # longer than any real call plus the late or repeated CTI/CDR events of it, so the store does not grow
    # with every call ever taken. An event arriving after that is treated as the first of its kind.
    call_state_ttl_s: Annotated[float, Field(gt=0)] = 7 * 86400.0
    max_body_bytes: Annotated[int, Field(gt=0, le=1 << 20)] = 64 * 1024
    # Agent names (the answer event's user) that mean the call went to voicemail.
    voicemail_users: tuple[str, ...] = ("voicemail",)
    voicemail_faq: VoicemailFaq = VoicemailFaq()
    cdr: PhoneCdrConfig = PhoneCdrConfig()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return BusinessHours._known_zone(value)

    @model_validator(mode="after")
    def _authenticated(self) -> PhoneInbox:
        if self.cti_enabled and self.token is None and self.hmac_secret is None:
            raise ValueError("the CTI webhook needs token or hmac_secret (or set cti_enabled: false)")
        if self.call_state_ttl_s <= self.settle_s:  # a hangup waiting for its newCall would lose its state
            raise ValueError("call_state_ttl_s must be longer than settle_s")
        return self


InboxConfig = WebchatInbox | WechatInbox | EmailInbox | PhoneInbox


class AlarmsConfig(_Model):
    """When a health alarm fires (``/readyz``, ``huiliu_alarm`` and a ``system.alarm`` event)."""

    check_interval_s: Annotated[float, Field(gt=0)] = 60.0
    mail_stale_s: Annotated[float, Field(gt=0)] = 900.0  # a mailbox with no successful fetch for this long
    dead_letter_window_s: Annotated[float, Field(gt=0)] = 900.0  # new dead letters within this window
    quarantine_window_s: Annotated[float, Field(gt=0)] = 3600.0
    quarantine_growth: Annotated[int, Field(ge=1)] = 5  # this many newly quarantined items within the window
    renotify_s: Annotated[float, Field(gt=0)] = 3600.0  # a firing alarm's event is repeated this often


class OpsConfig(_Model):
    """The operator's view: metrics, alarms and the admin dashboard."""

    metrics: bool = True
    # Also serve /metrics without a token on this loopback port (for a local Prometheus agent); None: off.
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    metrics_host: Literal["127.0.0.1", "::1", "localhost"] = "127.0.0.1"
    alarms: AlarmsConfig = AlarmsConfig()


class Config(_Model):
    data_dir: str = "data"
    server: ServerConfig = ServerConfig()
    store: StoreConfig = SqliteStoreConfig()
    api: ApiConfig = ApiConfig()
    bot: BotConfig = BotConfig()
    customer: CustomerConfig = CustomerConfig()
    inboxes: tuple[Annotated[InboxConfig, Field(discriminator="channel")], ...] = ()
    webhooks: tuple[WebhookConfig, ...] = ()
    # Operator rules applied at intake (see README "Service rules"): fields, routing and assignment, SLA.
    extract: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")], Regex] = {}
    routing: tuple[RoutingRule, ...] = ()
    queues: tuple[QueueConfig, ...] = ()
    sla: SlaConfig = SlaConfig()
    rules: RulesLimits = RulesLimits()
    ops: OpsConfig = OpsConfig()
    base_dir: Path = Path(".")  # the config file's folder: relative paths resolve against it

    @model_validator(mode="after")
    def _unique_inboxes(self) -> Config:
        seen: set[str] = set()
        for inbox in self.inboxes:
            if inbox.name in seen:
                raise ValueError(f"inbox name {inbox.name!r} is used twice")
            seen.add(inbox.name)
        paths = [i.path.rstrip("/") for i in self.inboxes if isinstance(i, WebchatInbox)]
        if len(paths) != len(set(paths)):
            raise ValueError("two web chat inboxes share one path")
        return self

    @model_validator(mode="after")
    def _token_inboxes_exist(self) -> Config:
        known = {i.name for i in self.inboxes}
        for i, token in enumerate(self.api.tokens):
            for j, inbox in enumerate(token.inboxes):
                if inbox not in known:
                    names = ", ".join(sorted(known)) or "(none)"
                    raise ValueError(f"api.tokens[{i}].inboxes[{j}]: unknown inbox {inbox!r}; known: {names}")
        return self

    @model_validator(mode="after")
    def _unique_webhooks(self) -> Config:
        keys = [w.key for w in self.webhooks]
        if len(keys) != len(set(keys)):
            raise ValueError("two webhooks share one name (or one URL without names)")
        return self

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p

    @property
    def data_path(self) -> Path:
        return self.resolve(self.data_dir)

    def inbox(self, name: str) -> InboxConfig | None:
        return next((i for i in self.inboxes if i.name == name), None)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _expand_env(node: Any, path: str, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k), env) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {name} is not set (and no ${{{name}:-default}} given)")

        return _ENV_REF.sub(sub, node)
    return node


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    """The config sections a field may hold: through Optional, unions, tuples and Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _model_classes(arg)]


def _literals(model: type[BaseModel]) -> set[str]:
    """The tag values a section answers to (``channel: webchat``, ``backend: redis``)."""
    return {
        str(v)
        for f in model.model_fields.values()
        if get_origin(f.annotation) is Literal
        for v in get_args(f.annotation)
    }


def _walk(loc: tuple[Any, ...]) -> tuple[str, list[type[BaseModel]]]:
    """The key path as written in config.yaml (pydantic's union tags dropped) and the sections it ends in."""
    path = ""
    sections: list[type[BaseModel]] = [Config]
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        part = str(part)
        if part.startswith("function-"):
            continue
        fields = [m.model_fields[part] for m in sections if part in m.model_fields]
        tagged = [m for m in sections if part in _literals(m)]
        if not fields and tagged:
            sections = tagged  # a discriminated union's tag, not a key
            continue
        path += f".{part}" if path else part
        sections = [m for f in fields for m in _model_classes(f.annotation)]
    return path, sections


# A bad value under these keys is never echoed: config errors end up in logs.
_SECRET_KEYS = frozenset(
    {"token", "token_sha256", "tokens", "secrets", "password", "app_secret", "hmac_secret", "tag_secret"}
)


def _describe(err: dict[str, Any]) -> str:
    loc = _walk(tuple(err["loc"]))[0]
    got = err.get("input")
    secret = any(str(part) in _SECRET_KEYS for part in err["loc"])
    shown = "" if isinstance(got, (dict, list)) or secret else f" (got {got!r})"
    if err["type"] == "extra_forbidden" and err["loc"]:
        key = str(err["loc"][-1])
        parent = loc.rsplit(".", 1)[0] if "." in loc else ""
        parent_sections = _walk(tuple(err["loc"][:-1]))[1]
        known = sorted({name for m in parent_sections for name in m.model_fields if name != "base_dir"})
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = (
            f"did you mean `{close[0]}`?"
            if close
            else f"known keys{' of ' + parent if parent else ''}: {', '.join(known)}"
        )
        return f"{loc}: unknown key; {hint}"
    return f"{loc or '<root>'}: {err['msg']}{shown}"


def parse_config(data: Any, *, base_dir: Path = Path("."), env: dict[str, str] | None = None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("<root>: expected a mapping of settings")
    expanded = _expand_env(data, "", dict(os.environ) if env is None else env)
    try:
        config = Config.model_validate({**expanded, "base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError("invalid config:\n  " + "\n  ".join(_describe(dict(e)) for e in exc.errors())) from None
    problems = check_rule_references(config.routing, config.queues, config.sla)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return config


def load_config(path: Path, env: dict[str, str] | None = None) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}{_yaml_where(exc)}: not valid YAML: {_yaml_problem(exc)}") from None
    try:
        return parse_config(data, base_dir=path.resolve().parent, env=env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's own words without its copy of the text and its ``in "<unicode string>"`` marks."""
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        context_mark = exc.context_mark
        problem_mark = exc.problem_mark
        if exc.context and context_mark and problem_mark and context_mark.line != problem_mark.line:
            parts[0] += f" (line {context_mark.line + 1})"
        return ", ".join(parts) or "cannot be parsed"
    return str(exc)
