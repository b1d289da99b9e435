"""One call, however it reached us (CTI events or a CDR row), and the call message it becomes."""

from __future__ import annotations

import enum
import json
import json.encoder
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.config import VoicemailFaq
from core.model import (
    Channel,
    ContactFlag,
    HandoffReason,
    Identity,
    IdentityKind,
    InboundMessage,
    MessageKind,
    TicketRequest,
    VoicemailRequest,
)
from normalizer.phone import display, read_number


class Disposition(enum.StrEnum):
    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    CANCEL = "cancel"  # the caller gave up before anyone picked up (abandoned)
    FAILED = "failed"
    CONGESTION = "congestion"
    NOT_FOUND = "not_found"
    FORWARDED = "forwarded"
    VOICEMAIL = "voicemail"
    BLOCKED = "blocked"  # we told the PBX to reject a blocked caller


# Inbound calls with these outcomes reached nobody: the customer waits for a callback.
MISSED = frozenset(
    {
        Disposition.NO_ANSWER,
        Disposition.BUSY,
        Disposition.CANCEL,
        Disposition.FAILED,
        Disposition.CONGESTION,
        Disposition.NOT_FOUND,
        Disposition.VOICEMAIL,
    }
)

_LABELS: dict[Disposition, str] = {
    Disposition.ANSWERED: "已接来电 / Answered call",
    Disposition.NO_ANSWER: "未接来电 / Missed call",
    Disposition.BUSY: "未接来电（忙线）/ Missed call (busy)",
    Disposition.CANCEL: "未接来电（来电者挂断）/ Abandoned call",
    Disposition.FAILED: "未接来电（呼叫失败）/ Missed call (failed)",
    Disposition.CONGESTION: "未接来电（线路拥塞）/ Missed call (congestion)",
    Disposition.NOT_FOUND: "未接来电（无人在线）/ Missed call (nobody reachable)",
    Disposition.FORWARDED: "已转接来电 / Forwarded call",
    Disposition.VOICEMAIL: "语音留言 / Voicemail",
    Disposition.BLOCKED: "已拦截来电 / Blocked call",
}
_OUT_LABELS: dict[Disposition, str] = {
    Disposition.ANSWERED: "已接通外呼 / Outbound call",
    Disposition.FORWARDED: "已转接外呼 / Outbound call, forwarded",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """What we know of one finished call. Times are aware datetimes; durations are seconds."""

    external_id: str  # CTI callId, Asterisk uniqueid/linkedid, FreeSWITCH uuid: the dedupe key
    direction: str  # "in" (the customer called us) or "out" (an agent called the customer)
    caller: str  # as the PBX gave it
    callee: str
    disposition: Disposition
    cause: str = ""  # the PBX's own word: normalClearing, NO ANSWER, USER_BUSY, ...
    source: str = "cti"
    caller_name: str | None = None
    queue: str | None = None
    agent: str | None = None
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    wait_s: float | None = None
    talk_s: float | None = None
    recording_url: str | None = None
    transcript: str | None = None
    linked_id: str | None = None
    raw: Any = None  # the CTI events or the CDR row, kept for audit
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def customer_number(self) -> str:
        return self.caller if self.direction == "in" else self.callee

    @property
    def missed(self) -> bool:
        return self.direction == "in" and self.disposition in MISSED


def durations(
    started: datetime | None, answered: datetime | None, ended: datetime | None
) -> tuple[float | None, float | None]:
    """(wait, talk) in seconds; None where a time is missing or the times contradict each other."""
    wait_until = answered or ended
    wait = (wait_until - started).total_seconds() if started and wait_until else None
    talk = (ended - answered).total_seconds() if answered and ended else None
    return (
        round(wait, 3) if wait is not None and wait >= 0 else None,
        round(talk, 3) if talk is not None and talk >= 0 else None,
    )


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 or value == int(value) else f"{value:.1f} s"


def summary(record: CallRecord, shown_number: str) -> str:
    """The line agents read in the transcript: ``未接来电 / Missed call from +86 …, queue sales, waited 32 s``."""
    if record.direction == "in":
        head = f"{_LABELS[record.disposition]} from {shown_number}"
    else:
        label = _OUT_LABELS.get(record.disposition, f"未接通外呼 / Unanswered outbound call ({record.disposition})")
        head = f"{label} to {shown_number}"
    parts = [head]
    if record.queue:
        parts.append(f"queue {record.queue}")
    if record.agent:
        parts.append(f"agent {record.agent}")
    if record.wait_s is not None and record.disposition is not Disposition.ANSWERED:
        parts.append(f"waited {_seconds(record.wait_s)}")
    if record.talk_s is not None and record.disposition is Disposition.ANSWERED:
        parts.append(f"talked {_seconds(record.talk_s)}")
    text = ", ".join(parts)
    if record.transcript:
        text += f"\n留言 / Message: {record.transcript}"
    if record.recording_url:
        text += f"\n录音 / Recording: {record.recording_url}"
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOptions:
    """The inbox's settings that shape the call message."""

    region: str = "CN"
    other_regions: tuple[str, ...] = ()
    voicemail_faq: VoicemailFaq | None = None  # None: the bot never answers a voicemail


def ambiguous_flag(sender: Identity) -> str:
    """The contact flag of a number we could not read with confidence: ``ambiguous:phone:raw:CN:91234567``."""
    return f"ambiguous:{sender}"


def _raw_encoder() -> Callable[[Any], str]:
    """``json.dumps(raw, ensure_ascii=False, default=str)``, with the C encoder built once: ``JSONEncoder.encode``
    builds one for every call (a tenth of ``to_inbound``). No check for circular references: a raw payload is
    parsed text (a CDR row's fields, CTI events), never circular."""
    encoder = json.JSONEncoder(ensure_ascii=False, default=str)
    make = getattr(json.encoder, "c_make_encoder", None)  # not in typeshed: the C accelerator's constructor
    if make is None:  # an interpreter without the C accelerator
        return encoder.encode
    iterencode = make(None, str, json.encoder.encode_basestring, None, ": ", ", ", False, False, True)

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return encoder.encode(value)
        return "".join(iterencode(value, 0))

    return encode


_RAW_JSON = _raw_encoder()


def to_inbound(record: CallRecord, *, inbox: str, options: CallOptions, received_at: datetime) -> InboundMessage:
    """The call as a message of kind ``call`` from the customer's E.164 identity, never for the bot.

    A missed inbound call carries a callback ticket request that escalates an open ticket (a repeat
    caller). A call from a withheld or unparseable number gets a per-call identity: we cannot call back,
    so it is logged but opens no ticket, and it never lumps strangers into one "anonymous" contact.
    A number that is only possibly valid, or valid only in another configured region, is ambiguous: it
    gets an identity of its own (``raw:<region>:<number>``, never an E.164 one, so it is never merged)
    with its candidate E.164 forms in ``meta``, and its contact is flagged (``contact_flags``).
    """
    number = record.customer_number
    reading = read_number(number, options.region, options.other_regions)
    if reading.e164 is not None:
        sender = Identity(IdentityKind.PHONE, reading.e164)
        shown = display(reading.e164)
    elif reading.ambiguous:
        sender = Identity(IdentityKind.PHONE, f"raw:{options.region}:{reading.text}")
        shown = reading.text
    else:
        sender = Identity(IdentityKind.PHONE, f"unknown:{inbox}:{record.external_id}")
        shown = number.strip() or "anonymous"
    meta: dict[str, Any] = {
        "direction": record.direction,
        "from": record.caller,
        "to": record.callee,
        "queue": record.queue,
        "agent": record.agent,
        "wait_s": record.wait_s,
        "talk_s": record.talk_s,
        "disposition": str(record.disposition),
        "cause": record.cause,
        "source": record.source,
        "started_at": record.started_at.isoformat() if record.started_at else None,
        "answered_at": record.answered_at.isoformat() if record.answered_at else None,
        "ended_at": record.ended_at.isoformat() if record.ended_at else None,
    }
    if record.recording_url:
        meta["recording_url"] = record.recording_url
    if record.transcript:
        meta["transcript"] = record.transcript
    if record.linked_id:
        meta["linked_id"] = record.linked_id
    if record.caller_name:
        meta["caller_name"] = record.caller_name
    meta.update(record.extra)
    text = summary(record, shown)
    if reading.ambiguous:
        meta["ambiguous_number"] = reading.text
        meta["number_candidates"] = list(reading.candidates)
        text += "\n号码不确定 / Uncertain number, may be: " + ", ".join(display(c) for c in reading.candidates)
    ticket = None
    answer_voicemail = None
    if record.missed and (reading.e164 is not None or reading.ambiguous):
        voicemail = record.disposition is Disposition.VOICEMAIL
        uncertain = ("ambiguous-number",) if reading.ambiguous else ()
        ticket = TicketRequest(
            reason=HandoffReason.VOICEMAIL if voicemail else HandoffReason.MISSED_CALL,
            subject=("语音留言 / Voicemail from " if voicemail else "未接来电 / Missed call from ") + shown,
            tags=("phone", "voicemail" if voicemail else "missed-call", *uncertain),
            escalate=True,
        )
        if record.transcript and options.voicemail_faq is not None and options.voicemail_faq.enabled:
            # Intake may answer the transcript on the caller's written channel (gateway/voicemail.py).
            answer_voicemail = VoicemailRequest(
                transcript=record.transcript,
                channels=tuple(options.voicemail_faq.channels),
                resolve=options.voicemail_faq.resolve,
            )
    return InboundMessage(
        channel=Channel.PHONE,
        inbox=inbox,
        external_id=record.external_id,
        sender=sender,
        sender_name=record.caller_name if record.direction == "in" else None,
        text=text,
        kind=MessageKind.CALL,
        sent_at=record.started_at or record.ended_at,
        received_at=received_at,
        raw=_RAW_JSON(record.raw),
        ticket=ticket,
        bot=False,
        contact_flags=(ContactFlag(identity=sender, flag=ambiguous_flag(sender)),) if reading.ambiguous else (),
        voicemail=answer_voicemail,
        meta=meta,
    )
