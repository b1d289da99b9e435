"""Routing rules: which queue, priority, tags, skills and assignee a ticket gets, and the trace of why."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.rules_config import OneOrMany, RoutingRule, When


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """What a rule's ``when`` may look at: the ticket as it stands and the customer's words so far."""

    text: str
    channel: str
    inbox: str
    fields: Mapping[str, str]
    vip: bool = False
    priority: str = "normal"
    category: str | None = None
    language: str | None = None
    business_hours: bool = True
    contact_tags: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Routing:
    """What the rules that fired set, and their names in order (the ``routing`` trace on the ticket)."""

    fired: tuple[str, ...] = ()
    queue: str | None = None
    tags: tuple[str, ...] = ()
    priority: str | None = None
    skills: tuple[str, ...] = ()
    assignee: str | None = None
    category: str | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    """A ``when`` with its patterns compiled once, at load."""

    when: When
    text: re.Pattern[str] | None
    fields: tuple[tuple[str, re.Pattern[str]], ...]

    @classmethod
    def of(cls, when: When) -> Condition:
        text = re.compile(when.text, re.IGNORECASE) if when.text is not None else None
        fields = tuple((k, re.compile(v, re.IGNORECASE)) for k, v in (when.fields or {}).items())
        return cls(when, text, fields)

    def holds(self, facts: Facts, *, max_chars: int) -> bool:
        w = self.when
        if self.text is not None and self.text.search(facts.text[:max_chars]) is None:
            return False
        for name, pattern in self.fields:
            value = facts.fields.get(name)
            if value is None or pattern.search(value[:max_chars]) is None:
                return False
        if w.vip is not None and w.vip != facts.vip:
            return False
        if w.business_hours is not None and w.business_hours != facts.business_hours:
            return False
        if w.contact_tags is not None and not set(_many(w.contact_tags)) & set(facts.contact_tags):
            return False
        return all(
            allowed is None or value in _many(allowed)
            for allowed, value in (
                (w.channel, facts.channel),
                (w.inbox, facts.inbox),
                (w.priority, facts.priority),
                (w.category, facts.category),
                (w.language, facts.language),
                (w.reason, facts.reason),
            )
        )


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: RoutingRule
    condition: Condition


def compile_rules(rules: Sequence[RoutingRule]) -> tuple[CompiledRule, ...]:
    return tuple(CompiledRule(r, Condition.of(r.when)) for r in rules)


def route(rules: Sequence[CompiledRule], facts: Facts, *, max_chars: int) -> Routing:
    """Rules in order; each one that holds applies its ``set``, and ``stop`` ends the walk. A later rule sees
    what earlier ones set (a category or priority), so rules can build on each other."""
    result = Routing()
    for compiled in rules:
        if not compiled.condition.holds(facts, max_chars=max_chars):
            continue
        s = compiled.rule.set
        result = Routing(
            fired=(*result.fired, compiled.rule.name),
            queue=s.queue or result.queue,
            tags=_union(result.tags, s.tags),
            priority=s.priority or result.priority,
            skills=_union(result.skills, s.skills),
            assignee=s.assignee or result.assignee,
            category=s.category or result.category,
        )
        facts = dataclasses.replace(
            facts, priority=result.priority or facts.priority, category=result.category or facts.category
        )
        if compiled.rule.stop:
            break
    return result


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return (*a, *(x for x in b if x not in a))


def _many(value: OneOrMany) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else value
