"""The bounce classification's data: what MTAs write for each reason, and what status codes mean.

Tables only, no logic (auto.py reads them): a new MTA's wording is a line added here.
"""

from __future__ import annotations

from connectors.email.phrases import Phrases
from connectors.email.phrases import phrases as _phrases

# Why a mail could not be delivered --------------------------------------------------------------------------
# The taxonomy is sisimai's (https://libsisimai.org/en/reason/), so our verdicts can be compared with it. Only
# four reasons say the *address* is bad, and only those are hard bounces (we stop mailing the address):
# userunknown, hostunknown, hasmoved, and notaccept when it is permanent (a null MX). Everything else (full
# mailbox, spam or policy blocks, a rejected sender, a timeout, a filter after DATA) is soft.
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})


# What each reason's diagnostic text says, in the words MTAs use. Matched against one recipient's diagnostic.
REASON_TEXT: dict[str, Phrases] = {
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
        r"envelope expired",  # OpenSMTPD
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
STATUS_REASON: dict[str, str] = {
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
UNSETTLED = frozenset({"", "systemerror", "securityerror", "expired", "networkerror", "hostunknown", "userunknown"})
# The first look: status code and text together, most specific first ...
FIRST_LOOK = (
    "mailboxfull", "mesgtoobig", "exceedlimit", "suspend", "hasmoved", "norelaying", "authfailure", "userunknown",
    "filtered", "requireptr", "notcompliantrfc", "badreputation", "contenterror", "rejected", "hostunknown",
    "spamdetected", "speeding", "toomanyconn", "blocked",
)  # fmt: skip
# ... then, when that found nothing and the status code is unsettled, the text alone.
SECOND_LOOK = (
    "mailboxfull", "authfailure", "badreputation", "speeding", "spamdetected", "virusdetected", "policyviolation",
    "norelaying", "systemerror", "networkerror", "suspend", "contenterror", "systemfull", "notaccept", "expired",
    "failedstarttls", "securityerror", "mailererror",
)  # fmt: skip
# A status code says "no such user", but the text names something else: the address may well be fine.
NOT_REALLY_UNKNOWN = (
    "norelaying", "blocked", "mailboxfull", "hasmoved", "rejected", "notaccept", "speeding", "toomanyconn",
)  # fmt: skip
# Vendors' own words for "no such mailbox". No content filter answers with these, so they name an unknown user
# whatever the SMTP command was (sisimai's per-vendor modules decide these the same way).
NO_SUCH_MAILBOX = _phrases(
    r"recipient name is not recognized",  # Exchange 2000/2003
    r"recip(ient)?notfound",  # Exchange, Microsoft 365: RESOLVER.ADR.RecipNotFound
    r"recipient not found by smtp address lookup",  # Microsoft 365
    r"not listed in (the )?(public )?(name (&|and) address book|domino directory)",  # Lotus Notes, Domino
    r"invalid final delivery userid",  # IMail
    r"this user doesn'?t have an? \S+ account",  # Yahoo
    r"no mailbox here by that name",  # qmail
    r"mail\.local: unknown user",  # sendmail's local delivery agent
    r"no valid recipients for this mm",  # Verizon's MMS gateway
)


# How a mail system opens its own bounce --------------------------------------------------------------------
# Fixed sentences that MTAs, mobile carriers and list managers write at the top of a notice, in words no person
# writes to a helpdesk. They settle a mail only together with a header that already points at a machine (a
# bounce's Subject, the null reverse-path): a customer who forwards a bounce to us quotes these words too.
BOUNCE_NOTICE = _phrases(
    r"this is the mailer-daemon, please do not reply",  # OpenSMTPD
    r"message could not be delivered to mobile",  # Verizon's MMS gateway (vzwpix.com)
    r"could not be delivered to: ?<",  # KDDI au
    r"original mail as follows:",  # fml
    r"this is the mail system at host",  # Postfix
    r"i'?m afraid i wasn'?t able to deliver your message",  # qmail
    r"this message was created automatically by mail delivery software",  # Exim
    r"delivery to the following recipients? (failed|has been delayed)",  # Exchange
    r"the original message was received at",  # sendmail
)
