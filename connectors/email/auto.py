"""Automatic mail: RFC 3834 and vendor auto-reply headers, out-of-office, DSN bounces (RFC 3464), complaints."""

from __future__ import annotations

import enum
import re
import string
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
_BOUNCE_SENDER = re.compile(r"^(mailer-daemon|post_?master|mail-daemon|mailer|bounce[s]?|mdaemon|mail\.daemon)@", re.I)
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY_CODE = re.compile(r"(?<![\d.])([45]\d\d)(?:[ -]|$)", re.MULTILINE)
_EMAIL = re.compile(r"<?([A-Za-z0-9._%+'=/-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>?")

# Why a mail could not be delivered --------------------------------------------------------------------------
# The taxonomy is sisimai's (https://libsisimai.org/en/reason/), so our verdicts can be compared with it. Only
# four reasons say the *address* is bad, and only those are hard bounces (we stop mailing the address):
# userunknown, hostunknown, hasmoved, and notaccept when it is permanent (a null MX). Everything else (full
# mailbox, spam or policy blocks, a rejected sender, a timeout, a filter after DATA) is soft.
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})


# What could make a pattern match differently once it runs case-sensitively over case-folded text: a capital, a
# character given by its code, an inline flag, or a non-ASCII character.
_CASE_SENSITIVE_BITS = re.compile(r"[A-Z]|\\[xuUN0]|\(\?[a-zA-Z-]|[^\x00-\x7f]")
# Case-insensitive, an ASCII letter matches its other case and, of all other characters, only these four.
_TO_ASCII_CASE = {
    **{ord(c): c.lower() for c in string.ascii_uppercase},
    0x130: "i",  # İ
    0x131: "i",  # ı
    0x17F: "s",  # ſ
    0x212A: "k",  # K (Kelvin sign)
}


def fold_case(text: str) -> str:
    """The text as an ASCII-lowercase pattern sees it case-insensitively; same length, so positions still hold."""
    return text.lower() if text.isascii() else text.translate(_TO_ASCII_CASE)


@dataclass(frozen=True, slots=True)
class Phrases:
    """Case-insensitive phrases, searched for cheaply in case-folded text.

    re cannot skip ahead over text on a case-insensitive literal, so it tries every alternative at every position.
    For a pattern of ASCII with no capitals, no escaped code points and no inline flags, ignoring case is the same
    as matching case-sensitively against ``fold_case(text)`` (ASCII capitals lowered, and the four non-ASCII letters
    that IGNORECASE folds onto ASCII ones replaced by them): about 3x cheaper. Other patterns keep the
    case-insensitive search.
    """

    ignorecase: re.Pattern[str]
    lowercase: re.Pattern[str] | None

    def found_in(self, text: str, folded: str) -> bool:
        """Whether the text says it; ``folded`` is ``fold_case(text)``."""
        if self.lowercase is not None:
            return self.lowercase.search(folded) is not None
        return self.ignorecase.search(text) is not None


def _phrases(*alternatives: str) -> Phrases:
    pattern = "|".join(f"(?:{a})" for a in alternatives)
    without_escapes = re.sub(r"\\[^xuUN0]", "", pattern)
    safe = _CASE_SENSITIVE_BITS.search(without_escapes) is None
    return Phrases(ignorecase=re.compile(pattern, re.IGNORECASE), lowercase=re.compile(pattern) if safe else None)


