"""The Message.meta keys that one part writes and another reads, behind typed writers and readers.

The stored JSON keeps its shape (the REST API and the event stream show ``meta``, and messages stored by
earlier versions must still be handled), but no part reads these keys by string any more: intake writes
``IntakeFacts`` and reads them back when it (re)handles a stored message; the bot's reply carries its
suggestions, which live channels render. Everything else in ``meta`` is a channel's own extras.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.codec import from_jsonable, to_jsonable
from core.model import FaqTry, InboundMessage, Language, Message, SenderCheck, TicketRequest, VoicemailRequest

_PICKED_FAQ = "picked_faq"
_SUBJECT = "subject"
_BOT = "bot"
_TICKET_REQUEST = "ticket_request"
_VOICEMAIL = "voicemail_faq"
_TRANSCRIPT = "transcript"
_SUGGESTIONS = "suggestions"
_LANGUAGE = "language"
_SURVEY_REPLY = "survey_reply"
_SENDER_CHECK = "sender_check"
_FAQ_TRY = "faq_try"


@dataclass(frozen=True, slots=True, kw_only=True)
class IntakeFacts:
    """What intake needs again when it (re)handles a stored inbound message."""

    picked_faq: str | None = None
    subject: str | None = None
    bot: bool = True
    ticket: TicketRequest | None = None
    voicemail: VoicemailRequest | None = None
    # Intake's own finding, kept for a re-handling: the message rates its ticket's survey (gateway/survey.py).
    survey_reply: Mapping[str, Any] | None = None
    sender_check: SenderCheck = SenderCheck.CHANNEL


def survey_reply_meta(reply: Mapping[str, Any] | None) -> dict[str, Any]:
    return {_SURVEY_REPLY: dict(reply)} if reply else {}


def intake_meta(inbound: InboundMessage, language: Language = Language.UNKNOWN) -> dict[str, Any]:
    """The stored message's meta: the channel's extras plus the facts intake reads back (and the language the
    normalizer found, which the service rules route on)."""
    meta: dict[str, Any] = dict(inbound.meta)
    if language is not Language.UNKNOWN:
        meta[_LANGUAGE] = str(language)
    if inbound.picked_faq:
        meta[_PICKED_FAQ] = inbound.picked_faq
    if inbound.sender_check is not SenderCheck.CHANNEL:  # stored (and in message.created) only when it says more
        meta[_SENDER_CHECK] = str(inbound.sender_check)
    if inbound.subject:
        meta[_SUBJECT] = inbound.subject
    if not inbound.bot:
        meta[_BOT] = False
    if inbound.ticket is not None:
        meta[_TICKET_REQUEST] = to_jsonable(inbound.ticket)
    if inbound.voicemail is not None:
        meta[_VOICEMAIL] = {"channels": list(inbound.voicemail.channels), "resolve": inbound.voicemail.resolve}
        meta.setdefault(_TRANSCRIPT, inbound.voicemail.transcript)
    return meta


def message_language(message: Message) -> str | None:
    """``zh`` or ``en`` as the normalizer found it; None when it could not tell or the message predates it."""
    value = message.meta.get(_LANGUAGE)
    return value if value in (Language.ZH, Language.EN) else None


def intake_facts(message: Message) -> IntakeFacts:
    meta = message.meta
    picked = meta.get(_PICKED_FAQ)
    subject = meta.get(_SUBJECT)
    raw_ticket = meta.get(_TICKET_REQUEST)
    return IntakeFacts(
        picked_faq=str(picked) if picked else None,
        subject=str(subject) if subject else None,
        bot=bool(meta.get(_BOT, True)),
        ticket=from_jsonable(TicketRequest, raw_ticket) if isinstance(raw_ticket, dict) else None,
        voicemail=_voicemail(meta),
        survey_reply=meta[_SURVEY_REPLY] if isinstance(meta.get(_SURVEY_REPLY), dict) else None,
        sender_check=_sender_check(meta.get(_SENDER_CHECK)),
    )


def sender_check_of(message: Message) -> SenderCheck:
    """``intake_facts(message).sender_check`` alone (a new ticket's one fact: the others decode a ticket request)."""
    return _sender_check(message.meta.get(_SENDER_CHECK))


def _sender_check(value: object) -> SenderCheck:
    try:
        return SenderCheck(str(value)) if value is not None else SenderCheck.CHANNEL
    except ValueError:
        return SenderCheck.UNVERIFIED  # a value this version does not know: vouch for nothing


def _voicemail(meta: Mapping[str, Any]) -> VoicemailRequest | None:
    wanted = meta.get(_VOICEMAIL)
    if not isinstance(wanted, dict):
        return None
    return VoicemailRequest(
        transcript=str(meta.get(_TRANSCRIPT) or ""),
        channels=tuple(str(c) for c in wanted["channels"]),
        resolve=bool(wanted.get("resolve")),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Suggestion:
    """One "did you mean" entry of a bot reply: a live channel shows the question, a pick sends the id."""

    faq_id: str
    question: str


def suggestions_json(suggestions: Sequence[Suggestion]) -> list[dict[str, str]]:
    """As a live channel's frame and the stored meta carry them."""
    return [{"faq_id": s.faq_id, "question": s.question} for s in suggestions]


def suggestions_meta(suggestions: Sequence[Suggestion]) -> dict[str, Any]:
    """The bot reply's meta entry for its suggestions."""
    return {_SUGGESTIONS: suggestions_json(suggestions)}


def suggestions_of(message: Message) -> tuple[Suggestion, ...]:
    raw = message.meta.get(_SUGGESTIONS)
    if not isinstance(raw, list):
        return ()
    return tuple(
        Suggestion(faq_id=str(s["faq_id"]), question=str(s["question"]))
        for s in raw
        if isinstance(s, dict) and "faq_id" in s and "question" in s
    )


def faq_try_meta(attempt: FaqTry) -> dict[str, Any]:
    """The bot reply's meta entry for the try it answers with: the transcript is where a ticket finds the
    bot's tries (``faq_tries_of``), written once with the reply instead of rewritten with every message."""
    return {_FAQ_TRY: to_jsonable(attempt)}


def faq_try_of(message: Message) -> FaqTry | None:
    raw = message.meta.get(_FAQ_TRY)
    return from_jsonable(FaqTry, raw) if isinstance(raw, dict) else None


def faq_tries_of(transcript: Sequence[Message]) -> tuple[FaqTry, ...]:
    """The bot's tries in ``transcript`` (an episode's messages), oldest first."""
    return tuple(found for m in transcript if (found := faq_try_of(m)) is not None)
