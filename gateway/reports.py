"""The summary report: what came in, what the bot did, how fast agents answered, and what the KB lacks."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rapidfuzz import fuzz, process

from core.model import DownstreamEvent, EventType

_OUTCOMES = ("answer", "suggest", "miss", "handoff")
# Handoffs that say the KB lacks an answer; asking for a human or a complaint says nothing about the KB.
_GAP_REASONS = frozenset({"no_match"})
_SIMILAR = 80  # rapidfuzz ratio (0-100) at which two normalized questions are one group
_EXAMPLES = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    start: datetime
    end: datetime  # exclusive
    tz: ZoneInfo
    inbox: str | None = None
    channel: str | None = None

    def __contains__(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def days(self) -> list[date]:
        first, last = self.start.astimezone(self.tz).date(), (self.end - timedelta(microseconds=1)).astimezone(self.tz)
        return [first + timedelta(days=n) for n in range((last.date() - first).days + 1)]


@dataclass(slots=True)
class _Group:
    key: str
    count: int = 0
    examples: list[str] = field(default_factory=list)
    last_seen: datetime | None = None
    channels: Counter[str] = field(default_factory=Counter)


def normalize_question(text: str) -> str:
    """Width, case and punctuation folded: 「怎么退款？」 and 「怎么退款」 are one question."""
    folded = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[\W_]+", "", folded)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: always one of the observed values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summarize(events: Iterable[DownstreamEvent], window: Window) -> dict[str, Any]:
    """The report over every event in the log; ``window`` picks what counts (by the time it happened)."""
    messages: dict[str, dict[str, Any]] = {}  # every message, for replies that point at their question
    tickets: list[dict[str, Any]] = []
    first_agent_reply: dict[str, datetime] = {}
    for event in events:
        if event.type is EventType.MESSAGE_CREATED:
            m = dict(event.data["message"])
            m["at"] = datetime.fromisoformat(m["created_at"])
            messages[m["id"]] = m
            if m["author"] == "agent" and m.get("ticket_id"):
                first_agent_reply.setdefault(m["ticket_id"], m["at"])
        elif event.type is EventType.TICKET_CREATED:
            t = dict(event.data["ticket"])
            t["at"] = datetime.fromisoformat(t["created_at"])
            tickets.append(t)

    def wanted(record: dict[str, Any]) -> bool:
        return (
            record["at"] in window
            and window.inbox in (None, record["inbox"])
            and window.channel in (None, record["channel"])
        )

    by_channel: dict[str, dict[str, int]] = defaultdict(lambda: {"inbound": 0, "outbound": 0})
    conversations: dict[str, set[tuple[str, int]]] = defaultdict(set)
    outcomes: Counter[str] = Counter()
    bot_episodes: set[tuple[str, int]] = set()
    answered_episodes: set[tuple[str, int]] = set()
    ticketed_episodes: set[tuple[str, int]] = set()
    daily: dict[tuple[date, str], Counter[str]] = defaultdict(Counter)
    groups: list[_Group] = []
    for m in messages.values():
        episode = (m["conversation_id"], int(m.get("episode", 1)))
        if m.get("ticket_id"):
            ticketed_episodes.add(episode)
        if not wanted(m):
            continue
        day = m["at"].astimezone(window.tz).date()
        by_channel[m["channel"]][m["direction"]] += 1
        if m["direction"] == "inbound":
            conversations[m["channel"]].add(episode)
            daily[(day, m["channel"])]["messages"] += 1
        outcome = m.get("meta", {}).get("outcome") if m["author"] == "bot" else None
        if outcome in _OUTCOMES:
            outcomes[outcome] += 1
            bot_episodes.add(episode)
            if outcome == "answer":
                answered_episodes.add(episode)
            daily[(day, m["channel"])][outcome] += 1
            reason = m["meta"].get("reason")
            if outcome == "miss" or (outcome == "handoff" and reason in _GAP_REASONS):
                question = messages.get(str(m.get("external_id", "")).removeprefix("reply:"))
                if question is not None and question["text"].strip():
                    _add_unanswered(groups, question)
    handoff_reasons: Counter[str] = Counter()
    waits: list[float] = []
    for t in tickets:
        if not wanted(t):
            continue
        handoff_reasons[str(t.get("handoff_reason") or "none")] += 1
        daily[(t["at"].astimezone(window.tz).date(), t["channel"])]["tickets"] += 1
        replied = first_agent_reply.get(t["id"])
        if replied is not None:
            waits.append((replied - t["at"]).total_seconds())
    # Deflected: the bot answered and no human was needed. A customer who gave up after a miss is not one.
    deflected = len(answered_episodes - ticketed_episodes)
    channels = sorted({*by_channel, *conversations, *(c for _, c in daily)})
    return {
        "from": window.start.isoformat(),
        "to": window.end.isoformat(),
        "timezone": str(window.tz),
        "filters": {"inbox": window.inbox, "channel": window.channel},
        "messages": {c: by_channel[c] for c in channels},
        "conversations": {c: len(conversations[c]) for c in channels},
        "bot": {
            "answered": outcomes["answer"],
            "suggested": outcomes["suggest"],
            "missed": outcomes["miss"],
            "handed_off": outcomes["handoff"],
            "conversations": len(bot_episodes),
            "deflected": deflected,
        },
        "deflection_rate": round(deflected / len(bot_episodes), 4) if bot_episodes else None,
        "handoff_reasons": dict(handoff_reasons.most_common()),
        "tickets": sum(handoff_reasons.values()),
        "first_response_s": {
            "p50": percentile(waits, 50),
            "p90": percentile(waits, 90),
            "answered_tickets": len(waits),
        },
        "unanswered": [
            {
                "question": g.examples[0],
                "count": g.count,
                "examples": g.examples,
                "channels": dict(g.channels),
                "last_seen": g.last_seen.isoformat() if g.last_seen else None,
            }
            for g in sorted(groups, key=lambda g: (-g.count, g.examples[0]))
        ],
        "daily": [
            {
                "date": day.isoformat(),
                "channels": {c: {k: daily[(day, c)][k] for k in ("messages", *_OUTCOMES, "tickets")} for c in channels},
            }
            for day in window.days()
        ],
    }


def _add_unanswered(groups: list[_Group], question: dict[str, Any]) -> None:
    text = " ".join(str(question["text"]).split())
    key = normalize_question(text) or text
    found = process.extractOne(key, [g.key for g in groups], scorer=fuzz.ratio, score_cutoff=_SIMILAR)
    group = groups[found[2]] if found is not None else None
    if group is None:
        group = _Group(key=key)
        groups.append(group)
    group.count += 1
    group.channels[str(question["channel"])] += 1
    if text not in group.examples and len(group.examples) < _EXAMPLES:
        group.examples.append(text)
    at = question["at"]
    if group.last_seen is None or at > group.last_seen:
        group.last_seen = at


def csv_rows(report: dict[str, Any], table: str) -> list[list[str]]:
    """``daily``: one row per day and channel; ``unanswered``: one row per group of questions."""
    if table == "unanswered":
        rows = [["question", "count", "examples", "last_seen"]]
        for g in report["unanswered"]:
            rows.append([g["question"], str(g["count"]), " | ".join(g["examples"]), g["last_seen"] or ""])
        return rows
    header = ["date", "channel", "messages", *_OUTCOMES, "tickets"]
    rows = [header]
    for day in report["daily"]:
        for channel, counts in day["channels"].items():
            rows.append([day["date"], channel, *(str(counts[k]) for k in header[2:])])
    return rows