# What each reason's diagnostic text says, in the words MTAs use. Matched against one recipient's diagnostic.
_REASON_TEXT: dict[str, Phrases] = {
    "mailboxfull": _phrases(
        r"mail ?box (is |was )?(full|over ?quota)",
        r"over (the |their |his |her )?(storage |disk )?quota",
        r"quota (exceeded|full|violation)",
        r"exceed(s|ed)? (the |its |their |his |her )?(storage |disk |mailbox )?quota",
        r"mailbox size limit",
        r"mailfolder is full",
        r"(account|inbox|mailbox) (is )?(full|out of (disk )?space)",
        r"insufficient (user )?(disk|storage)",
        r"not enough (storage|disk|space) (space )?(in|for) (the )?(user|mailbox)",
        r"full mailbox",
        r"user (is )?over (quota|limit)",
        r"no space left (in|for) (the )?mailbox",
    ),
    "mesgtoobig": _phrases(
        r"message (is |was )?too (big|large)",
        r"message size (exceeds|too large|limit)",
        r"size (limit )?exceeded",
        r"exceeds? (the )?(maximum|max\.?) (message )?size",
        r"message (length|size) exceeds? (fixed|maximum|limit)",
        r"mail (is )?too large",
        r"larger than (the )?(maximum|allowed)",
    ),
    "exceedlimit": _phrases(
        r"message length exceeds administrative limit", r"exceeds? (the )?(per-?mailbox|administrative) limit"
    ),
    "suspend": _phrases(
        r"suspended",
        r"(account|mailbox|address|user) (has been |is )?(disabled|deactivated|inactive|locked|frozen|on hold|expired)",
        r"(account|mailbox) (is )?not (currently )?(active|enabled)",
        r"recipient (is )?(no longer )?(inactive|disabled)",
        r"(account|mailbox) (has been )?(closed|terminated|archived)",
        r"boite du destinataire (archivee|fermee)",
    ),
    "hasmoved": _phrases(
        r"has moved", r"no longer (on|at) (this )?server", r"(mailbox|address|domain) (owner )?has changed"
    ),
    "norelaying": _phrases(
        r"relay(ing)? (access )?(denied|not (permitted|allowed|authori[sz]ed)|prohibited|refused)",
        r"(unable|not (permitted|allowed|authori[sz]ed)) to relay",
        r"we do not relay",
        r"no relaying",
        r"relay not permitted",
        r"not (a )?(local|our) (domain|host)s?,? (and )?(relay|relaying)",
    ),
    "authfailure": _phrases(
        r"\bspf\b",
        r"\bdkim\b",
        r"\bdmarc\b",
        r"sender ?id (check )?fail",
        r"sender policy framework",
        r"(not|isn't|is not) (an? )?(permitted|authori[sz]ed) sender",
        r"authentication results",
    ),
    "userunknown": _phrases(
        r"user ?unknown",
        r"unknown (user|recipient|mailbox|address|local[- ]?part|e-?mail address|alias)",
        r"(no such|nonexistent|non-existent|invalid|bad|unknown) (user|recipient|mailbox|address|account|person)",
        r"(no such|unknown) local user",
        r"(user|recipient|mailbox|account|address|addressee)( name)? (does not|doesn't|not) (exist|found|known)",
        r"(user|recipient|mailbox|address)( \S+)? (was )?not found",
        r"(mailbox|user|recipient|address) (is )?(invalid|unknown|unavailable)",
        r"not a (valid|known) (mailbox|recipient|user|address)",
        r"is not a (valid|known) (mailbox|recipient|user)",
        r"(no|not an?) (mail ?box|account) (here|by that name|available|found)",
        r"address (unknown|not present|does not exist)",
        r"address rejected\.?$",
        r"recipient (address )?rejected: (user|unknown|invalid|access denied|userunknown)",
        r"recipient not ok",
        r"not (listed|known) in (the )?(address book|directory|domino directory|name directory)",
        r"unrouteable address",
        r"no valid recipients",
        r"recipient (is )?(not local|not accepted|refuses)",
        r"badrcptto",
        r"bad destination mailbox",
        r"unknown or illegal alias",
        r"(user|recipient)( \S+)? (has )?no (account|mailbox)",
        r"undeliverable address",
        r"resolver\.adr\.recipnotfound",
        r"recipnotfound",
        r"this (e-?mail )?address (is wrong|no longer (valid|accepts))",
        r"doesn'?t have an? \S+ (account|mailbox)",
        r"the (e-?mail )?account (that )?you tried to reach does not exist",
        r"no one (here|at this address)",
        r"utilisateur inconnu",
        r"user (is )?not (active|known)",
        r"unknown in (relay|local|virtual \S+) recipient table",
        r"invalid final delivery userid",
        r"no such address",
    ),
    "filtered": _phrases(
        r"filtered",
        r"user reject",
        r"refuses? to (accept|receive)",
        r"refused due to recipient preferences",
        r"blocked by (the )?recipient",
        r"(is |are )?only accepting mail from",
        r"not accepting (any )?mail from",
        r"rejected (due to|by) (user|recipient) (rules|preferences|settings)",
        r"recipient id refuse",
    ),
    "requireptr": _phrases(
        r"\bptr\b",
        r"reverse (dns|lookup|hostname|mapping)",
        r"\brdns\b",
        r"cannot find your (host ?name|reverse)",
        r"(no|missing|without) (reverse|ptr)",
        r"ip name lookup failed",
        r"unresolvable (host|address|ip)",
        r"(client|host) (name|address) (lookup|resolution) failed",
        r"fcrdns",
    ),
    "notcompliantrfc": _phrases(
        r"rfc ?(5322|2822|822|5321|2821)",
        r"not (rfc[- ]?)?compliant",
        r"(multiple|duplicate) (from|to|subject|date|message-id|sender)",
    ),
    "badreputation": _phrases(r"reputation"),
    "contenterror": _phrases(
        r"8-?bit data in (the )?(message )?header",
        r"improper use of 8-?bit",
        r"header (is |was )?too (long|large)",
        r"too many (received|hops)",
        r"invalid mime",
        r"malformed (header|mime|message)",
    ),
    "rejected": _phrases(
        r"sender (address |domain )?(is )?(rejected|denied|refused|blocked|not allowed|invalid|unknown)",
        r"(invalid|bad|unknown|unverified) sender",
        r"sender (verify|verification|validation|address verification) (failed|error)",
        r"domain of (the )?sender",
        r"sender domain (does not|must) (exist|resolve)",
        r"mail from .{0,80}(rejected|refused|denied)",
        r"(rejected|refused|denied) .{0,40}\b(envelope )?sender",
        r"sender was rejected",
        r"your (e-?mail )?address (is|has been) (blocked|blacklisted|banned|rejected)",
        r"access denied",
        r"not (allowed|permitted|authori[sz]ed) to send",
    ),
    "hostunknown": _phrases(
        r"host (or domain name )?(not found|unknown)",
        r"host \S+ not found",
        r"domain (is )?(not reachable|unreachable)",
        r"domain (name )?(not found|unknown|does not exist|doesn't exist|not exist)",
        r"unknown (host|domain)",
        r"no such (domain|host)",
        r"unrouteable (mail )?domain",
        r"unroutable (mail )?domain",
        r"nxdomain",
        r"name or service not known",
        r"(invalid|bad|unresolvable|non-?existent) (recipient )?domain",
        r"no mx (record|host)",
        r"domain .{0,60}(does not exist|not exist|not found)",
        r"(host|domain) name lookup failed",
        r"recipient domain .{0,40}(not|unknown)",
    ),
    "spamdetected": _phrases(
        r"spam",
        r"\bu[bc]e\b",
        r"junk ?mail",
        r"bulk (e-?)?mail",
        r"message content rejected",
        r"content (filter|rejected)",
        r"classified as",
        r"suspicious",
        r"blocked by (a |our )?(content )?filter",
        r"unsolicited",
        r"scored",
        r"phish",
    ),
    "speeding": _phrases(
        r"rate[- ]?limit",
        r"(sending|receiving) (too )?(fast|quickly|many)",
        r"throttl",
        r"too many (messages|mails|emails)",
        r"slow down",
        r"exceeded .{0,30}(rate|per (hour|day|minute))",
    ),
    "toomanyconn": _phrases(
        r"too many (connections|concurrent|simultaneous|sessions|smtp sessions)",
        r"connection (limit|rate) (exceeded|reached)",
        r"too many recipients",
    ),
    "blocked": _phrases(
        r"black ?list",
        r"block ?list",
        r"deny ?list",
        r"\brbl\b",
        r"\bdnsbl\b",
        r"spamhaus",
        r"spamcop",
        r"barracuda",
        r"(ip|client|host|connection|your server|sending server|network)( address)?( \S+)? "
        r"(is |has been |was )?(blocked|rejected|refused|denied|banned|not allowed|listed)",
        r"listed (in|on|at|by) ",
        r"banned",
        r"\bblocked\b",
    ),
    "virusdetected": _phrases(r"virus", r"malware", r"infected", r"trojan", r"\bworm\b"),
    "policyviolation": _phrases(
        r"polic(y|ies)",
        r"prohibited",
        r"violat",
        r"not allowed (by|in|on)",
        r"(attachment|file) (type )?(is |are )?(not allowed|blocked|forbidden)",
        r"forbidden",
    ),
    "systemerror": _phrases(
        r"system (error|failure|not configured|configuration)",
        r"internal (server )?error",
        r"server error",
        r"configuration error",
        r"local (configuration )?error",
        r"(mail|routing)? ?loop",
        r"too many hops",
        r"loops back to myself",
        r"resources? (temporarily )?unavailable",
    ),
    "networkerror": _phrases(
        r"network (error|unreachable|is unreachable)",
        r"dns (lookup )?(failure|error|problem)",
        r"no route to host",
        r"host (is )?unreachable",
        r"connection (timed out|refused|reset|lost|dropped)",
        r"(could not|unable to|cannot|can't) connect",
        r"lost connection",
        r"host not found, try again",
        r"timed? ?out",
        r"temporary lookup failure",
        r"malformed or unexpected name server reply",
    ),
    "systemfull": _phrases(
        r"(mail )?system (is )?full",
        r"disk (is )?full",
        r"insufficient system (storage|resources)",
        r"out of (disk )?space",
        r"no space left on device",
    ),
    "notaccept": _phrases(
        r"(does not|doesn't|do not) accept (any )?(e-?)?mail",
        r"not accepting (any )?(e-?)?(mail|messages)",
        r"null mx",
        r"no smtp service",
        r"accepts no (e-?)?mail",
        r"does not receive (e-?)?mail",
    ),
    "expired": _phrases(
        r"(delivery|retry|queue|message) (time|period|lifetime) (has )?(expired|exceeded)",
        r"retry time(out)? (not reached|exceeded)",
        r"(message|mail) (has been )?(expired|too old)",
        r"giving up",
        r"gave up",
        r"(could not|has not been|not yet been) (be )?delivered (for|within|in the last) \d",
        r"queued? (for )?too long",
        r"was not delivered (for|within) \d",
        r"delivery attempts? (will continue|have been|exceeded)",
        r"(unable|failed) to deliver .{0,40}(for|within) \d+ (days|hours)",
    ),
    "failedstarttls": _phrases(r"starttls", r"tls (is )?required", r"requiretls", r"must issue a starttls"),
    "securityerror": _phrases(
        r"authentication (is )?(required|failed|credentials)",
        r"(not|un)authori[sz]ed",
        r"security",
        r"certificate",
        r"must (be )?authenticat",
        r"sender (is )?not authenticated",
        r"authentication mechanism",
    ),
    "mailererror": _phrases(
        r"x-unix",
        r"procmail",
        r"mailer (error|program)",
        r"command (died|failed|output)",
        r"exit (code|status)",
        r"pipe to",
        r"exited with",
        r"unknown mailer error",
        r"\|/",
    ),
    "syntaxerror": _phrases(
        r"syntax error",
        r"command (unrecognized|not recognized|not implemented)",
        r"unrecognized command",
        r"bad sequence of commands",
        r"invalid command",
    ),
}

