"""The satisfaction survey: sent once when a ticket is resolved, rated by a reply, a widget button or an email link;
a low score reopens the ticket for a callback (回访)."""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.survey import BUTTONS, OutOfRange, read_rating
from core import events
from core.clock import Clock
from core.codec import to_jsonable
from core.config import SurveyConfig
from core.model import (
    Author,
    Channel,
    Conversation,
    ConversationStatus,
    Csat,
    DownstreamEvent,
    EventType,
    Survey,
    Ticket,
    TicketStatus,
    outbound_message,
)
from core.store import Store, VersionConflict
from gateway.outbound import Outbound

_MAX_RETRIES = 8
_KEY_SECRET = "survey-link-key"

# Reopening for a callback goes through the ticket service (conversation, events): given as a callable, since
# the ticket service itself calls the survey on resolve.
Reopen = Callable[[Ticket, str], Awaitable[Ticket]]


class RateOutcome(enum.StrEnum):
    RECORDED = "recorded"
    CALLBACK = "callback"  # recorded, and low: the ticket reopened for a callback
    ALREADY = "already"  # one survey per ticket: the first rating stands
    EXPIRED = "expired"
    NO_SURVEY = "no_survey"


def rated_event(ticket: Ticket, csat: Csat) -> DownstreamEvent:
    return DownstreamEvent(
        type=EventType.TICKET_RATED,
        data={"ticket": events.ticket_summary(ticket), "csat": to_jsonable(csat)},
        occurred_at=csat.at,
        idempotency_key=f"ticket.rated:{ticket.id}",
        ticket_id=ticket.id,
        conversation_id=ticket.conversation_id,
    )


def callback_event(ticket: Ticket, csat: Csat, tag: str) -> DownstreamEvent:
    return DownstreamEvent(
        type=EventType.TICKET_CALLBACK,
        data={"ticket_id": ticket.id, "ticket_number": ticket.number, "score": csat.score, "tag": tag},
        occurred_at=csat.at,
        idempotency_key=f"ticket.callback_requested:{ticket.id}",
        ticket_id=ticket.id,
        conversation_id=ticket.conversation_id,
    )


class SurveyLinks:
    """Signed one-click links for the email survey: ``<ticket id>.<expiry>.<mac>``, keyed by a secret the store
    keeps (shared by every instance), so a link cannot be forged for another ticket or kept alive past expiry."""

    def __init__(self, store: Store, public_url: str | None) -> None:
        self._store = store
        self._base = public_url.rstrip("/") if public_url else None
        self._key: bytes | None = None

    async def _secret(self) -> bytes:
        if self._key is None:
            now = datetime.now(UTC)
            key = await self._store.get_secret(_KEY_SECRET, now)
            if key is None and await self._store.claim(f"{_KEY_SECRET}:create", 10):
                await self._store.set_secret(_KEY_SECRET, secrets.token_hex(32), None)
            key = key or await self._store.get_secret(_KEY_SECRET, now)
            if key is None:
                raise RuntimeError("no survey link key in the store yet")
            self._key = bytes.fromhex(key)
        return self._key

    async def token(self, ticket_id: str, expires_at: datetime) -> str:
        body = f"{ticket_id}.{int(expires_at.timestamp())}"
        mac = hmac.new(await self._secret(), body.encode(), hashlib.sha256).digest()[:16]
        return f"{body}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

    async def url(self, ticket_id: str, expires_at: datetime) -> str | None:
        if self._base is None:
            return None
        return f"{self._base}/survey/{await self.token(ticket_id, expires_at)}"

    async def verify(self, token: str, now: datetime) -> str | None:
        """The ticket id of a genuine, unexpired token; None otherwise (forged, mangled or expired alike)."""
        ticket_id, _, rest = token.partition(".")
        expiry, _, mac = rest.partition(".")
        if not (ticket_id and expiry.isdigit() and mac and len(token) < 300):
            return None
        body = f"{ticket_id}.{expiry}"
        want = base64.urlsafe_b64encode(
            hmac.new(await self._secret(), body.encode(), hashlib.sha256).digest()[:16]
        ).decode()
        if not hmac.compare_digest(want.rstrip("="), mac):
            return None
        if int(expiry) <= now.timestamp():
            return None
        return ticket_id


