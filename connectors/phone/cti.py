"""Zammad's generic CTI API as pure functions: parse an event, answer a newCall, merge a call's events."""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email import errors, policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from connectors.phone.call import CallRecord, Disposition, durations
from normalizer.phone import clean, to_e164

MAX_FIELD_CHARS = 2000


class CtiError(ValueError):
    """A CTI request we cannot accept; the message names the field."""


class EventType(enum.StrEnum):
    NEW_CALL = "newCall"
    ANSWER = "answer"
    HANGUP = "hangup"


class Cause(enum.StrEnum):
    NORMAL_CLEARING = "normalClearing"
    BUSY = "busy"
    CANCEL = "cancel"
    NO_ANSWER = "noAnswer"
    CONGESTION = "congestion"
    NOT_FOUND = "notFound"
    FORWARDED = "forwarded"


_CAUSE_DISPOSITION: dict[Cause, Disposition] = {
    Cause.BUSY: Disposition.BUSY,
    Cause.CANCEL: Disposition.CANCEL,
    Cause.NO_ANSWER: Disposition.NO_ANSWER,
    Cause.CONGESTION: Disposition.CONGESTION,
    Cause.NOT_FOUND: Disposition.NOT_FOUND,
    Cause.FORWARDED: Disposition.FORWARDED,
}

