"""Authentication-Results (RFC 8601) read from a trusted server: did the From domain pass DMARC, or DKIM or SPF
aligned with it."""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

# A header longer than this is not something our own MTA wrote; it is ignored rather than parsed.
MAX_HEADER_CHARS = 8_000


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodResult:
    """One ``method=result`` with its ``ptype.property=value`` pairs, e.g. dkim=pass header.d=example.org."""

    method: str
    result: str
    props: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResults:
    authserv_id: str
    results: tuple[MethodResult, ...] = ()


class SenderAuth(enum.StrEnum):
    """What a trusted server says about the From domain: passed (DMARC, or DKIM aligned), failed, or nothing."""

    PASS = "pass"
    FAIL = "fail"
    NONE = "none"


def _tokens(value: str) -> list[str]:
    """Split into words, ``=`` and ``;``, dropping (nested) comments and unquoting quoted strings."""
    out: list[str] = []
    word: list[str] = []
    depth = 0
    i = 0

    def flush() -> None:
        if word:
            out.append("".join(word))
            word.clear()

    while i < len(value):
        ch = value[i]
        if depth:
            if ch == "\\":
                i += 1
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
        elif ch == "(":
            flush()
            depth = 1
        elif ch == '"':
            i += 1
            while i < len(value) and value[i] != '"':
                if value[i] == "\\" and i + 1 < len(value):
                    i += 1
                word.append(value[i])
                i += 1
            flush() if word else out.append("")
        elif ch in "=;":
            flush()
            out.append(ch)
        elif ch.isspace():
            flush()
        else:
            word.append(ch)
        i += 1
    flush()
    return out


def parse_authentication_results(value: str) -> AuthResults | None:
    """Parse one header value; None when it is not well formed (an unparsable result proves nothing)."""
    if len(value) > MAX_HEADER_CHARS:
        return None
    parts: list[list[str]] = [[]]
    for token in _tokens(value):
        if token == ";":
            parts.append([])
        else:
            parts[-1].append(token)
    head = parts[0]
    if not head or head[0] == "=":
        return None
    authserv_id = head[0].lower()  # an optional version number may follow; it carries nothing we need
    results: list[MethodResult] = []
    for part in parts[1:]:
        if not part:
            continue
        if part == ["none"]:
            continue  # "no authentication was done"
        if len(part) < 3 or part[1] != "=" or part[2] == "=":
            return None
        method = part[0].partition("/")[0]  # method/version=result
        result, rest = part[2], part[3:]
        props: dict[str, str] = {}
        # reason=value and ptype.property=value pairs
        while len(rest) >= 3 and rest[1] == "=":
            props[rest[0].lower()] = rest[2]
            rest = rest[3:]
        if rest:
            return None
        results.append(MethodResult(method=method.lower(), result=result.lower(), props=props))
    return AuthResults(authserv_id=authserv_id, results=tuple(results))


def _aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment without a public-suffix list: the same domain, or one a parent of the other."""
    d, f = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if not d or not f:
        return False
    return d == f or f.endswith("." + d) or d.endswith("." + f)


def sender_auth(headers: Iterable[str], *, trusted: Collection[str], from_domain: str) -> SenderAuth:
    """The verdict of the trusted servers' results on ``from_domain``; headers from other servers are ignored.

    Only a server we run (or our provider) can be believed: anyone can write an Authentication-Results header,
    so the MTA must strip incoming ones that carry its own authserv-id (RFC 8601 §5).
    """
    wanted = {t.lower() for t in trusted}
    if not wanted or not from_domain:
        return SenderAuth.NONE
    verdict = SenderAuth.NONE
    for value in headers:
        parsed = parse_authentication_results(value)
        if parsed is None or parsed.authserv_id not in wanted:
            continue
        for res in parsed.results:
            if res.method == "dmarc":
                header_from = res.props.get("header.from", from_domain)
                if header_from.lower().rstrip(".") != from_domain.lower().rstrip("."):
                    continue
                if res.result == "pass":
                    verdict = SenderAuth.PASS if verdict is not SenderAuth.FAIL else verdict
                elif res.result in ("fail", "quarantine", "reject"):
                    return SenderAuth.FAIL  # an explicit failure outweighs any pass
            elif res.method == "dkim" and res.result == "pass":
                signer = res.props.get("header.d") or res.props.get("header.i", "").rpartition("@")[2]
                if _aligned(signer, from_domain) and verdict is SenderAuth.NONE:
                    verdict = SenderAuth.PASS
            elif res.method == "spf" and res.result == "pass":
                # SPF vouches for the envelope sender; aligned with From: it is what DMARC itself accepts.
                envelope = res.props.get("smtp.mailfrom", "").rpartition("@")[2]
                if _aligned(envelope, from_domain) and verdict is SenderAuth.NONE:
                    verdict = SenderAuth.PASS
    return verdict


def checked_by_trusted(headers: Iterable[str], *, trusted: Collection[str]) -> bool:
    """Whether a trusted server wrote its results on this mail, whatever they were.

    Such a server checks every mail it takes in, so when it is configured and said nothing that passes, the From:
    address is only claimed. A mail it never saw (one put into the mailbox another way) is not judged by it.
    """
    wanted = {t.lower() for t in trusted}
    if not wanted:
        return False
    for value in headers:
        parsed = parse_authentication_results(value)
        if parsed is not None and parsed.authserv_id in wanted:
            return True
    return False