class SurveyService:
    def __init__(self, store: Store, outbound: Outbound, clock: Clock, cfg: SurveyConfig, links: SurveyLinks) -> None:
        self._store = store
        self._outbound = outbound
        self._clock = clock
        self._cfg = cfg
        self.links = links
        self._reopen: Reopen | None = None

    def reopening_with(self, reopen: Reopen) -> None:
        self._reopen = reopen

    @property
    def config(self) -> SurveyConfig:
        return self._cfg

    async def on_resolved(self, ticket: Ticket) -> None:
        """Send the ticket's one survey on its own channel (phone has none to answer on)."""
        if not self._cfg.enabled or ticket.survey is not None or ticket.channel is Channel.PHONE:
            return
        for _ in range(_MAX_RETRIES):
            fresh = await self._store.get_ticket(ticket.id)
            if fresh is None or fresh.survey is not None or fresh.status is not TicketStatus.RESOLVED:
                return
            now = self._clock()
            survey = Survey(sent_at=now, expires_at=now + timedelta(seconds=self._cfg.expires_s), channel=fresh.channel)
            marked = dataclasses.replace(fresh, survey=survey, updated_at=now)
            change = {"survey": survey}
            try:
                saved = await self._store.update_ticket(
                    marked, [events.ticket_updated(dataclasses.replace(marked, version=marked.version + 1), change)]
                )
            except VersionConflict:
                continue
            conversation = await self._store.get_conversation(saved.conversation_id)
            if conversation is not None:
                await self._send(saved, conversation, survey)
            return

    async def _send(self, ticket: Ticket, conversation: Conversation, survey: Survey) -> None:
        text = self._cfg.question.format(number=ticket.number)
        meta: dict[str, Any] = {
            "kind": "survey",
            "ticket_number": ticket.number,
            "survey": [{"label": label, "value": label, "score": score} for label, score in BUTTONS],
        }
        if ticket.channel is Channel.EMAIL:
            url = await self.links.url(ticket.id, survey.expires_at)
            if url is not None:
                meta["survey_url"] = url
                text += f"\n\n点击评价 / Rate with one click: {url}"
        message = outbound_message(
            conversation,
            author=Author.SYSTEM,
            text=text,
            at=survey.sent_at,
            external_id=f"survey:{ticket.id}",
            ticket_id=ticket.id,
            meta=meta,
        )
        await self._outbound.store_and_send(message, conversation)

    async def reply_in(self, conversation: Conversation, text: str) -> dict[str, Any] | None:
        """A reply to the open survey of the resolved conversation's ticket: what to record (the conversation
        stays resolved), or None for anything else, which is an ordinary message."""
        if conversation.status is not ConversationStatus.RESOLVED:
            return None
        rating = read_rating(text)
        if rating is None:
            return None
        ticket = await self.pending(conversation.ticket_id)
        if ticket is None:
            return None
        if isinstance(rating, OutOfRange):
            return {"ticket_id": ticket.id, "out_of_range": rating.given}
        return {"ticket_id": ticket.id, "score": rating.score, "comment": rating.comment}

    async def record(self, reply: Mapping[str, Any], channel: Channel) -> str:
        """Record a reply ``reply_in`` found; what to tell the customer."""
        if "out_of_range" in reply:
            return "请回复 1-5 之间的数字，或 满意 / 一般 / 不满意。/ Please reply with a number from 1 to 5."
        outcome = await self.rate(str(reply["ticket_id"]), int(reply["score"]), reply.get("comment"), channel)
        return {
            RateOutcome.RECORDED: self._cfg.thanks,
            RateOutcome.CALLBACK: self._cfg.callback,
            RateOutcome.ALREADY: "您已评价过，感谢！/ You already rated this ticket, thank you!",
        }.get(outcome, "该评价已失效。/ This survey has closed.")

    async def pending(self, ticket_id: str | None) -> Ticket | None:
        """The ticket if it has a survey that still takes a rating."""
        if ticket_id is None:
            return None
        ticket = await self._store.get_ticket(ticket_id)
        if ticket is None or ticket.survey is None or ticket.csat is not None:
            return None
        return ticket if self._clock() < ticket.survey.expires_at else None

    async def rate(self, ticket_id: str, score: int, comment: str | None, channel: Channel) -> RateOutcome:
        """Record the ticket's one rating with ``ticket.rated``; a low one reopens it for a callback (tag, event)."""
        for _ in range(_MAX_RETRIES):
            ticket = await self._store.get_ticket(ticket_id)
            if ticket is None or ticket.survey is None:
                return RateOutcome.NO_SURVEY
            if ticket.csat is not None:
                return RateOutcome.ALREADY
            now = self._clock()
            if now >= ticket.survey.expires_at:
                return RateOutcome.EXPIRED
            csat = Csat(score=score, comment=comment, at=now, channel=channel)
            rated = dataclasses.replace(ticket, csat=csat, updated_at=now)
            saved_as = dataclasses.replace(rated, version=rated.version + 1)
            try:
                saved = await self._store.update_ticket(
                    rated, [rated_event(saved_as, csat), events.ticket_updated(saved_as, {"csat": csat})]
                )
            except VersionConflict:
                continue
            if score > self._cfg.low_score or self._reopen is None:
                return RateOutcome.RECORDED
            reopened = await self._reopen(saved, self._cfg.callback_tag)
            await self._store.append_events([callback_event(reopened, csat, self._cfg.callback_tag)])
            return RateOutcome.CALLBACK
        raise VersionConflict(f"ticket {ticket_id} kept changing")
