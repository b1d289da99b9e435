"""Ticket status questions ("我的工单进度", "HL-000123 到哪了", "where is my ticket"): recognised before FAQ matching.

The FAQ index answers "我的工单处理到哪了" with the order-status entry, and complaint wording in "我上周投诉的
问题有结果了吗" would open a new high-priority ticket; both are questions about a ticket that exists, which only
the store can answer. Recognition is pure and cheap, so it runs on every customer message, handed-off or not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import tzinfo

from core.model import Ticket, TicketStatus

# HL-000123, hl 123, HL—123: a number written by hand. Up to 9 digits; more is no number of ours.
_NUMBER = re.compile(r"(?<![a-z0-9])hl\s*[-_－—–]?\s*(\d{1,12})(?![0-9])", re.IGNORECASE)
# "HL-" followed by something that is not a number: the customer meant a ticket and wrote it wrong.
_BROKEN_NUMBER = re.compile(r"(?<![a-z0-9])hl\s*[-_－—–]\s*(?!\d)[a-z]{1,12}", re.IGNORECASE)

# What the question is about: a ticket, a complaint, a case already reported (never an order or a parcel).
_SUBJECT_ZH = r"(工单|投诉|报修|售后|申请|反馈|案件|问题|事情|事)"
_PROGRESS_ZH = (
    r"(进度|进展|到哪|到哪里|哪一步|结果|状态|处理(得|的)?(怎么样|如何|好了|完了)|"
    r"怎么样了|有回复|有回音|有下文|处理了吗|解决了吗|办好了)"
)
_ZH = re.compile(
    rf"(工单|投诉|报修|售后申请).{{0,12}}{_PROGRESS_ZH}|"
    rf"(查|查询|看看|问问).{{0,4}}(工单|投诉)|"
    rf"(上次|之前|上周|前几天|昨天|前天|刚才|那个).{{0,10}}{_SUBJECT_ZH}.{{0,10}}{_PROGRESS_ZH}"
)
_EN = re.compile(
    r"\b(ticket|case|complaint|request)s?\b.{0,30}\b(status|progress|update|news|resolved|done)\b|"
    r"\b(status|progress|update|news)\b.{0,30}\b(ticket|case|complaint|request)s?\b|"
    r"\bwhere\b.{0,20}\b(my|the|our)\s+(ticket|case|complaint|request)s?\b|"
    r"\bany\s+(news|update)s?\b.{0,20}\b(on|about)\b.{0,20}\b(ticket|case|complaint)s?\b",
    re.IGNORECASE,
)
# With a ticket number, a short word of asking is enough ("HL-000123 到哪了", "HL-000123?").
_ASKING = re.compile(
    r"进度|进展|到哪|状态|结果|怎么样|如何|查|处理|好了吗|status|progress|update|where|\?|？", re.IGNORECASE
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusQuestion:
    """A question about the customer's tickets; ``number`` when one was named, ``malformed`` when it was
    named in a form that is no ticket number of ours."""

    number: str | None = None
    malformed: bool = False


def status_question(text: str) -> StatusQuestion | None:
    """The status question in ``text``, or None for anything else."""
    compact = text.strip()
    if not compact or len(compact) > 300:  # a long message is a new matter, not a status question
        return None
    found = _NUMBER.search(compact)
    if found is not None:
        digits = found.group(1)
        rest = (compact[: found.start()] + compact[found.end() :]).strip(" \t,，.。!！")
        if rest and not (_ASKING.search(rest) or _ZH.search(compact) or _EN.search(compact)):
            return None
        if len(digits) > 9:
            return StatusQuestion(number=found.group(0), malformed=True)
        return StatusQuestion(number=f"HL-{int(digits):06d}")
    broken = _BROKEN_NUMBER.search(compact)
    if broken is not None and (_ASKING.search(compact) or _ZH.search(compact)):
        return StatusQuestion(number=broken.group(0), malformed=True)
    if _ZH.search(compact) or _EN.search(compact):
        return StatusQuestion()
    return None


_STATUS_NAMES: dict[TicketStatus, str] = {
    TicketStatus.NEW: "已受理，等待客服处理 / received, waiting for an agent",
    TicketStatus.OPEN: "处理中 / in progress",
    TicketStatus.PENDING: "等待您补充信息 / waiting for your reply",
    TicketStatus.RESOLVED: "已解决 / resolved",
    TicketStatus.CLOSED: "已关闭 / closed",
}


def status_name(status: TicketStatus) -> str:
    return _STATUS_NAMES.get(status, str(status))


def describe_ticket(ticket: Ticket, *, queue: str | None, timezone: tzinfo) -> str:
    """One ticket as the customer is told: number, status, queue (when there is one) and last update."""
    local = ticket.updated_at.astimezone(timezone)
    parts = [f"工单 Ticket {ticket.number}：{status_name(ticket.status)}"]
    if queue:
        parts.append(f"队列 Queue：{queue}")
    parts.append(f"最后更新 Last update：{local:%Y-%m-%d %H:%M}")
    return "；".join(parts)


def status_answer(
    question: StatusQuestion, tickets: list[Ticket], *, queue_of: dict[str, str], timezone: tzinfo, limit: int = 3
) -> str:
    """The answer from the customer's own ``tickets`` (never anyone else's): the one named, else the active
    ones (most recently updated first), else the latest one."""
    if question.malformed:
        return (
            f"未找到工单 {question.number}，工单号形如 HL-000123。/ "
            f"No ticket {question.number} found; numbers look like HL-000123."
        )
    if question.number is not None:
        named = next((t for t in tickets if t.number == question.number), None)
        if named is None:
            return f"未找到工单 {question.number}。/ No ticket {question.number} found."
        return describe_ticket(named, queue=queue_of.get(named.id), timezone=timezone)
    if not tickets:
        return "您目前没有工单。/ You have no tickets with us."
    ordered = sorted(tickets, key=lambda t: t.updated_at, reverse=True)
    active = [t for t in ordered if t.status.is_active]
    shown = active[:limit] or ordered[:1]
    lines = [describe_ticket(t, queue=queue_of.get(t.id), timezone=timezone) for t in shown]
    if len(active) > limit:
        lines.append(f"另有 {len(active) - limit} 个进行中的工单。/ {len(active) - limit} more open.")
    return "\n".join(lines)
