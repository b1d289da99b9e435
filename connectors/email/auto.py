"""Automatic mail: RFC 3834 and vendor auto-reply headers, out-of-office, DSN bounces (RFC 3464), complaints."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from email.policy import EmailPolicy

from connectors.email.bounce_phrases import (
    BOUNCE_NOTICE,
    FIRST_LOOK,
    HARD_REASONS,
    NO_SUCH_MAILBOX,
    NOT_REALLY_UNKNOWN,
    REASON_TEXT,
    SECOND_LOOK,
    STATUS_REASON,
    UNSETTLED,
)
from connectors.email.phrases import fold_case

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
    reason: str = ""  # why it failed, in sisimai's taxonomy: userunknown, mailboxfull, filtered, expired...
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
    r"unzustellbar|delivery report|returned to sender|message not delivered|delivery notification|"
    r"メールエラー|配信エラー|送信エラー|配送エラー|不達)",
    re.IGNORECASE,
)
# A person forwarding a bounce to us ("Fwd: Undelivered Mail ...") is a customer with a question, not a bounce.
_FORWARDED = re.compile(r"^\s*(fwd?|fw|wg|tr|转发|轉寄|转寄)\s*[:：]", re.IGNORECASE)
_BOUNCE_SENDER = re.compile(r"^(mailer-daemon|post_?master|mail-daemon|mailer|bounce[s]?|mdaemon|mail\.daemon)@", re.I)
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY_CODE = re.compile(r"(?<![\d.])([45]\d\d)(?:[ -]|$)", re.MULTILINE)
_EMAIL = re.compile(r"<?([A-Za-z0-9._%+'=/-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>?")

# SMTP commands sent before DATA: a rejection there cannot come from a filter reading the message.
_BEFORE_DATA = frozenset({"CONN", "EHLO", "HELO", "MAIL", "RCPT"})
# Where MTAs say which SMTP command the remote server answered with the error.
_COMMAND_FORMS = tuple(
    re.compile(form, re.IGNORECASE)
    for form in (
        r"in reply to (?P<c>RCPT TO|MAIL FROM|end of DATA|DATA|HELO|EHLO|STARTTLS) command",  # Postfix
        r">>> ?(?P<c>RCPT|MAIL|DATA|HELO|EHLO|STARTTLS)\b",  # sendmail and Courier transcripts
        r"\bafter (?P<c>RCPT(?: TO)?|MAIL(?: FROM)?|end of data|DATA|initial connection|HELO|EHLO)\b",  # Exim, GMX
        r"\[(?P<c>RCPT_TO|MAIL_FROM|DATA)\]",  # Yahoo
        r"did not like our (?P<c>RCPT TO|MAIL FROM|DATA)\b",  # DragonFly
    )
)


def smtp_command(text: str) -> str:
    """The last SMTP command a bounce says the remote server answered ("RCPT", "DATA"...), or ""."""
    flat = " ".join(text.split())
    found = [(m.start(), m.group("c")) for form in _COMMAND_FORMS for m in form.finditer(flat)]
    if not found:
        return ""
    word = max(found)[1].upper().replace("_", " ")
    return {"END OF DATA": "DATA", "INITIAL CONNECTION": "CONN"}.get(word, word.split()[0])


def _status_reason(status: str) -> str:
    if not _STATUS.fullmatch(status):
        return ""
    _, subject, detail = status.split(".")
    return STATUS_REASON.get(f"x.{int(subject)}.{int(detail)}", "")


def failure_reason(status: str, text: str, *, command: str = "", action: str = "") -> str:
    """The reason one recipient failed, in sisimai's taxonomy, from its status code, diagnostic and SMTP command."""
    if status.startswith("2."):
        return "delivered"
    by_status = _status_reason(status)
    said = " ".join(text[:4000].split())
    folded = fold_case(said)
    # "Diagnostic-Code: X-Unix; ..." and the like: a local program failed, not an SMTP conversation.
    local_error = bool(re.match(r"x-[\w-]+ ?;", said, re.I))

    heard: dict[str, bool] = {}

    def says(reason: str) -> bool:
        # The looks below ask about the same reason several times; each ask is a search over up to 4,000 chars.
        found = heard.get(reason)
        if found is None:
            found = heard[reason] = REASON_TEXT[reason].found_in(said, folded)
        return found

    def first_look(reason: str) -> bool:
        if reason == "userunknown":
            if NO_SUCH_MAILBOX.found_in(said, folded):
                return True
            if by_status == "userunknown":
                return not any(says(other) for other in NOT_REALLY_UNKNOWN)
            return command == "RCPT" and says("userunknown")
        if reason == "filtered":
            # "User unknown" after DATA (or from a mailer that does not say when) is a filter, not a bad address.
            if by_status == "filtered":
                return says("userunknown") or says("filtered")
            return command not in _BEFORE_DATA and (says("filtered") or says("userunknown"))
        if reason == "hostunknown" and by_status == "hostunknown":
            return not says("networkerror")
        return by_status == reason or says(reason)

    for reason in () if local_error else FIRST_LOOK:
        if first_look(reason):
            return reason
    if by_status not in UNSETTLED:
        return by_status
    for reason in SECOND_LOOK:
        if says(reason):
            return reason
    if by_status:
        return by_status
    if status[2:4] == "6.":
        return "contenterror"
    if status[2:4] == "7.":
        return "securityerror"
    if says("syntaxerror"):
        return "syntaxerror"
    if action in ("delayed", "expired"):
        return "expired"
    if command in ("EHLO", "HELO", "CONN"):
        return "blocked"
    return "onhold" if said.strip() else "undefined"