# Field spellings seen in the wild: Zammad's docs say callId, its own tests post call_id.
_ALIASES = {
    "callId": "call_id",
    "callid": "call_id",
    "answeringNumber": "answering_number",
    "answering_number": "answering_number",
    "recordingUrl": "recording_url",
    "recording_url": "recording_url",
    "voicemailTranscript": "transcript",
    "voicemail_transcript": "transcript",
    "transcript": "transcript",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CtiEvent:
    event: EventType
    call_id: str
    direction: str | None = None  # "in" | "out"; answer and hangup may leave it out
    from_: str = ""
    to: str = ""
    users: tuple[str, ...] = ()
    user_text: str = ""  # the user field as sent ("user 1,user 2" stays one string, as Zammad shows it)
    queue: str | None = None
    answering_number: str | None = None
    cause: Cause | None = None
    cause_raw: str = ""
    recording_url: str | None = None
    transcript: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The parsed fields, to keep in the store until the call is complete."""
        return {
            "event": str(self.event),
            "call_id": self.call_id,
            "direction": self.direction,
            "from": self.from_,
            "to": self.to,
            "user": list(self.users),
            "queue": self.queue,
            "answering_number": self.answering_number,
            "cause": self.cause_raw or None,
            "recording_url": self.recording_url,
            "transcript": self.transcript,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CtiEvent:
        return parse_params(data)


def _text(params: Mapping[str, Any], key: str) -> str:
    value = params.get(key)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        raise CtiError(f"{key}: expected a single value")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise CtiError(f"{key}: expected text")
    text = str(value).strip()
    if len(text) > MAX_FIELD_CHARS:
        raise CtiError(f"{key}: longer than {MAX_FIELD_CHARS} characters")
    return text


def multipart_pairs(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """The fields of a ``multipart/form-data`` body already read in full (and capped) by the caller.

    A body cut short (no closing boundary) is refused, not read as whatever fields came before the cut.
    """
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not message.is_multipart() or not message.get_boundary():
        raise CtiError("body: multipart without a boundary")
    broken = (
        errors.StartBoundaryNotFoundDefect,
        errors.CloseBoundaryNotFoundDefect,
        errors.MultipartInvariantViolationDefect,
    )
    if any(isinstance(defect, broken) for defect in message.defects):
        raise CtiError("body: truncated or malformed multipart")
    pairs: list[tuple[str, str]] = []
    for part in message.iter_parts():
        if not isinstance(part, EmailMessage):
            continue
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            raise CtiError("body: a multipart field without a name")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        try:
            pairs.append((name, data.decode(part.get_content_charset() or "utf-8")))
        except (UnicodeDecodeError, LookupError):
            raise CtiError(f"{name}: not UTF-8") from None
    return pairs


def form_params(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Form fields to the JSON shape: ``user[]`` repeated becomes a list, as Rails reads it."""
    params: dict[str, Any] = {}
    for key, value in pairs:
        if key.endswith("[]"):
            params.setdefault(key[:-2], [])
            if isinstance(params[key[:-2]], list):
                params[key[:-2]].append(value)
        else:
            params[key] = value
    return params


def parse_params(params: Mapping[str, Any]) -> CtiEvent:
    """One CTI request body (JSON object or form fields) → a CtiEvent, or CtiError naming the field."""
    canon: dict[str, Any] = {}
    for key, value in params.items():
        canon[_ALIASES.get(key, key)] = value
    event_text = _text(canon, "event")
    if not event_text:
        raise CtiError("event: missing (newCall, answer or hangup)")
    try:
        event = EventType(event_text)
    except ValueError:
        raise CtiError(f"event: {event_text!r} is not newCall, answer or hangup") from None
    call_id = _text(canon, "call_id")
    if not call_id:
        raise CtiError("callId: missing")
    direction = _text(canon, "direction") or None
    if direction not in (None, "in", "out"):
        raise CtiError(f"direction: {direction!r} is not in or out")
    if event is EventType.NEW_CALL and direction is None:
        raise CtiError("direction: missing (in or out)")
    raw_user = canon.get("user")
    if isinstance(raw_user, (list, tuple)):
        users = tuple(str(u).strip() for u in raw_user if str(u).strip())
        user_text = ", ".join(users)
    else:
        user_text = _text(canon, "user")
        users = (user_text,) if user_text else ()
    cause_raw = _text(canon, "cause")
    cause: Cause | None = None
    if cause_raw:
        try:
            cause = Cause(cause_raw)
        except ValueError:
            cause = None  # an unknown cause is kept as text: a new PBX word must not lose the call
    return CtiEvent(
        event=event,
        call_id=call_id,
        direction=direction,
        from_=_text(canon, "from"),
        to=_text(canon, "to"),
        users=users,
        user_text=user_text,
        queue=_text(canon, "queue") or None,
        answering_number=_text(canon, "answering_number") or None,
        cause=cause,
        cause_raw=cause_raw,
        recording_url=_text(canon, "recording_url") or None,
        transcript=_text(canon, "transcript") or None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerIdRoute:
    dest: str  # a number or a pattern with * ("41*")
    caller_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CtiPolicy:
    """What the inbox tells the PBX on a newCall: reject blocked callers, present a caller id outbound."""

    region: str = "CN"
    blocked: tuple[str, ...] = ()
    routes: tuple[CallerIdRoute, ...] = ()
    default_caller_id: str | None = None

    def is_blocked(self, number: str) -> bool:
        raw = clean(number)
        e164 = to_e164(number, self.region)
        for entry in self.blocked:
            if clean(entry) == raw or (e164 is not None and to_e164(entry, self.region) == e164):
                return True
        return False

    def caller_id_for(self, dest: str) -> str | None:
        raw = clean(dest).lstrip("+")
        for route in self.routes:
            if fnmatch.fnmatchcase(raw, clean(route.dest).lstrip("+")):
                return route.caller_id
        return self.default_caller_id


def respond(event: CtiEvent, policy: CtiPolicy) -> dict[str, str]:
    """The body Zammad's generic CTI answers with."""
    if event.event is not EventType.NEW_CALL:
        return {}
    if event.direction == "in" and policy.is_blocked(event.from_):
        return {"action": "reject", "reason": "busy"}
    if event.direction == "out":
        caller_id = policy.caller_id_for(event.to)
        if caller_id:
            return {"action": "dial", "number": event.to, "caller_id": caller_id}
    return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Seen:
    """One event of a call as it arrived: when, and whether we told the PBX to reject the caller."""

    event: CtiEvent
    at: datetime
    blocked: bool = False


def call_record(
    new_call: Seen | None,
    answer: Seen | None,
    hangup: Seen,
    *,
    voicemail_users: frozenset[str] = frozenset({"voicemail"}),
    caller_id: str | None = None,
) -> CallRecord:
    """The finished call from its events, whatever order they came in. Each later event fills only
    what the earlier ones left open, so a hangup that arrived first still gets its newCall's details.

    Durations need the newCall's time; when it is missing they are left unknown, never invented.
    """
    events = [s for s in (new_call, answer, hangup) if s is not None]
    first = next((s.event for s in events if s.event.direction), hangup.event)
    direction = first.direction or "in"

    def pick(attr: str) -> str:
        for seen in events:
            value = getattr(seen.event, attr)
            if value:
                return str(value)
        return ""

    caller = pick("from_")
    callee = pick("to")
    if direction == "out" and caller_id:
        caller = caller_id  # the number the customer saw, as Zammad logs it
    answered_by = (answer.event.user_text if answer else "") or (hangup.event.answering_number or "")
    voicemail = answered_by.lower() in voicemail_users
    blocked = bool(new_call and new_call.blocked)
    if blocked:
        disposition = Disposition.BLOCKED
    elif voicemail:
        disposition = Disposition.VOICEMAIL
    elif answer is not None:
        disposition = Disposition.FORWARDED if hangup.event.cause is Cause.FORWARDED else Disposition.ANSWERED
    elif (cause := hangup.event.cause) is not None and cause in _CAUSE_DISPOSITION:
        disposition = _CAUSE_DISPOSITION[cause]
    elif cause is Cause.NORMAL_CLEARING and hangup.event.answering_number:
        disposition = Disposition.ANSWERED  # the answer event was lost, the hangup still names who took it
    else:
        disposition = Disposition.NO_ANSWER  # normalClearing without anyone answering: nobody took it
    users = new_call.event.user_text if new_call else ""
    agent = None if voicemail else (answered_by or users or None)
    queue = pick("queue") or (callee if direction == "in" else caller) or None
    started = new_call.at if new_call else None
    answered = answer.at if answer else None
    wait, talk = durations(started, answered, hangup.at)
    return CallRecord(
        external_id=hangup.event.call_id,
        direction=direction,
        caller=caller,
        callee=callee,
        disposition=disposition,
        cause=hangup.event.cause_raw,
        source="cti",
        queue=queue,
        agent=agent,
        started_at=started,
        answered_at=answered,
        ended_at=hangup.at,
        wait_s=wait,
        talk_s=talk,
        recording_url=pick("recording_url") or None,
        transcript=pick("transcript") or None,
        raw=[{"at": s.at.isoformat(), **s.event.to_json()} for s in events],
    )
