"""SLA clocks: which policy a ticket gets, when each target is due and warned about, pause, resume and breach."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from core.model import SlaTarget, TicketSla
from core.rules_config import RuleSet, SlaConfig, SlaPolicy, duration_parts
from normalizer.rules.calendar import Calendar, calendar_for
from normalizer.rules.routing import Condition, Facts

_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}
WECHAT_WINDOW = "wechat_window"


def target_seconds(text: str, calendar: Calendar) -> float:
    """Working seconds of a target: ``2h`` is two working hours, ``2d`` two working days of this calendar."""
    amount, unit = duration_parts(text)
    return amount * (calendar.day_seconds if unit == "d" else _UNIT_S[unit])


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """One policy ready to run: its clock and its targets in working seconds."""

    name: str
    calendar_name: str
    calendar: Calendar
    condition: Condition
    first_response_s: float | None
    next_response_s: float | None
    resolution_s: float | None
    on_breach: RuleSet | None
    warn_at: float

    def seconds(self, target: SlaTarget) -> float | None:
        return {
            SlaTarget.FIRST_RESPONSE: self.first_response_s,
            SlaTarget.NEXT_RESPONSE: self.next_response_s,
            SlaTarget.RESOLUTION: self.resolution_s,
        }[target]


def plans(sla: SlaConfig) -> tuple[Plan, ...]:
    out: list[Plan] = []
    for policy in sla.policies:
        name = policy.calendar or sla.calendar
        calendar = calendar_for(name, sla)
        out.append(
            Plan(
                name=policy.name,
                calendar_name=name,
                calendar=calendar,
                condition=Condition.of(policy.when),
                first_response_s=_seconds(policy, "first_response", calendar),
                next_response_s=_seconds(policy, "next_response", calendar),
                resolution_s=_seconds(policy, "resolution", calendar),
                on_breach=policy.on_breach,
                warn_at=sla.warn_at,
            )
        )
    return tuple(out)


def _seconds(policy: SlaPolicy, attr: str, calendar: Calendar) -> float | None:
    text = getattr(policy, attr)
    return None if text is None else target_seconds(text, calendar)


def choose(policies: Sequence[Plan], facts: Facts, *, max_chars: int) -> Plan | None:
    """The first policy whose ``when`` holds."""
    return next((p for p in policies if p.condition.holds(facts, max_chars=max_chars)), None)


def _due(plan: Plan, target: SlaTarget, start: datetime, seconds: float | None = None) -> tuple[datetime, datetime]:
    total = plan.seconds(target) if seconds is None else seconds
    assert total is not None
    return plan.calendar.add(start, total), plan.calendar.add(start, total * plan.warn_at)


def start(plan: Plan, at: datetime, *, reply_window_closes_at: datetime | None = None) -> TicketSla:
    """The clocks of a new ticket. A channel whose reply window closes (WeChat: 48 hours after the customer's
    last message) makes the first response due then at the latest."""
    sla = TicketSla(policy=plan.name, calendar=plan.calendar_name)
    if plan.first_response_s is not None:
        due, warn = _due(plan, SlaTarget.FIRST_RESPONSE, at)
        if reply_window_closes_at is not None and reply_window_closes_at < due:
            span = (reply_window_closes_at - at) * plan.warn_at
            due, warn = reply_window_closes_at, min(warn, at + span)
            sla = dataclasses.replace(sla, first_response_capped=WECHAT_WINDOW)
        sla = dataclasses.replace(sla, first_response_due_at=due, first_response_warn_at=warn)
    if plan.resolution_s is not None:
        due, warn = _due(plan, SlaTarget.RESOLUTION, at)
        sla = dataclasses.replace(sla, resolution_due_at=due, resolution_warn_at=warn)
    return sla


def _set(sla: TicketSla, target: SlaTarget, due: datetime | None, warn: datetime | None) -> TicketSla:
    kept = tuple(t for t in sla.warned if t is not target)
    if target is SlaTarget.FIRST_RESPONSE:
        return dataclasses.replace(sla, first_response_due_at=due, first_response_warn_at=warn, warned=kept)
    if target is SlaTarget.NEXT_RESPONSE:
        return dataclasses.replace(sla, next_response_due_at=due, next_response_warn_at=warn, warned=kept)
    return dataclasses.replace(sla, resolution_due_at=due, resolution_warn_at=warn, warned=kept)


def agent_replied(sla: TicketSla, at: datetime) -> TicketSla:
    """An agent answered: the first response (if still open) and any next response are met."""
    sla = _set(sla, SlaTarget.NEXT_RESPONSE, None, None)
    if sla.first_responded_at is None:
        sla = _set(dataclasses.replace(sla, first_responded_at=at), SlaTarget.FIRST_RESPONSE, None, None)
    return sla


def customer_wrote(
    sla: TicketSla, plan: Plan | None, at: datetime, *, reply_window_closes_at: datetime | None = None
) -> TicketSla:
    """A customer message after the first reply starts the next-response clock, unless one already runs; on
    WeChat it is due before the reply window this message opened closes."""
    if plan is None or plan.next_response_s is None or sla.first_responded_at is None:
        return sla
    if sla.next_response_due_at is not None:
        return sla
    due, warn = _due(plan, SlaTarget.NEXT_RESPONSE, at)
    if reply_window_closes_at is not None and reply_window_closes_at < due:
        due, warn = reply_window_closes_at, min(warn, at + (reply_window_closes_at - at) * plan.warn_at)
    return _set(sla, SlaTarget.NEXT_RESPONSE, due, warn)


def pause(sla: TicketSla, plan: Plan | None, at: datetime) -> TicketSla:
    """``pending`` (waiting on the customer): the resolution clock stops, keeping the working time it had left."""
    if sla.paused:
        return sla
    left = None
    if sla.resolution_due_at is not None and plan is not None:
        left = plan.calendar.elapsed(at, sla.resolution_due_at) if sla.resolution_due_at > at else 0.0
    paused = _set(sla, SlaTarget.RESOLUTION, None, None) if left is not None else sla
    return dataclasses.replace(paused, paused=True, resolution_left_s=left)


def resume(sla: TicketSla, plan: Plan | None, at: datetime) -> TicketSla:
    """Back from ``pending``: the resolution target is due after the working time it had left."""
    if not sla.paused:
        return sla
    resumed = dataclasses.replace(sla, paused=False, resolution_left_s=None)
    if sla.resolution_left_s is None or plan is None or plan.resolution_s is None:
        return resumed
    left = sla.resolution_left_s
    due = plan.calendar.add(at, left)
    # The warning keeps its place in the target: it goes out once (1 - warn_at) of the whole target is left.
    before_warning = left - plan.resolution_s * (1 - plan.warn_at)
    warned = SlaTarget.RESOLUTION in sla.warned
    warn = plan.calendar.add(at, before_warning) if before_warning > 0 and not warned else None
    resumed = dataclasses.replace(resumed, resolution_due_at=due, resolution_warn_at=warn)
    if warn is not None:
        resumed = dataclasses.replace(resumed, warned=tuple(t for t in sla.warned if t is not SlaTarget.RESOLUTION))
    return resumed


def finished(sla: TicketSla) -> TicketSla:
    """Resolved or closed: no clock runs any more."""
    stopped = sla
    for target in SlaTarget:
        stopped = _set(stopped, target, None, None)
    return dataclasses.replace(stopped, warned=sla.warned, paused=False, resolution_left_s=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fired:
    target: SlaTarget
    kind: str  # "warning" or "breach"
    due_at: datetime


def due_now(sla: TicketSla, now: datetime) -> list[Fired]:
    """Warnings and breaches due by ``now`` that were not recorded yet (a breach needs no warning first)."""
    fired: list[Fired] = []
    for target in SlaTarget:
        due: datetime | None = getattr(sla, f"{target}_due_at")
        warn: datetime | None = getattr(sla, f"{target}_warn_at")
        if due is None:
            continue
        if due <= now and target not in sla.breached:
            fired.append(Fired(target=target, kind="breach", due_at=due))
        elif warn is not None and warn <= now and target not in sla.warned and target not in sla.breached:
            fired.append(Fired(target=target, kind="warning", due_at=due))
    return fired


def record(sla: TicketSla, fired: Sequence[Fired]) -> TicketSla:
    warned = [*sla.warned]
    breached = [*sla.breached]
    for f in fired:
        (breached if f.kind == "breach" else warned).append(f.target)
    return dataclasses.replace(sla, warned=tuple(dict.fromkeys(warned)), breached=tuple(dict.fromkeys(breached)))


def at_risk(sla: TicketSla | None, now: datetime) -> bool:
    """A target's warning has gone out (or is due) and it is not breached yet."""
    if sla is None:
        return False
    return any(f.kind == "warning" for f in due_now(sla, now)) or sla.flag() == "at_risk"