def is_hard(reason: str, status: str) -> bool:
    """A hard bounce: the address itself is bad, so mailing it again is pointless."""
    if status.startswith(("2", "4")):
        return False
    return reason in HARD_REASONS or (reason == "notaccept" and not status.startswith("4"))


def classify_failure(status: str, text: str, *, command: str = "", action: str = "") -> tuple[str, bool]:
    """(reason, hard) for one failed recipient."""
    reason = failure_reason(status, text, command=command, action=action)
    return reason, is_hard(reason, status)


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


# Every part of a mail with its content type, attached mails' parts included (as Message.walk goes): the type is
# looked up once per part, not once per question asked about the part (each lookup scans all of its headers).
_Parts = list[tuple[Message, str]]


def _parts(msg: Message) -> _Parts:
    return [(p, p.get_content_type()) for p in msg.walk()]


# The fields of a delivery-status block that _recipients_from_dsn reads.
_DSN_FIELDS = frozenset({"final-recipient", "original-recipient", "status", "action", "diagnostic-code"})


def _field_text(sub: Message, name: str, value: str) -> str:
    """str(sub[name]), what Message.items() gives, for one of _DSN_FIELDS.

    Under EmailPolicy those are unstructured headers, and their parse (_header_value_parser.get_unstructured)
    gives the unfolded value back as it is unless it holds an encoded word ("=?") or 8-bit bytes: only those
    are run through the parser (a parse each, most of the cost of reading a bounce's status blocks).
    """
    unfolded = value.replace("\r", "").replace("\n", "")  # what EmailPolicy.header_fetch_parse does first
    if isinstance(sub.policy, EmailPolicy) and unfolded.isascii() and "=?" not in unfolded:
        return unfolded
    return str(sub.policy.header_fetch_parse(name, value))


def _fields(part: Message) -> list[dict[str, str]]:
    """message/delivery-status → its header blocks (per-message, then one per recipient), the fields we read.

    Only those are run through the header parser (the rest, Reporting-MTA, Arrival-Date..., cost a parse each).
    """
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                blocks.append(
                    {k.lower(): _field_text(sub, k, v) for k, v in sub.raw_items() if k.lower() in _DSN_FIELDS}
                )
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


