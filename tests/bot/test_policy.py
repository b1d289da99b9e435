"""Tests for the bot's answer / suggest / miss / hand-off decisions."""

from __future__ import annotations

import pathlib

import pytest

from bot.faq import FaqIndex, load_kb
from bot.policy import BotPolicy, Outcome, decide, decide_pick, wants_human
from core.model import HandoffReason

KB = pathlib.Path(__file__).resolve().parents[2] / "kb" / "faq.yaml"
POLICY = BotPolicy()


@pytest.fixture(scope="module")
def index() -> FaqIndex:
    return FaqIndex(load_kb(KB))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("密码怎么改啊", "password_reset"),
        ("我想退款", "refund"),
        ("怎么开发票", "invoice"),
        ("能开发票吗？", "invoice"),
        ("where is my order", "order_status"),
        ("How do I reset my password?", "password_reset"),
        ("你们几点下班", "business_hours"),
        ("客服什么时候上班", "business_hours"),
    ],
)
def test_answers(index: FaqIndex, query: str, expected: str) -> None:
    decision = decide(index, query, consecutive_misses=0, policy=POLICY)
    assert decision.outcome is Outcome.ANSWER
    assert decision.answer is not None and decision.answer.id == expected
    assert decision.hits[0].entry_id == expected
    assert not decision.is_miss and decision.handoff_reason is None and decision.suggestions == ()


@pytest.mark.parametrize("query", ["今天天气怎么样", "asdkjh qwe", "agenda"])
def test_nonsense_is_a_miss(index: FaqIndex, query: str) -> None:
    decision = decide(index, query, consecutive_misses=0, policy=POLICY)
    assert decision.outcome is Outcome.MISS
    assert decision.is_miss and decision.answer is None and decision.suggestions == ()
    assert decision.handoff_reason is None


def test_second_consecutive_miss_hands_off(index: FaqIndex) -> None:
    decision = decide(index, "今天天气怎么样", consecutive_misses=1, policy=POLICY)
    assert decision.outcome is Outcome.HANDOFF
    assert decision.handoff_reason is HandoffReason.NO_MATCH
    assert decision.is_miss


def test_vague_query_suggests(index: FaqIndex) -> None:
    decision = decide(index, "订单", consecutive_misses=0, policy=POLICY)
    assert decision.outcome is Outcome.SUGGEST
    assert 1 <= len(decision.suggestions) <= 3
    assert "order_status" in {e.id for e in decision.suggestions}
    assert decision.is_miss and decision.answer is None
    assert decision.hits


def test_suggestions_respect_max_suggestions(index: FaqIndex) -> None:
    policy = BotPolicy(max_suggestions=1)
    decision = decide(index, "订单", consecutive_misses=0, policy=policy)
    assert decision.outcome is Outcome.SUGGEST and len(decision.suggestions) == 1


def test_suggest_that_reaches_the_miss_limit_hands_off(index: FaqIndex) -> None:
    decision = decide(index, "订单", consecutive_misses=1, policy=POLICY)
    assert decision.outcome is Outcome.HANDOFF
    assert decision.handoff_reason is HandoffReason.NO_MATCH
    assert decision.hits  # what the bot tried is kept for the ticket


def test_answer_does_not_depend_on_earlier_misses(index: FaqIndex) -> None:
    decision = decide(index, "我想退款", consecutive_misses=5, policy=POLICY)
    assert decision.outcome is Outcome.ANSWER


@pytest.mark.parametrize(
    "query", ["转人工", "我要人工客服", "can I talk to a human", "Real person please!", "AGENT", "找客服", "转人工！！"]
)
def test_asked_for_human(index: FaqIndex, query: str) -> None:
    assert wants_human(query, POLICY)
    decision = decide(index, query, consecutive_misses=0, policy=POLICY)
    assert decision.outcome is Outcome.HANDOFF
    assert decision.handoff_reason is HandoffReason.ASKED_FOR_HUMAN
    assert not decision.is_miss


@pytest.mark.parametrize("query", ["agenda", "the agency", "humanity", "我想退款", "operational"])
def test_not_asked_for_human(query: str) -> None:
    assert not wants_human(query, POLICY)


def test_custom_human_phrases() -> None:
    policy = BotPolicy(human_phrases=("小二",))
    assert wants_human("叫小二来", policy)
    assert not wants_human("转人工", policy)


def test_decide_pick(index: FaqIndex) -> None:
    decision = decide_pick(index, "invoice")
    assert decision is not None
    assert decision.outcome is Outcome.ANSWER
    assert decision.answer is not None and decision.answer.id == "invoice"
    assert len(decision.hits) == 1 and decision.hits[0].entry_id == "invoice" and decision.hits[0].score == 1.0
    assert not decision.is_miss
    assert decide_pick(index, "no_such_entry") is None
