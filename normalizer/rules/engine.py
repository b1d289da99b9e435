"""The operator's rules compiled once from config, and what they make of a ticket: fields, routing, SLA."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from core.config import Config
from core.model import Channel, Priority, Ticket, TicketStatus
from core.rules_config import QueueConfig, RuleSet, SlaConfig
from normalizer.rules import sla as sla_clock
from normalizer.rules.calendar import Calendar, calendar_for, warm_up
from normalizer.rules.extract import compile_patterns, extract_fields, merge_fields
from normalizer.rules.routing import CompiledRule, Facts, compile_rules, route
from normalizer.rules.sla import Plan

_CJK = re.compile(r"[\u3400-\u9fff]")


def language_of(text: str) -> str:
    """zh when the text has Chinese characters, else en (the normalizer's answer wins when it has one)."""
    return "zh" if _CJK.search(text) else "en"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRules:
    patterns: Mapping[str, re.Pattern[str]]
    routing: tuple[CompiledRule, ...]
    queues: Mapping[str, QueueConfig]
    plans: tuple[Plan, ...]
    hours: Calendar
    sla: SlaConfig
    max_chars: int

    @classmethod
    def from_config(cls, config: Config) -> ServiceRules:
        return cls(
            patterns=compile_patterns(config.extract),
            routing=compile_rules(config.routing),
            queues={q.name: q for q in config.queues},
            plans=sla_clock.plans(config.sla),
            hours=calendar_for("default", config.sla),
            sla=config.sla,
            max_chars=config.rules.max_text_chars,
        )

    @property
    def empty(self) -> bool:
        return not (self.patterns or self.routing or self.plans)

    def warm_up(self, today: date) -> None:
        """Blocking file reads (timezone, holiday tables) done once, off the event loop."""
        for calendar in (self.hours, *(p.calendar for p in self.plans)):
            warm_up(calendar, today)

    def plan(self, name: str | None) -> Plan | None:
        return next((p for p in self.plans if p.name == name), None)

    def fields(self, texts: Sequence[str], earlier: Mapping[str, str] | None = None) -> dict[str, str]:
        found: dict[str, str] = dict(earlier or {})
        for text in texts:
            found = merge_fields(found, extract_fields(text, self.patterns, max_chars=self.max_chars).items())
        return found


@dataclass(frozen=True, slots=True, kw_only=True)
class Customer:
    """What the rules know about the customer and their words, gathered by intake."""

    texts: tuple[str, ...]  # the customer's messages up to the first agent reply, subject first
    new_texts: tuple[str, ...] | None = None  # those not yet looked at for fields (None: all of them)
    vip: bool
    tags: tuple[str, ...]
    language: str | None
    category: str | None  # from the FAQ entry the bot matched or suggested


def assess(rules: ServiceRules, ticket: Ticket, customer: Customer, now: datetime, *, new: bool) -> Ticket:
    """The ticket with the rules applied: fields, category, language, routing (and queue, priority, tags,
    skills, assignee) and, for a new ticket, its SLA clocks. A routing rule never lowers what an agent set:
    on an existing ticket an assignee stays."""
    fields = rules.fields(customer.texts if customer.new_texts is None else customer.new_texts, ticket.fields)
    text = "\n".join(customer.texts)
    language = customer.language or ticket.language or language_of(text)
    facts = Facts(
        text=text,
        channel=str(ticket.channel),
        inbox=ticket.inbox,
        fields=fields,
        vip=customer.vip,
        priority=str(ticket.priority),
        category=ticket.category or customer.category,
        language=language,
        business_hours=rules.hours.is_working(now),
        contact_tags=customer.tags,
        reason=str(ticket.handoff_reason) if ticket.handoff_reason else None,
    )
    routed = route(rules.routing, facts, max_chars=rules.max_chars)
    updated = dataclasses.replace(
        ticket,
        fields=fields,
        language=language,
        category=routed.category or facts.category,
        queue=routed.queue or ticket.queue,
        priority=Priority(routed.priority) if routed.priority else ticket.priority,
        tags=_union(ticket.tags, routed.tags),
        skills=_union(ticket.skills, routed.skills),
        assignee=ticket.assignee or routed.assignee,
        routing=_union(ticket.routing, routed.fired),
    )
    # The policy is chosen at creation, and again while no agent has answered: a later message may show a
    # complaint or a VIP. A changed policy's clocks run from the ticket's creation.
    unanswered = ticket.sla is None or ticket.sla.first_responded_at is None
    if new or (unanswered and ticket.status is TicketStatus.NEW):
        chosen = sla_clock.choose(
            rules.plans,
            dataclasses.replace(facts, priority=str(updated.priority), category=updated.category),
            max_chars=rules.max_chars,
        )
        current = ticket.sla.policy if ticket.sla is not None else None
        if chosen is not None and (new or chosen.name != current):
            start = now if new else ticket.created_at
            # WeChat lets us answer only within 48 hours of the customer's last message (this one).
            wechat = ticket.channel is Channel.WECHAT
            window = now + timedelta(hours=rules.sla.wechat_window_h) if wechat else None
            updated = dataclasses.replace(updated, sla=sla_clock.start(chosen, start, reply_window_closes_at=window))
    return updated


def apply_rule_set(ticket: Ticket, changes: RuleSet) -> Ticket:
    """An ``on_breach`` escalation: the same changes a routing rule's ``set`` makes."""
    return dataclasses.replace(
        ticket,
        queue=changes.queue or ticket.queue,
        priority=Priority(changes.priority) if changes.priority else ticket.priority,
        tags=_union(ticket.tags, changes.tags),
        skills=_union(ticket.skills, changes.skills),
        assignee=changes.assignee or ticket.assignee,
        category=changes.category or ticket.category,
    )


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return (*a, *(x for x in b if x not in a))