def _original_message_id(parts: _Parts, text: str) -> str | None:
    for part, ctype in parts:
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


def _full_text(parts: _Parts, text: str) -> str:
    """The body text plus any text parts (a bounce's explanation may sit in a second text/plain part)."""
    chunks = [text]
    for part, ctype in parts:
        if ctype.split("/")[0] == "text" and not part.is_multipart():
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


def _around(text: str, rcpt: str, span: int = 800) -> str:
    """The part of a bounce's prose that talks about one recipient: from where it is named on."""
    at = text.lower().find(rcpt.lower()) if rcpt else -1
    return text[at : at + span] if at >= 0 else ""


def _recipients_from_dsn(parts: _Parts, body: str) -> tuple[BounceRecipient, ...]:
    out: list[BounceRecipient] = []
    explanation = _explanation(body)
    for part, ctype in parts:
        if ctype not in ("message/delivery-status", "message/global-delivery-status"):
            continue
        for block in _fields(part):
            rcpt = block.get("final-recipient") or block.get("original-recipient")
            if not rcpt:
                continue
            address = _strip_type(rcpt)
            status = (m.group(0) if (m := _STATUS.search(block.get("status", ""))) else "").strip()
            action = block.get("action", "").strip().lower()
            diagnostic = block.get("diagnostic-code", "")
            if not status and (code := _REPLY_CODE.search(diagnostic)):
                status = f"{code.group(1)[0]}.0.0"
            if action in ("delivered", "relayed", "expanded"):
                out.append(BounceRecipient(recipient=address, status=status, action=action, reason="delivered"))
                continue
            nearby = _around(explanation, address)
            command = smtp_command(diagnostic) or smtp_command(nearby) or smtp_command(explanation)
            reason, hard = classify_failure(
                status or "5.0.0", diagnostic or nearby or explanation, command=command, action=action
            )
            if action == "delayed":
                hard = False
            out.append(
                BounceRecipient(
                    recipient=address.lower(),
                    status=status,
                    action=action or "failed",
                    diagnostic=diagnostic.strip()[:500],
                    reason=reason,
                    hard=hard,
                )
            )
    return tuple(out)


# Where a non-standard bounce starts quoting the returned mail (whose headers name the sender, not the recipient).
_RETURNED_MAIL = re.compile(
    r"^(-+ ?(original|undelivered|returned|unsent) message|content-type: message/rfc822|"
    r"-+ ?this is a copy of the message|received: |original message follows|message headers follow|"
    r"-* ?below this line is a copy|"
    r"-* ?the header of the original message|"
    r"\s*below is a copy of the original message|original mail as follows)",
    re.IGNORECASE | re.MULTILINE,
)


def _recipients_from_text(body: str, sender: str) -> tuple[BounceRecipient, ...]:
    """Non-standard bounces (qmail, old Exchange…): addresses and codes in the prose."""
    # Ignore the quoted original mail's headers, which name the sender and not the failed recipient.
    cut = _RETURNED_MAIL.search(body)
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
        action = "delayed" if temporary else "failed"
        # The command may be named just before the recipient (">>> RCPT To:<rcpt>"), or once for all of them.
        said_before = scope[max(begin - 120, 0) : begin + len(window)] if rcpt else scope
        command = smtp_command(said_before) or smtp_command(scope)
        reason, hard = classify_failure(status, window, command=command, action=action)
        out.append(BounceRecipient(recipient=rcpt, status=status, action=action, reason=reason, hard=hard))
    return tuple(out)


# Microsoft's Junk Mail Reporting Program and Amazon SES send complaints that are not RFC 5965 reports: a plain
# multipart mail with the reported message attached, under this Subject.
_JMRP_SUBJECT = re.compile(r"^\s*complaint about message from ", re.IGNORECASE)
_FEEDBACK_LOOP_SENDERS = frozenset({"staff@hotmail.com", "complaints@email-abuse.amazonses.com"})
_ORIGINAL_RECIPIENT = re.compile(r"^x-hmxmroriginalrecipient:\s*<?([^>\s]+)", re.IGNORECASE | re.MULTILINE)
_ATTACHED_MAIL = ("message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers")


