"""Operator rules in config.yaml (``extract``, ``routing``, ``queues``, ``sla``): validated at load, paths named."""

from __future__ import annotations

import re
from datetime import date, time
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


def _duration(value: str) -> str:
    m = _DURATION.match(value)
    if m is None or float(m.group(1)) <= 0:
        raise ValueError("a duration is a positive number with s, m, h or d, e.g. 90s, 30m, 2h, 2d")
    return value


Regex = Annotated[str, AfterValidator(_regex)]
DurationText = Annotated[str, AfterValidator(_duration)]
Name = Annotated[str, Field(pattern=_NAME)]


def duration_parts(text: str) -> tuple[float, str]:
    """``"2h"`` -> (2.0, "h"); the text was checked at load."""
    m = _DURATION.match(text)
    assert m is not None, text
    return float(m.group(1)), m.group(2)


OneOrMany = str | tuple[str, ...]


class When(_Model):
    """A rule's condition: every key given must hold (strings and lists: any of them)."""

    text: Regex | None = None  # searched in the customer's text (subject included), case-insensitive
    channel: OneOrMany | None = None
    inbox: OneOrMany | None = None
    fields: dict[str, Regex] | None = None  # each named field present and matching ('' or '.*': present)
    vip: bool | None = None
    priority: OneOrMany | None = None
    category: OneOrMany | None = None
    language: OneOrMany | None = None
    business_hours: bool | None = None  # inside (true) or outside (false) the SLA calendar's working time
    contact_tags: OneOrMany | None = None  # any of the contact's flags/tags
    reason: OneOrMany | None = None  # why the ticket exists (no_match, email, missed_call, ...)


_PRIORITIES = ("low", "normal", "high", "urgent")


class RuleSet(_Model):
    """What a matching rule changes on the ticket; tags and skills add up, the others: the last rule wins."""

    queue: Name | None = None
    tags: tuple[str, ...] = ()
    priority: Literal["low", "normal", "high", "urgent"] | None = None
    skills: tuple[str, ...] = ()
    assignee: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    category: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class RoutingRule(_Model):
    name: Name
    when: When = When()
    set: RuleSet = RuleSet()
    stop: bool = False


class QueueConfig(_Model):
    name: Name
    agents: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...] = ()
    assign: Literal["round_robin", "least_open"] = "round_robin"


class LunchBreak(_Model):
    start: time
    end: time

    @model_validator(mode="after")
    def _ordered(self) -> LunchBreak:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class SlaHours(_Model):
    """Working time SLA clocks count in (by default Mon-Fri 09:00-18:00 in Asia/Shanghai)."""

    timezone: str = "Asia/Shanghai"
    days: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
    start: time = time(9, 0)
    end: time = time(18, 0)
    lunch: LunchBreak | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from core.config import BusinessHours

        return BusinessHours._known_zone(value)

    @model_validator(mode="after")
    def _ordered(self) -> SlaHours:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.lunch is not None and not (self.start < self.lunch.start and self.lunch.end < self.end):
            raise ValueError("lunch must lie inside start-end")
        return self


Calendar = Literal["24x7", "default"]


class SlaPolicy(_Model):
    name: Name
    when: When = When()
    calendar: Calendar | None = None  # this policy's clock; default: sla.calendar
    first_response: DurationText | None = None
    next_response: DurationText | None = None  # each customer message waiting for an agent after the first reply
    resolution: DurationText | None = None
    on_breach: RuleSet | None = None


class SlaConfig(_Model):
    calendar: Calendar = "default"  # "24x7", or business hours with the country's holidays and make-up workdays
    hours: SlaHours = SlaHours()
    # Public holidays and make-up workdays (调休) of this country (the holidays library); "" for none.
    holidays: Annotated[str, Field(pattern=r"^([A-Z]{2})?$")] = "CN"
    days_off: tuple[date, ...] = ()  # company days off, on top of the public holidays
    workdays: tuple[date, ...] = ()  # extra working days (a weekend the company works)
    policies: tuple[SlaPolicy, ...] = ()
    warn_at: Annotated[float, Field(gt=0, lt=1)] = 0.8
    scan_interval_s: Annotated[float, Field(gt=0, le=5)] = 2.0  # how often due warnings and breaches are looked for
    wechat_window_h: Annotated[float, Field(gt=0, le=48)] = 48.0  # WeChat's customer-service reply window

    @field_validator("holidays")
    @classmethod
    def _known_country(cls, value: str) -> str:
        if value:
            import holidays

            if value not in holidays.list_supported_countries():
                raise ValueError(f"the holidays library knows no country {value!r}")
        return value


class RulesLimits(_Model):
    """How much of a message the operator's regular expressions see: a slow pattern must not stall intake."""

    max_text_chars: Annotated[int, Field(ge=100, le=100_000)] = 4000


def check_rule_references(
    routing: tuple[RoutingRule, ...], queues: tuple[QueueConfig, ...], sla: SlaConfig
) -> list[str]:
    """Cross-references pydantic cannot see per field: each names its key path."""
    problems: list[str] = []
    names = [q.name for q in queues]
    for i, q in enumerate(queues):
        if q.name in names[:i]:
            problems.append(f"queues[{i}].name: queue {q.name!r} is defined twice")
    known = ", ".join(names) or "none defined"

    def check_queue(path: str, queue: str | None) -> None:
        if queue is not None and queue not in names:
            problems.append(f"{path}: unknown queue {queue!r} (queues: {known})")

    for i, rule in enumerate(routing):
        check_queue(f"routing[{i}].set.queue", rule.set.queue)
        for priority in _many(rule.when.priority):
            if priority not in _PRIORITIES:
                problems.append(f"routing[{i}].when.priority: unknown priority {priority!r}")
    seen: set[str] = set()
    for i, policy in enumerate(sla.policies):
        if policy.name in seen:
            problems.append(f"sla.policies[{i}].name: policy {policy.name!r} is defined twice")
        seen.add(policy.name)
        if policy.on_breach is not None:
            check_queue(f"sla.policies[{i}].on_breach.queue", policy.on_breach.queue)
    rule_names = [r.name for r in routing]
    for i, name in enumerate(rule_names):
        if name in rule_names[:i]:
            problems.append(f"routing[{i}].name: rule {name!r} is defined twice")
    return problems


def _many(value: OneOrMany | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else value
