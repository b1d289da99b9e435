"""Loaders and scorers for the shared email corpora (read at test time, never copied into the repo)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from connectors.email.auto import AutoKind
from connectors.email.parse import MailParseError, ParsedMail, parse_mail
from tests.conftest import SHARED

CORPORA = SHARED / "corpora" / "email"
SISIMAI = CORPORA / "bounces-sisimai"
ZAMMAD = CORPORA / "zammad" / "test" / "data" / "mail"
TALON = CORPORA / "replies-talon"
# Files that are mail (the reply corpora also hold bare bodies and Ruby/Go tests).
_NOT_MAIL = {".md", ".json", ".yml", ".rb", ".go", ".py", ".html", ".txt_reply"}


def mail_files() -> list[Path]:
    if not CORPORA.exists():
        return []
    return sorted(
        p for p in CORPORA.rglob("*") if p.is_file() and p.suffix not in _NOT_MAIL and not p.name.endswith("_text")
    )


def try_parse(raw: bytes) -> ParsedMail | str:
    """A ParsedMail, or the reason it would be quarantined; any other exception escapes (a test failure)."""
    try:
        return parse_mail(raw)
    except MailParseError as exc:
        return str(exc)


def load_zammad_yml(path: Path) -> dict[str, Any]:
    """Zammad's Ruby-YAML dump: drop the Ruby tags, keep the plain data (``!binary`` is base64)."""
    text = re.sub(r"!ruby/\S+", "", path.read_text(encoding="utf-8"))
    text = text.replace("!binary", "")
    data = yaml.safe_load(text)
    return data if isinstance(data, dict) else {}


def _emails(value: str) -> set[str]:
    return {m.lower() for m in re.findall(r"[\w.+'=-]+@[\w.-]+", value or "")}


def zammad_mismatches(parsed: ParsedMail, expected: dict[str, Any]) -> list[str]:
    """What our parse gets wrong against Zammad's expectation (from, to, cc, subject, attachment names).

    ``message.html`` is left out: it is Zammad keeping the original HTML body as a file, which we keep as
    ``ParsedMail.html`` instead.
    """
    problems: list[str] = []
    if "from_email" in expected and parsed.sender.email.lower() != str(expected["from_email"]).lower():
        problems.append(f"from_email {parsed.sender.email!r} != {expected['from_email']!r}")
    if "from_display_name" in expected:
        want = " ".join(str(expected["from_display_name"] or "").split()).strip("\"'")
        got = " ".join(parsed.sender.name.split())
        if got != want:
            problems.append(f"from_display_name {got!r} != {want!r}")
    if "subject" in expected:
        want = " ".join(str(expected["subject"] or "").split())
        got = " ".join(parsed.subject.split())
        if got != want:
            problems.append(f"subject {got!r} != {want!r}")
    for key, ours in (("to", parsed.to), ("cc", parsed.cc)):
        if key in expected:
            want_set = _emails(str(expected[key]))
            got_set = {a.email.lower() for a in ours}
            if want_set != got_set:
                problems.append(f"{key} {sorted(got_set)} != {sorted(want_set)}")
    if "attachments" in expected or parsed.attachments:
        want_names = sorted(
            str(a.get("filename")) for a in expected.get("attachments") or [] if a.get("filename") != "message.html"
        )
        got_names = sorted(a.filename for a in parsed.attachments)
        if "attachments" in expected and got_names != want_names:
            problems.append(f"attachments {got_names} != {want_names}")
    return problems


def sisimai_expected() -> dict[str, list[dict[str, Any]]]:
    data: dict[str, list[dict[str, Any]]] = json.loads((SISIMAI / "expected.json").read_text(encoding="utf-8"))
    return data


def expected_kind(reason: str) -> AutoKind:
    return {"vacation": AutoKind.AUTO_REPLY, "feedback": AutoKind.COMPLAINT}.get(reason, AutoKind.BOUNCE)


def sisimai_score() -> Iterator[tuple[str, int, bool, str]]:
    """(file, index, matched, detail) per expected entry: kind right, and for bounces hard/soft right."""
    for name, entries in sisimai_expected().items():
        path = SISIMAI / "bsd" / name
        if not path.exists():
            continue
        parsed = try_parse(path.read_bytes())
        for entry in entries:
            kind = expected_kind(entry["reason"])
            if isinstance(parsed, str):
                yield name, entry["index"], False, f"quarantined: {parsed}"
                continue
            report = parsed.auto
            if report.kind is not kind:
                yield name, entry["index"], False, f"kind {report.kind} != {kind} ({entry['reason']})"
                continue
            if kind is AutoKind.BOUNCE:
                rcpts = report.recipients
                i = entry["index"] - 1
                hard = rcpts[i].hard if i < len(rcpts) else report.hard
                if hard != entry["hardbounce"]:
                    yield name, entry["index"], False, f"hard {hard} != {entry['hardbounce']} ({entry['reason']})"
                    continue
            yield name, entry["index"], True, ""