def _attached_headers(parts: _Parts) -> str:
    """The header block of every mail attached to this one, as text."""
    blocks: list[str] = []
    for part, ctype in parts:
        if ctype not in _ATTACHED_MAIL:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            blocks += ["".join(f"{k}: {v}\n" for k, v in sub.items()) for sub in payload if isinstance(sub, Message)]
        elif isinstance(payload, str):
            blocks.append(payload.split("\n\n", 1)[0])
    return "\n".join(blocks)


def _complaint(
    parts: _Parts, *, report_type: str, types: set[str], sender: str, subject: str, text: str
) -> AutoReport | None:
    """An abuse complaint about mail of ours: an RFC 5965 feedback report, or Microsoft's own format."""
    recipients: tuple[BounceRecipient, ...] = ()
    if report_type == "feedback-report" or "message/feedback-report" in types:
        reason = "feedback-report"
    elif _JMRP_SUBJECT.match(subject) and (
        sender.lower() in _FEEDBACK_LOOP_SENDERS or _ORIGINAL_RECIPIENT.search(_attached_headers(parts))
    ):
        reason = "complaint-about-message"
        if found := _ORIGINAL_RECIPIENT.search(_attached_headers(parts)):
            recipients = (BounceRecipient(recipient=found.group(1).lower(), action="complained"),)
    else:
        return None
    body = _full_text(parts, text)
    if not recipients:
        rcpt = _recipients_from_text(body, sender)
        recipients = tuple(BounceRecipient(recipient=r.recipient, action="complained") for r in rcpt[:1])
    return AutoReport(
        kind=AutoKind.COMPLAINT,
        reason=reason,
        recipients=recipients,
        original_message_id=_original_message_id(parts, body),
    )


def _list_manager_notice(headers: Mapping[str, str], sender: str) -> bool:
    """An error notice from the fml mailing-list manager (loop alerts, "not a member"): it writes X-MLServer, mails
    from the list's -admin address and numbers its own Message-IDs ".FML...". A post the list passes on from a
    member carries X-MLServer too, but the member's From and Message-ID."""
    if "x-mlserver" not in headers:
        return False
    return sender.lower().partition("@")[0].endswith("-admin") or ".fml" in _header(headers, "message-id").lower()


def _says_bounce_notice(body: str) -> bool:
    head = _explanation(body)[:3000]
    return BOUNCE_NOTICE.found_in(head, fold_case(head))


