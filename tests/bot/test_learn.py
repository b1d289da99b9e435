"""The model learned from the KB's phrasings: what it lets customers get that term weighting alone did not."""

from __future__ import annotations

import numpy as np
import pytest

from bot.faq import _CHAR_BUDGET, _CHAR_MIN, _TRAIN_BUDGET, FaqEntry, FaqIndex, _features, _model_features
from bot.learn import Rows, train, unique_inverse
from bot.policy import BotPolicy, Outcome, decide

# Two entries that share every content word and differ only in words a stopword list drops ("my" / "your"),
# plus neighbours, each with several phrasings as a real KB has.
ENTRIES = (
    FaqEntry(
        id="user_name",
        questions=("what is my name", "do you know my name", "tell me my name", "say my name"),
        answer="You are ...",
    ),
    FaqEntry(
        id="bot_name",
        questions=("what is your name", "do you have a name", "tell me your name", "what should i call you"),
        answer="I am Huiliu.",
    ),
    FaqEntry(
        id="order_status",
        questions=("where is my order", "track my order", "has my order shipped", "order status"),
        answer="Track it under My orders.",
    ),
    FaqEntry(
        id="refund",
        questions=("how do i get a refund", "i want my money back", "refund my purchase", "请问怎么退款", "我要退钱"),
        answer="Refunds take 3-5 days.",
    ),
    FaqEntry(
        id="invoice",
        questions=("怎么开发票", "发票怎么开", "我要开票", "需要发票"),
        answer="开票请在订单页申请。",
    ),
    FaqEntry(
        id="delivery_time",
        questions=("快递多久能到", "几天能送到", "物流要多久", "什么时候到货"),
        answer="一般三天。",
    ),
)


@pytest.fixture(scope="module")
def index() -> FaqIndex:
    return FaqIndex(ENTRIES)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # only the learned model sees "your" vs "my": both are stopwords to BM25
        ("tell me what your name is", "bot_name"),
        ("what's my name", "user_name"),
        # English inflections
        ("my orders were shipped?", "order_status"),
        ("refunding purchases", "refund"),
        # Chinese, with fillers and a segmentation trap
        ("请问发票如何开", "invoice"),
        ("快递几天能到啊", "delivery_time"),
        # mixed Chinese and English
        ("refund 怎么退钱", "refund"),
    ],
)
def test_ranks_the_right_entry_first(index: FaqIndex, query: str, expected: str) -> None:
    assert index.search(query)[0].entry_id == expected


def test_scores_are_probabilities_that_leave_room_for_none_of_these(index: FaqIndex) -> None:
    hits = index.search("tell me your name")
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    assert sum(h.score for h in hits) <= 1.0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_a_clear_question_is_answered_and_an_unrelated_one_is_not(index: FaqIndex) -> None:
    policy = BotPolicy()
    clear = decide(index, "where is my order", consecutive_misses=0, policy=policy)
    assert clear.outcome is Outcome.ANSWER and clear.answer is not None and clear.answer.id == "order_status"
    unrelated = decide(index, "name a good pizza place for my order of wine", consecutive_misses=0, policy=policy)
    assert unrelated.outcome is not Outcome.ANSWER


def test_training_separates_classes_that_share_features() -> None:
    # Feature 0 is in both classes, feature 1 only in class 0, feature 2 only in class 1.
    rows = [([0, 1], [0.6, 0.8]), ([0, 1], [0.8, 0.6]), ([0, 2], [0.6, 0.8]), ([0, 2], [0.8, 0.6])]
    model = train(Rows.of(rows), [0, 0, 1, 1], {0: [1], 1: [1], 2: [0], 3: [0]}, 2)
    mine, other = model.logits([0, 1], [0.6, 0.8], [0, 1])
    assert mine > other
    theirs, own = model.logits([2], [1.0], [0, 1])
    assert own > theirs
    assert model.logits([], [], [0, 1]) == [0.0, 0.0]
    assert model.logits([0], [1.0], []) == []


def test_an_entry_with_one_phrasing_is_scored_by_its_centroid_alone() -> None:
    rows = [([0, 1], [0.6, 0.8]), ([2], [1.0])]
    model = train(Rows.of(rows), [0, 1], {}, 2)
    assert model.logits([1], [1.0], [0, 1])[0] > 0.0
    assert model.logits([1], [1.0], [0, 1])[1] == 0.0


# Two entries with the same words in another order: only word pairs and the last word tell them apart.
DIRECTIONS = (
    FaqEntry(
        id="savings_to_checking",
        questions=(
            "move money from savings to checking",
            "transfer from savings to checking",
            "send funds from my savings to my checking",
            "from savings into checking please",
        ),
        answer="Use Transfers, then pick savings as the source.",
    ),
    FaqEntry(
        id="checking_to_savings",
        questions=(
            "move money from checking to savings",
            "transfer from checking to savings",
            "send funds from my checking to my savings",
            "from checking into savings please",
        ),
        answer="Use Transfers, then pick checking as the source.",
    ),
    *ENTRIES,
)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("can i transfer money from checking to savings", "checking_to_savings"),
        ("can i transfer money from savings to checking", "savings_to_checking"),
        ("how do i move funds from my savings to my checking", "savings_to_checking"),
    ],
)
def test_word_order_tells_entries_with_the_same_words_apart(query: str, expected: str) -> None:
    assert FaqIndex(DIRECTIONS).search(query)[0].entry_id == expected