# RFC 3463 enhanced status codes and the reason each one names (the class digit of a 4.x.x is kept).
_STATUS_REASON: dict[str, str] = {
    "x.1.0": "userunknown", "x.1.1": "userunknown", "x.1.3": "userunknown", "x.1.2": "hostunknown",
    "x.4.4": "hostunknown", "x.1.4": "filtered", "x.2.0": "filtered", "x.2.1": "filtered", "x.2.4": "filtered",
    "x.1.6": "hasmoved", "x.7.17": "hasmoved", "x.7.18": "hasmoved", "x.1.7": "rejected", "x.1.8": "rejected",
    "x.1.10": "notaccept", "x.3.2": "notaccept", "x.7.27": "notaccept", "x.2.2": "mailboxfull",
    "x.2.3": "exceedlimit", "x.3.1": "systemfull", "x.4.5": "systemfull", "x.3.4": "mesgtoobig",
    "x.7.16": "mesgtoobig", "x.1.9": "systemerror", "x.3.0": "systemerror", "x.3.3": "systemerror",
    "x.3.5": "systemerror", "x.4.3": "systemerror", "x.5.4": "systemerror", "x.5.5": "systemerror",
    "x.4.0": "networkerror", "x.4.2": "networkerror", "x.4.6": "networkerror", "x.4.8": "networkerror",
    "x.4.1": "expired", "x.4.7": "expired", "x.5.2": "syntaxerror", "x.5.6": "syntaxerror",
    "x.5.3": "toomanyconn", "x.7.13": "suspend", "x.7.20": "authfailure", "x.7.21": "authfailure",
    "x.7.22": "authfailure", "x.7.23": "authfailure", "x.7.24": "authfailure", "x.7.26": "authfailure",
    "x.7.29": "authfailure", "x.7.25": "requireptr", "x.7.28": "spamdetected", "x.7.30": "failedstarttls",
}  # fmt: skip
# Reasons a status code alone cannot settle: the diagnostic text gets the last word.
_UNSETTLED = frozenset({"", "systemerror", "securityerror", "expired", "networkerror", "hostunknown", "userunknown"})
# The first look: status code and text together, most specific first ...
_FIRST_LOOK = (
    "mailboxfull", "mesgtoobig", "exceedlimit", "suspend", "hasmoved", "norelaying", "authfailure", "userunknown",
    "filtered", "requireptr", "notcompliantrfc", "badreputation", "contenterror", "rejected", "hostunknown",
    "spamdetected", "speeding", "toomanyconn", "blocked",
)  # fmt: skip
# ... then, when that found nothing and the status code is unsettled, the text alone.
_SECOND_LOOK = (
    "mailboxfull", "authfailure", "badreputation", "speeding", "spamdetected", "virusdetected", "policyviolation",
    "norelaying", "systemerror", "networkerror", "suspend", "contenterror", "systemfull", "notaccept", "expired",
    "failedstarttls", "securityerror", "mailererror",
)  # fmt: skip
# A status code says "no such user", but the text names something else: the address may well be fine.
_NOT_REALLY_UNKNOWN = (
    "norelaying", "blocked", "mailboxfull", "hasmoved", "rejected", "notaccept", "speeding", "toomanyconn",
)  # fmt: skip
# SMTP commands sent before DATA: a rejection there cannot come from a filter reading the message.
# Vendors' own words for "no such mailbox". No content filter answers with these, so they name an unknown user
# whatever the SMTP command was (sisimai's per-vendor modules decide these the same way).
_NO_SUCH_MAILBOX = _phrases(
    r"recipient name is not recognized",  # Exchange 2000/2003
    r"recip(ient)?notfound",  # Exchange, Microsoft 365: RESOLVER.ADR.RecipNotFound
    r"recipient not found by smtp address lookup",  # Microsoft 365
    r"not listed in (the )?(public )?(name (&|and) address book|domino directory)",  # Lotus Notes, Domino
    r"invalid final delivery userid",  # IMail
    r"this user doesn'?t have an? \S+ account",  # Yahoo
    r"no mailbox here by that name",  # qmail
    r"mail\.local: unknown user",  # sendmail's local delivery agent
)
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
    return _STATUS_REASON.get(f"x.{int(subject)}.{int(detail)}", "")


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
            found = heard[reason] = _REASON_TEXT[reason].found_in(said, folded)
        return found

    def first_look(reason: str) -> bool:
        if reason == "userunknown":
            if _NO_SUCH_MAILBOX.found_in(said, folded):
                return True
            if by_status == "userunknown":
                return not any(says(other) for other in _NOT_REALLY_UNKNOWN)
            return command == "RCPT" and says("userunknown")
        if reason == "filtered":
            # "User unknown" after DATA (or from a mailer that does not say when) is a filter, not a bad address.
            if by_status == "filtered":
                return says("userunknown") or says("filtered")
            return command not in _BEFORE_DATA and (says("filtered") or says("userunknown"))
        if reason == "hostunknown" and by_status == "hostunknown":
            return not says("networkerror")
        return by_status == reason or says(reason)

    for reason in () if local_error else _FIRST_LOOK:
        if first_look(reason):
            return reason
    if by_status not in _UNSETTLED:
        return by_status
    for reason in _SECOND_LOOK:
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


def _around(text: str, rcpt: str, span: int = 800) -> str:
    """The part of a bounce's prose that talks about one recipient: from where it is named on."""
    at = text.lower().find(rcpt.lower()) if rcpt else -1
    return text[at : at + span] if at >= 0 else ""


def _recipients_from_dsn(msg: Message, body: str) -> tuple[BounceRecipient, ...]:
    out: list[BounceRecipient] = []
    explanation = _explanation(body)
    for part in msg.walk():
        if part.get_content_type() not in ("message/delivery-status", "message/global-delivery-status"):
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
    r"-* ?the header of the original message)",
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