def classify(msg: Message, *, headers: Mapping[str, str], sender: str, subject: str, text: str) -> AutoReport:
    """Decide whether a mail was sent by a machine, and what it says about our mail if it was.

    As sisimai does, a header says "this may be a machine" first (a bounce's Subject, a daemon's address, the
    null reverse-path, a list manager's fields) and the body then has to agree (a status code, the returned mail,
    a mail system's own opening sentence): neither alone is enough for the weaker signals, because a customer who
    forwards us a bounce writes from their own address with "Fwd:" and quotes those words.
    """
    parts = _parts(msg)
    ctype = parts[0][1]  # the mail itself comes first
    report_type = str(msg.get_param("report-type", "") or "").lower() if ctype == "multipart/report" else ""
    types = {ctype for _, ctype in parts}
    complaint = _complaint(parts, report_type=report_type, types=types, sender=sender, subject=subject, text=text)
    if complaint is not None:
        return complaint
    dsn_types = {"message/delivery-status", "message/global-delivery-status"}
    if report_type in ("delivery-status", "global-delivery-status") or types & dsn_types:
        body = _full_text(parts, text)
        recipients = _recipients_from_dsn(parts, body) or _recipients_from_text(body, sender)
        return AutoReport(
            kind=AutoKind.BOUNCE,
            reason="delivery-status",
            recipients=recipients,
            original_message_id=_original_message_id(parts, body),
        )
    if report_type == "disposition-notification" or "message/disposition-notification" in types:
        # A read receipt (RFC 8098): the recipient's mail program answering for them.
        return AutoReport(kind=AutoKind.AUTO_REPLY, reason="disposition-notification", original_message_id=None)
    notification = _ses_notification(headers, sender, text)
    if notification is not None:
        return notification
    if _list_manager_notice(headers, sender):
        body = _full_text(parts, text)
        return AutoReport(
            kind=AutoKind.BOUNCE,
            reason="list-manager",
            recipients=_recipients_from_text(body, sender),
            original_message_id=_original_message_id(parts, body),
        )
    auto = _auto_reply_signal(headers, subject)
    from_daemon = bool(_BOUNCE_SENDER.match(sender)) or sender.lower().startswith("mailer-daemon")
    # Only a mail system sends from the null reverse-path (RFC 5321 4.5.5); the delivering server writes it into
    # Return-Path. Spam uses it too, so it needs the body to agree.
    null_sender = _header(headers, "return-path").replace(" ", "") == "<>"
    bounce_subject = bool(_BOUNCE_SUBJECT.search(subject)) and not _FORWARDED.match(subject)
    # The null reverse-path alone says "a machine", not "a bounce": a vacation notice from it stays an auto-reply
    # (as a bounce it could have its quoted original's addresses flagged as dead).
    if (
        from_daemon
        or (bounce_subject and (auto is None or auto.startswith("auto-submitted") or null_sender))
        or (null_sender and auto is None)
    ):
        body = _full_text(parts, text)
        returned = bool(types & set(_ATTACHED_MAIL))
        coded = bounce_subject and bool(_STATUS.search(body) or _REPLY_CODE.search(body))
        if from_daemon or coded or returned or _says_bounce_notice(body):
            return AutoReport(
                kind=AutoKind.BOUNCE,
                reason="sender" if from_daemon else "subject" if bounce_subject else "null-sender",
                recipients=_recipients_from_text(body, sender),
                original_message_id=_original_message_id(parts, body),
            )
    if auto is not None:
        return AutoReport(kind=AutoKind.AUTO_REPLY, reason=auto, original_message_id=_in_reply_to(headers))
    bulk = _bulk_signal(headers)
    if bulk is not None:
        return AutoReport(kind=AutoKind.BULK, reason=bulk)
    return AutoReport()


_SES_TYPE = re.compile(r'"(?:notificationType|eventType)"\s*:\s*"(\w+)"')


def _ses_notification(headers: Mapping[str, str], sender: str, text: str) -> AutoReport | None:
    """Amazon SES event notifications (bounce, complaint, delivery) mailed through SNS: JSON from a machine,
    which opened tickets and got acknowledgements."""
    from_sns = sender.lower().endswith("@sns.amazonaws.com") or "x-amz-sns-message-type" in headers
    found = _SES_TYPE.search(text)
    if not from_sns and not (found and '"mail"' in text and "amazonses.com" in text):
        return None
    kind = (found.group(1) if found else "").lower()
    if kind == "bounce":
        recipients = tuple(
            BounceRecipient(recipient=m.group(1), action="failed")
            for m in re.finditer(r'"emailAddress"\s*:\s*"([^"]+)"', text)
        )
        return AutoReport(kind=AutoKind.BOUNCE, reason="amazon-ses", recipients=recipients)
    if kind == "complaint":
        return AutoReport(kind=AutoKind.COMPLAINT, reason="amazon-ses")
    return AutoReport(kind=AutoKind.AUTO_REPLY, reason=f"amazon-ses {kind or 'notification'}")


def _in_reply_to(headers: Mapping[str, str]) -> str | None:
    m = re.search(r"<([^<>\s]+)>", _header(headers, "in-reply-to"))
    return m.group(1) if m else None
