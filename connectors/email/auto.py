"""Automatic mail: RFC 3834 and vendor auto-reply headers, out-of-office, DSN bounces (RFC 3464), complaints."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message

# What we put on every mail we send on our own (acknowledgements, bot answers): RFC 3834.
AUTO_SUBMITTED = "auto-replied"


class AutoKind(enum.StrEnum):
    NONE = "none"
    AUTO_REPLY = "auto_reply"  # out of office, vacation, "we got your mail"
    BOUNCE = "bounce"  # a delivery status notification (failed, delayed, or a success report)
    COMPLAINT = "complaint"  # ARF feedback report (marked as spam)
    BULK = "bulk"  # mailing lists and bulk senders: never answered, but a human may want them


@dataclass(frozen=True, slots=True, kw_only=True)
class BounceRecipient:
    recipient: str
    status: str = ""  # DSN code, e.g. 5.1.1
    action: str = ""  # failed, delayed, delivered, relayed, expanded
    diagnostic: str = ""
    hard: bool = False  # permanent: stop mailing this address


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoReport:
    kind: AutoKind = AutoKind.NONE
    reason: str = ""  # which signal decided it, for the transcript
    recipients: tuple[BounceRecipient, ...] = ()
    original_message_id: str | None = None  # the mail of ours this bounce or auto-reply is about

    @property
    def automatic(self) -> bool:
        return self.kind is not AutoKind.NONE

    @property
    def hard(self) -> bool:
        return any(r.hard for r in self.recipients)


_AUTO_SUBJECT = re.compile(
    r"(out of (the )?office|auto(matic)?[ -]?(reply|response|antwort)|autoreply|^auto:|away from|on vacation|"
    r"vacation|abwesenheit|absence|自动回复|自動回覆|自动答复|休假|不在办公室|外出|réponse automatique)",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"(undeliver|undelivered|delivery (status )?notification|delivery fail|failure notice|returned mail|"
    r"mail delivery|delivery has failed|could not be delivered|non[- ]?delivery|nondeliverable|rejected|"
    r"warning: could not send|delivery problem|mail system error|退信|退回|投递失败|系统退信|"
    r"unzustellbar|delivery report|returned to sender|message not delivered|delivery notification)",
    re.IGNORECASE,
)
_BOUNCE_SENDER = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailer|bounce[s]?|mdaemon|mail\.daemon)@", re.I)
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY_CODE = re.compile(r"(?<![\d.])([45]\d\d)(?:[ -]|$)", re.MULTILINE)
_EMAIL = re.compile(r"<?([A-Za-z0-9._%+'=/-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>?")

# Why a mail could not be delivered, most specific first: the permanent ones sisimai calls hard bounces.
_HARD_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "hasmoved",
        re.compile(r"(has moved|address (has )?changed|is no longer (valid|in use)|\b5\.1\.6\b)", re.I),
    ),
    (
        "hostunknown",
        re.compile(
            r"(host (or domain name )?not found|domain (name )?not found|unknown host|no such domain|"
            r"unrouteable mail domain|host unknown|name service error|dns (lookup )?(failure|error)|"
            r"domain does not exist|no mx|\b5\.1\.2\b|nxdomain|unroutable domain|domain .{0,40}not exist|"
            r"invalid domain|domain is not reachable|\b5\.4\.4\b)",
            re.I,
        ),
    ),
    (
        "notaccept",
        re.compile(
            r"(does not accept (any )?mail|null mx|not accept mail|no smtp service|\b5\.1\.10\b|\b5\.7\.27\b)", re.I
        ),
    ),
    (
        "userunknown",
        re.compile(
            r"(user unknown|unknown user|no such user|user (does not|doesn't) exist|does not exist|doesn't exist|"
            r"unknown recipient|recipient unknown|invalid recipient|recipient (address )?rejected: (user|unknown)|"
            r"no (such )?mailbox|mailbox (not found|does not exist|unavailable|is unavailable)|user not found|"
            r"recipient not found|no such recipient|not a valid (mailbox|recipient|user)|invalid mailbox|"
            r"unknown (local[- ]part|address|mailbox)|address unknown|not our customer|unrouteable address|"
            r"unknown or illegal alias|account (does not|doesn't) exist|no account|addressee unknown|"
            r"mailbox (name )?(is )?(invalid|not exist)|user not exist|bad destination mailbox|recipnotfound|"
            r"is not a known user|\b5\.1\.1\b|\b5\.1\.0\b|\b5\.1\.3\b|invalid address|no valid recipients|"
            r"no mailbox here|not listed in|address rejected|unknown in (relay|local) recipient table|"
            r"user invalid|account unavailable|not have an account|not recognized|invalid final delivery|"
            r"doesn't have an? .{0,40} account|recipient address rejected\.?$)",
            re.I,
        ),
    ),
)
# Signals that override a 5.x.x code: the address itself is fine (full mailbox, policy, spam, quota, suspension).
_SOFT_OVERRIDE = re.compile(
    r"(mailbox (is )?full|quota|insufficient|spam|blocked|blacklist|block list|policy|"
    r"suspend|disabled|inactive|too many|rate limit|temporar|relay(ing)? (denied|not permitted)|"
    r"authenticat|spf|dkim|dmarc|reverse dns|virus|too large|size limit|exceeds|timed? ?out|"
    r"expired|connection refused|reputation|delayed)",
    re.I,
)


def _header(headers: Mapping[str, str], name: str) -> str:
    return headers.get(name, "").strip()


def _auto_reply_signal(headers: Mapping[str, str], subject: str) -> str | None:
    auto_submitted = _header(headers, "auto-submitted").lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return f"auto-submitted: {auto_submitted}"
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder", "x-auto-reply-from", "x-mail-autoreply",
                 "x-autogenerated", "x-fc-machinegenerated", "x-ms-exchange-inbox-rules-loop"):  # fmt: skip
        if name in headers:
            return name
    suppress = _header(headers, "x-auto-response-suppress").lower()
    if suppress and any(v in suppress for v in ("all", "oof", "autoreply")):
        return "x-auto-response-suppress"
    if _AUTO_SUBJECT.search(subject):
        return "subject"
    return None


def _bulk_signal(headers: Mapping[str, str]) -> str | None:
    precedence = _header(headers, "precedence").lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        return f"precedence: {precedence}"
    for name in ("list-id", "list-unsubscribe", "x-campaign", "feedback-id"):
        if name in headers:
            return name
    return None


def _parts(msg: Message) -> list[Message]:
    return [p for p in msg.walk()]


def _fields(part: Message) -> list[dict[str, str]]:
    """message/delivery-status → its header blocks (per-message, then one per recipient)."""
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                blocks.append({k.lower(): str(v) for k, v in sub.items()})
    elif isinstance(payload, str):
        for chunk in re.split(r"\n\s*\n", payload.replace("\r\n", "\n")):
            block: dict[str, str] = {}
            for line in chunk.splitlines():
                if ":" in line and not line[:1].isspace():
                    key, _, value = line.partition(":")
                    block[key.strip().lower()] = value.strip()
            if block:
                blocks.append(block)
    return blocks


def _strip_type(value: str) -> str:
    """'rfc822; a@b.c' → 'a@b.c'."""
    value = value.split(";", 1)[1] if ";" in value else value
    return value.strip().strip("<>").strip()


def classify_failure(status: str, text: str) -> tuple[str, bool]:
    """(reason, hard) for one failed recipient, from its DSN status code and the diagnostic text.

    Hard means the address itself is bad (unknown user or domain, moved, accepts no mail): mailing it again
    is pointless. A full mailbox, a policy or spam block, a timeout are soft even with a 5.x.x code.
    """
    if status.startswith("4"):
        return "temporary", False
    if status.startswith("2"):
        return "delivered", False
    for line in text[:4000].splitlines() or [""]:
        for reason, pattern in _HARD_PATTERNS:
            if pattern.search(line) and not _SOFT_OVERRIDE.search(line):
                return reason, True
    for reason, pattern in _HARD_PATTERNS:
        if pattern.search(status):
            return reason, True
    return "other", False


def _original_message_id(msg: Message, text: str) -> str | None:
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                mid = payload[0].get("message-id")
                if mid:
                    return str(mid).strip().strip("<>")
            if isinstance(payload, str):
                m = re.search(r"^message-id:\s*<?([^>\s]+)>?", payload, re.I | re.M)
                if m:
                    return m.group(1)
    matches = re.findall(r"^\s*message-id:\s*<?([^>\s]+)>?", text, re.I | re.M)
    return matches[-1] if matches else None


def _full_text(msg: Message, text: str) -> str:
    """The body text plus any text parts (a bounce's explanation may sit in a second text/plain part)."""
    chunks = [text]
    for part in msg.walk():
        if part.get_content_maintype() == "text" and not part.is_multipart():
            try:
                data = part.get_payload(decode=True)
            except (ValueError, TypeError, LookupError, AssertionError):
                continue
            if isinstance(data, bytes):
                chunks.append(data.decode("utf-8", "replace"))
    return "\n".join(chunks)


def _explanation(body: str) -> str:
    """The human-readable part of a bounce, without the returned original mail."""
    cut = re.search(r"^(-+ ?(original|undelivered|returned) message|content-type: message/|"
                    r"-+ ?this is a copy of|received: |return-path: )", body, re.I | re.M)  # fmt: skip
    return body[: cut.start()] if cut and cut.start() > 40 else body[:3000]


def _recipients_from_dsn(msg: Message, body: str) -> tuple[BounceRecipient, ...]:
    out: list[BounceRecipient] = []
    for part in msg.walk():
        if part.get_content_type() not in ("message/delivery-status", "message/global-delivery-status"):
            continue
        for block in _fields(part):
            rcpt = block.get("final-recipient") or block.get("original-recipient")
            if not rcpt:
                continue
            status = (m.group(0) if (m := _STATUS.search(block.get("status", ""))) else "").strip()
            action = block.get("action", "").strip().lower()
            diagnostic = block.get("diagnostic-code", "")
            if not status and (code := _REPLY_CODE.search(diagnostic)):
                status = f"{code.group(1)[0]}.0.0"
            if action in ("delivered", "relayed", "expanded"):
                out.append(BounceRecipient(recipient=_strip_type(rcpt), status=status, action=action))
                continue
            _, hard = classify_failure(status or "5.0.0", diagnostic or _explanation(body))
            if action == "delayed" or status.startswith("4"):
                hard = False
            out.append(
                BounceRecipient(
                    recipient=_strip_type(rcpt).lower(),
                    status=status,
                    action=action or "failed",
                    diagnostic=diagnostic.strip()[:500],
                    hard=hard,
                )
            )
    return tuple(out)


def _recipients_from_text(body: str, sender: str) -> tuple[BounceRecipient, ...]:
    """Non-standard bounces (qmail, old Exchange…): addresses and codes in the prose."""
    # Ignore the quoted original mail's headers, which name the sender and not the failed recipient.
    cut = re.search(r"^(-+ ?(original|undelivered|returned) message|content-type: message/rfc822|"
                    r"-+ ?this is a copy of the message|received: )", body, re.I | re.M)  # fmt: skip
    scope = body[: cut.start()] if cut and cut.start() > 40 else body
    seen: dict[str, None] = {}
    for m in _EMAIL.finditer(scope):
        addr = m.group(1).lower().strip(".")
        if addr == sender.lower() or _BOUNCE_SENDER.match(addr):
            continue
        seen.setdefault(addr, None)
    temporary = bool(re.search(r"(delayed|will (retry|try again)|still trying|not yet been delivered)", scope, re.I))
    recipients = list(seen)[:5]
    out: list[BounceRecipient] = []
    for i, rcpt in enumerate(recipients or [""]):
        # Each recipient's explanation runs from where it is named to where the next one is.
        begin = scope.lower().find(rcpt) if rcpt else 0
        nxt = scope.lower().find(recipients[i + 1], begin + 1) if i + 1 < len(recipients) else -1
        window = scope[max(begin, 0) : nxt if nxt > begin else max(begin, 0) + 800] if rcpt else scope
        if not _STATUS.search(window) and not _REPLY_CODE.search(window):
            window = scope
        status_m = _STATUS.search(window)
        status = status_m.group(0) if status_m else ""
        if not status and (code := _REPLY_CODE.search(window)):
            status = f"{code.group(1)[0]}.0.0"
        if not status:
            status = "4.0.0" if temporary else "5.0.0"
        _, hard = classify_failure(status, window)
        out.append(
            BounceRecipient(recipient=rcpt, status=status, action="delayed" if temporary else "failed", hard=hard)
        )
    return tuple(out)


def classify(msg: Message, *, headers: Mapping[str, str], sender: str, subject: str, text: str) -> AutoReport:
    """Decide whether a mail was sent by a machine, and what it says about our mail if it was."""
    ctype = msg.get_content_type()
    report_type = str(msg.get_param("report-type", "") or "").lower() if ctype == "multipart/report" else ""
    types = {p.get_content_type() for p in _parts(msg)}
    if report_type == "feedback-report" or "message/feedback-report" in types:
        body = _full_text(msg, text)
        rcpt = _recipients_from_text(body, sender)
        return AutoReport(
            kind=AutoKind.COMPLAINT,
            reason="feedback-report",
            recipients=tuple(BounceRecipient(recipient=r.recipient, action="complained") for r in rcpt[:1]),
            original_message_id=_original_message_id(msg, body),
        )
    dsn_types = {"message/delivery-status", "message/global-delivery-status"}
    if report_type in ("delivery-status", "global-delivery-status") or types & dsn_types:
        body = _full_text(msg, text)
        recipients = _recipients_from_dsn(msg, body) or _recipients_from_text(body, sender)
        return AutoReport(
            kind=AutoKind.BOUNCE,
            reason="delivery-status",
            recipients=recipients,
            original_message_id=_original_message_id(msg, body),
        )
    auto = _auto_reply_signal(headers, subject)
    from_daemon = bool(_BOUNCE_SENDER.match(sender)) or sender.lower().startswith("mailer-daemon")
    return_path = _header(headers, "return-path")
    if from_daemon or (
        _BOUNCE_SUBJECT.search(subject) and (auto is None or auto.startswith("auto-submitted") or return_path == "<>")
    ):
        body = _full_text(msg, text)
        if from_daemon or _STATUS.search(body) or _REPLY_CODE.search(body) or "message/rfc822" in types:
            return AutoReport(
                kind=AutoKind.BOUNCE,
                reason="sender" if from_daemon else "subject",
                recipients=_recipients_from_text(body, sender),
                original_message_id=_original_message_id(msg, body),
            )
    if auto is not None:
        return AutoReport(kind=AutoKind.AUTO_REPLY, reason=auto, original_message_id=_in_reply_to(headers))
    bulk = _bulk_signal(headers)
    if bulk is not None:
        return AutoReport(kind=AutoKind.BULK, reason=bulk)
    return AutoReport()


def _in_reply_to(headers: Mapping[str, str]) -> str | None:
    m = re.search(r"<([^<>\s]+)>", _header(headers, "in-reply-to"))
    return m.group(1) if m else None