def test_the_model_reads_english_word_pairs_and_a_texts_first_and_last_word() -> None:
    """Phrase-level inputs: "what is" / "is it" and where a question starts and ends, stopwords kept; Chinese gets
    no word pairs (its character bigrams already are)."""
    index = FaqIndex(DIRECTIONS)
    feats = _model_features(index._analyze("What is my balance"))
    assert {"qwhat is", "qis my", "qmy balanc", "e^what", "e$balanc"} <= feats  # stemmed
    chinese = _model_features(index._analyze("怎么开发票"))
    assert not any(f.startswith("q") for f in chinese)


@pytest.mark.parametrize(
    ("top", "n"),
    [(10, 1), (10, 50), (1000, 100_000), (10**7, 1_000), (2**40, 1_000), (2**62, 10)],
)
def test_parameters_are_found_as_numpy_finds_them(top: int, n: int) -> None:
    """Dense keys (a table) and sparse ones (a packed sort, or np.unique past 62 bits) give np.unique's answer."""
    values = np.random.default_rng(top + n).integers(0, top, n)
    keys, inverse = unique_inverse(values)
    expected_keys, expected_inverse = np.unique(values, return_inverse=True)
    assert keys.tolist() == expected_keys.tolist()
    assert inverse.tolist() == expected_inverse.ravel().tolist()


_MORE = (
    FaqEntry(id="weather", questions=("今天天气怎么样", "明天会下雪吗", "下雪了吗"), answer="-"),
    FaqEntry(id="days", questions=("几天能到", "今天发货吗", "雪地靴几天到"), answer="-"),
    FaqEntry(id="greeting", questions=("你好", "您好", "hello 我"), answer="-"),  # stopwords only: no features
)


def _reference_walk(index: FaqIndex, feats: frozenset[str], budget: int) -> tuple[dict[int, float], set[str]]:
    """FaqIndex._walk as a loop over the postings, one at a time (as it was before it summed them in numpy)."""
    rank = index._anchor_rank
    anchors = sorted((f for f in feats if f in rank), key=rank.__getitem__)
    acc: dict[int, float] = {}
    walked = 0
    complete: set[str] = set()
    char_budget = min(budget, _CHAR_BUDGET)
    found_by_word: set[int] | None = None
    for f in anchors:
        at, size = index._postings[f]
        ids, weights = index._post_entry[at : at + size].tolist(), index._post_weight[at : at + size].tolist()
        full = list(zip(ids, weights, strict=True))
        if f[0] == "c":
            if walked >= char_budget:
                break
            if found_by_word is None:
                found_by_word = set(acc)
            plist = full[: char_budget - walked]
        else:
            plist = full[: budget - walked]
        walked += len(plist)
        for i, w in plist:
            acc[i] = acc.get(i, 0.0) + w
        if len(plist) == len(full):
            complete.add(f)
        if walked >= budget:
            break
    if found_by_word is not None:
        chars = [f for f in anchors if f[0] == "c"]
        for i in [i for i in acc if i not in found_by_word]:
            if sum(f in index._entry_terms[i] for f in chars) < _CHAR_MIN:
                del acc[i]
    return acc, complete


@pytest.mark.parametrize("budget", [2, 5, 500])
def test_a_walk_sums_postings_in_the_order_a_loop_does(budget: int) -> None:
    """Candidates, their partial BM25 to the last bit, the order they were found in, and the features walked whole:
    the numpy walk gives what a loop over the postings gives, Chinese characters' fallback and budget cuts included."""
    entries = (*DIRECTIONS, *_MORE)
    index = FaqIndex(entries, calibrate=False)
    texts = [q for e in entries for q in e.questions] + ["雪天几天能到", "下雪", "今天", "transfer savings 天气"]
    for text in texts:
        feats = frozenset(_features(index._analyze(text)))
        acc, complete = index._walk(feats, budget)
        expected, expected_complete = _reference_walk(index, feats, budget)
        assert list(acc.items()) == list(expected.items()), text
        assert complete == expected_complete, text


def _walked_negatives(index: FaqIndex, entry: int, features: frozenset[str], limit: int) -> list[int]:
    """What the model's training negatives were before they were found in one batch: a walk per phrasing."""
    acc, _ = index._walk(features, _TRAIN_BUDGET)
    acc.pop(entry, None)
    return sorted(acc, key=acc.__getitem__, reverse=True)[:limit]


@pytest.mark.parametrize("limit", [1, 3, 32])
def test_training_negatives_are_what_each_phrasings_walk_finds(limit: int) -> None:
    """The batched walk (FaqIndex._confusable) finds for every phrasing the entries, order and ties that a walk per
    phrasing finds, Chinese characters' fallback included."""
    entries = (*DIRECTIONS, *_MORE)
    index = FaqIndex(entries, calibrate=False)
    phrasings = [((i, q), frozenset(_features(index._analyze(q)))) for i, e in enumerate(entries) for q in e.questions]
    order = sorted(index._anchor_rank, key=index._anchor_rank.__getitem__)
    assert index._confusable(phrasings, order, limit) == [
        _walked_negatives(index, i, feats, limit) for (i, _), feats in phrasings
    ]


def test_a_kb_of_stopwords_only_builds_and_finds_nothing() -> None:
    """No phrasing has a feature to walk or to find negatives by; the index still builds."""
    index = FaqIndex([FaqEntry(id="greeting", questions=("你好", "您好", "hello 我"), answer="-")], calibrate=False)
    assert index.search("退款") == ()
