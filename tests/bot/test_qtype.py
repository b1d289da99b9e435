"""Question types: an entry that never asks what the query asks is suggested, not answered."""

from __future__ import annotations

import dataclasses

import pytest

from bot.faq import FaqEntry, FaqIndex
from bot.policy import BotPolicy, Outcome, decide
from bot.qtype import disagree, question_types
from normalizer.text import fold_for_matching
from tests.bot.test_faq import _synthetic_kb

POLICY = BotPolicy()


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("什么是柜面通", "what"),
        ("柜面通是什么", "what"),
        ("柜面通怎么开通", "how"),
        ("如何开通柜面通", "how"),
        ("跨行转账要多久到账", "when"),
        ("为什么转账失败了", "why"),
        ("可以用支付宝付款吗", "can"),
        ("能不能晚点发货", "can"),
        ("转账手续费多少钱", "much"),
        ("最近的网点在哪里", "where"),
        ("What's a routing number?", "what"),
        ("How do I open an account", "how"),
        ("how long does a transfer take", "when"),
        ("Why was my card declined", "why"),
        ("Can I pay by card?", "can"),
        ("how much is the fee", "much"),
        ("where is the nearest ATM", "where"),
    ],
)
def test_question_types(text: str, kind: str) -> None:
    assert kind in question_types(fold_for_matching(text))


def test_how_long_is_not_how_to() -> None:
    assert "how" not in question_types(fold_for_matching("how long does it take"))
    assert question_types(fold_for_matching("play some jazz")) == frozenset()


def test_disagreement_needs_both_sides_to_ask_something() -> None:
    assert disagree(frozenset({"what"}), frozenset({"how"}))
    assert not disagree(frozenset({"what"}), frozenset({"how", "what"}))
    assert not disagree(frozenset(), frozenset({"how"}))  # the query asks no kind of question
    assert not disagree(frozenset({"what"}), frozenset())  # the entry's phrasings are statements


@pytest.fixture(scope="module")
def bank() -> FaqIndex:
    return FaqIndex(
        [
            FaqEntry(id="open_gmt", questions=("柜面通怎么开通", "如何开通柜面通", "柜面通开通的步骤"), answer="open"),
            FaqEntry(id="atm_time", questions=("ATM跨行转账多久到账", "ATM转账什么时候到账"), answer="time"),
            FaqEntry(id="card_lost", questions=("银行卡丢了怎么挂失", "如何挂失银行卡"), answer="lost"),
            FaqEntry(id="hours", questions=("网点几点营业", "营业时间是什么时候"), answer="hours"),
        ]
    )


def test_a_definition_question_is_not_answered_with_a_procedure(bank: FaqIndex) -> None:
    """ "什么是柜面通" shares its topic word with "柜面通怎么开通", but the answer to one does not answer the other:
    the bot offers the entry as a suggestion instead of answering with it."""
    asked = decide(bank, "什么是柜面通", consecutive_misses=0, policy=POLICY)
    assert asked.outcome is Outcome.SUGGEST
    assert asked.hits[0].entry_id == "open_gmt" and asked.hits[0].score < POLICY.answer_threshold
    same_kind = decide(bank, "柜面通要怎么开通", consecutive_misses=0, policy=POLICY)
    assert same_kind.outcome is Outcome.ANSWER and same_kind.answer is not None and same_kind.answer.id == "open_gmt"


def test_a_how_to_question_is_not_answered_with_how_long(bank: FaqIndex) -> None:
    asked = decide(bank, "ATM跨行转账怎么操作", consecutive_misses=0, policy=POLICY)
    assert asked.outcome is not Outcome.ANSWER
    assert decide(bank, "ATM跨行转账要多久", consecutive_misses=0, policy=POLICY).outcome is Outcome.ANSWER


def test_the_kb_authors_own_phrasing_is_always_its_kind(bank: FaqIndex) -> None:
    assert all(bank.search(q)[0].entry_id == e.id for e in bank.entries for q in e.questions)


def test_siblings_are_suggested_not_answered() -> None:
    """Entries that the KB's held-out phrasings confuse with each other are siblings: when they are the best two,
    the customer picks from a suggestion list rather than get the wrong one of the pair with confidence."""
    twins = FaqIndex(_synthetic_kb(twins=True))
    e0 = twins.entries[0]
    query = " ".join(reversed(e0.questions[0].split()[3:]))  # the entry's own words, not one of its phrasings
    decision = decide(twins, query, consecutive_misses=0, policy=POLICY)
    assert decision.outcome is Outcome.SUGGEST
    assert [h.entry_id for h in decision.hits[:2]] == ["e0", "e1"]
    # Without the sibling rule the same query is answered: the rule, not the scores alone, makes it a suggestion.
    # (At a threshold of 0.9: with the model's word pairs the uncapped score is 0.916, just under the shipped 0.92.)
    lower = dataclasses.replace(POLICY, answer_threshold=0.9)
    assert decide(twins, query, consecutive_misses=0, policy=lower).outcome is Outcome.SUGGEST
    twins._siblings = frozenset()
    twins._searched.clear()  # the index remembers its answers: it is never changed but here
    assert decide(twins, query, consecutive_misses=0, policy=lower).outcome is Outcome.ANSWER


def test_distinct_entries_are_no_siblings() -> None:
    distinct = FaqIndex(_synthetic_kb(twins=False))
    e0 = distinct.entries[0]
    query = " ".join(reversed(e0.questions[0].split()[3:]))
    assert decide(distinct, query, consecutive_misses=0, policy=POLICY).outcome is Outcome.ANSWER
