"""The rules applied to a ticket: a pure function of the ticket, the customer's words and the clock."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from core.config import load_config
from core.model import Channel, HandoffReason, Priority, Ticket, TicketStatus
from normalizer.rules.engine import Customer, ServiceRules, assess
from tests.rules.test_calendar import at

ROOT = Path(__file__).resolve().parents[2]
RULES = ServiceRules.from_config(load_config(ROOT / "config.yaml", env={}))
MONDAY_10 = at(2026, 12, 7, 10, 0)


def ticket(channel: Channel = Channel.WEBCHAT) -> Ticket:
    return Ticket(
        id="tk_1",
        number="HL-000001",
        conversation_id="cv_1",
        contact_id="ct_1",
        subject="转人工",
        status=TicketStatus.NEW,
        priority=Priority.NORMAL,
        channel=channel,
        inbox="web",
        created_at=MONDAY_10,
        updated_at=MONDAY_10,
        handoff_reason=HandoffReason.ASKED_FOR_HUMAN,
    )


def customer(*texts: str, vip: bool = False) -> Customer:
    return Customer(texts=texts, vip=vip, tags=(), language=None, category=None)


def test_a_new_ticket_gets_fields_routing_and_the_first_matching_policy() -> None:
    made = assess(RULES, ticket(), customer("转人工"), MONDAY_10, new=True)
    assert made.queue == "general" and made.routing == ("general",) and made.language == "zh"
    assert made.sla is not None and made.sla.policy == "default"
    assert made.sla.first_response_due_at == at(2026, 12, 7, 12, 0)
    vip = assess(RULES, ticket(), customer("hello", vip=True), MONDAY_10, new=True)
    assert vip.sla is not None and vip.sla.policy == "vip" and vip.language == "en"
    assert vip.priority is Priority.HIGH and vip.skills == ("vip",)


def test_a_complaint_after_the_handoff_tightens_the_policy_from_the_tickets_creation() -> None:
    made = assess(RULES, ticket(), customer("转人工"), MONDAY_10, new=True)
    later = MONDAY_10 + timedelta(minutes=20)
    again = assess(RULES, made, customer("转人工", "我要投诉你们"), later, new=False)
    assert again.queue == "complaints" and again.category == "complaint" and again.priority is Priority.HIGH
    assert again.routing == ("general", "complaints")
    assert again.sla is not None and again.sla.policy == "complaint"
    assert again.sla.first_response_due_at == at(2026, 12, 7, 11, 0)  # 1 h from creation, not from now


def test_once_answered_the_policy_stays() -> None:
    made = assess(RULES, ticket(), customer("转人工"), MONDAY_10, new=True)
    assert made.sla is not None
    answered = dataclasses.replace(
        made, status=TicketStatus.OPEN, sla=dataclasses.replace(made.sla, first_responded_at=MONDAY_10)
    )
    again = assess(RULES, answered, customer("转人工", "我要投诉"), MONDAY_10, new=False)
    assert again.sla is not None and again.sla.policy == "default"
