"""Handoff triggers, each recorded as the reason: a human asked for, complaint wording, a VIP contact."""

from __future__ import annotations

import pathlib

import pytest

from bot.faq import FaqIndex, load_kb
from bot.live import render_answer
from bot.policy import BotPolicy, Outcome, decide
from core.model import HandoffReason

KB = pathlib.Path(__file__).resolve().parents[2] / "kb" / "faq.yaml"


@pytest.fixture(scope="module")
def index() -> FaqIndex:
    return FaqIndex(load_kb(KB))


@pytest.mark.parametrize(
    "text", ["我要投诉你们", "给你们差评", "你们就是骗子", "I want to file a complaint", "this is a scam"]
)
def test_complaint_wording_hands_off_with_its_reason(index: FaqIndex, text: str) -> None:
    decision = decide(index, text, consecutive_misses=0, policy=BotPolicy())
    assert decision.outcome is Outcome.HANDOFF
    assert decision.handoff_reason is HandoffReason.NEGATIVE_SENTIMENT


def test_complaint_words_are_configurable(index: FaqIndex) -> None:
    decision = decide(index, "我要投诉", consecutive_misses=0, policy=BotPolicy(negative_phrases=("退款太慢",)))
    assert decision.handoff_reason is not HandoffReason.NEGATIVE_SENTIMENT


def test_vip_goes_to_a_human_only_when_configured(index: FaqIndex) -> None:
    on = decide(index, "我想退款", consecutive_misses=0, policy=BotPolicy(vip_handoff=True), vip=True)
    assert on.outcome is Outcome.HANDOFF and on.handoff_reason is HandoffReason.VIP
    off = decide(index, "我想退款", consecutive_misses=0, policy=BotPolicy(), vip=True)
    assert off.outcome is Outcome.ANSWER
    regular = decide(index, "我想退款", consecutive_misses=0, policy=BotPolicy(vip_handoff=True), vip=False)
    assert regular.outcome is Outcome.ANSWER


@pytest.mark.parametrize("misses", [1, 2, 3])
def test_miss_limit_is_configurable(index: FaqIndex, misses: int) -> None:
    policy = BotPolicy(max_misses=misses)
    for before in range(misses):
        decision = decide(index, "今天天气怎么样", consecutive_misses=before, policy=policy)
        expected = Outcome.HANDOFF if before + 1 >= misses else Outcome.MISS
        assert decision.outcome is expected


def test_placeholders_are_filled_and_unknown_ones_kept() -> None:
    assert render_answer("客服时间：{business_hours}。{other}", {"business_hours": "9-18"}) == "客服时间：9-18。{other}"
