"""What customers see from the matcher: filler words, segmentation traps, typos, width, inflections, mixed text."""

from __future__ import annotations

import pathlib

import pytest

from bot.faq import FaqEntry, FaqIndex, load_kb
from bot.policy import BotPolicy, Outcome, decide

KB = pathlib.Path(__file__).resolve().parents[2] / "kb" / "faq.yaml"
POLICY = BotPolicy()


@pytest.fixture(scope="module")
def index() -> FaqIndex:
    return FaqIndex(load_kb(KB))


def _answered(index: FaqIndex, text: str) -> str | None:
    decision = decide(index, text, consecutive_misses=0, policy=POLICY)
    return decision.answer.id if decision.outcome is Outcome.ANSWER and decision.answer else None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # shared filler words (怎么, 如何, 请问) must not decide the match
        ("请问怎么退款", "refund"),
        ("如何修改密码", "password_reset"),
        ("请问如何开发票", "invoice"),
        ("怎么查订单", "order_status"),
        # jieba keeps 开发票 as one word; 发票怎么开 splits differently and still matches
        ("开发票", "invoice"),
        ("发票怎么开", "invoice"),
        # typos
        ("how do i reset my pasword", "password_reset"),
        ("where is my oder", "order_status"),
        # full-width and traditional characters
        ("ｗｈｅｒｅ　ｉｓ　ｍｙ　ｏｒｄｅｒ？", "order_status"),
        ("怎麼開發票", "invoice"),
        ("請問如何退款", "refund"),
        # English inflections
        ("I forgot my passwords", "password_reset"),
        ("cancelled orders", "cancel_order"),
        ("refunding", "refund"),
        ("my packages never arrived", "order_not_received"),
        # mixed Chinese and English
        ("我的order到哪了", "order_status"),
        # shipped synonyms: 退钱 is 退款, 物流 is 快递
        ("我想退钱", "refund"),
        ("物流几天到", "delivery_time"),
    ],
)
def test_customer_phrasings_are_answered(index: FaqIndex, query: str, expected: str) -> None:
    assert _answered(index, query) == expected


def test_a_brand_name_in_a_chinese_question_finds_its_entry(index: FaqIndex) -> None:
    """ "alipay可以用吗" ranks payment_methods first (0.91). Since the shipped threshold also bounds how often
    questions the KB lacks are answered (0.85 -> 0.92), the 25-entry sample KB (too small to fit a temperature)
    offers it as a suggestion rather than answering."""
    decision = decide(index, "alipay可以用吗", consecutive_misses=0, policy=POLICY)
    assert decision.hits[0].entry_id == "payment_methods"
    assert decision.outcome in (Outcome.ANSWER, Outcome.SUGGEST)
    assert decision.answer is None or decision.answer.id == "payment_methods"


def test_filler_words_alone_match_nothing(index: FaqIndex) -> None:
    assert index.search("请问怎么如何") == ()
    assert index.search("今天天气怎么样") == ()


def test_kb_synonyms_fold_words_together() -> None:
    entries = [
        FaqEntry(id="pass", questions=("出入证在哪办理",), answer="前台"),
        FaqEntry(id="wifi", questions=("无线网密码",), answer="guest"),
    ]
    plain = FaqIndex(entries)
    folded = FaqIndex(entries, synonyms=[("出入证", "门禁卡")])
    assert plain.search("门禁卡") == ()
    hits = folded.search("门禁卡")
    assert hits and hits[0].entry_id == "pass"


def test_an_entry_scores_on_its_best_phrasing(index: FaqIndex) -> None:
    hits = index.search("重置密码")
    assert hits[0].entry_id == "password_reset" and hits[0].question == "重置密码"


def test_near_tie_is_suggested_not_answered(index: FaqIndex) -> None:
    decision = decide(index, "订单", consecutive_misses=0, policy=POLICY)
    assert decision.outcome is Outcome.SUGGEST
    assert decision.hits[0].score - decision.hits[1].score < POLICY.margin
