"""Segmenting block by block with a memo: the same tokens as jieba, each block cut once per tokenizer."""

from __future__ import annotations

import pytest

from bot.text import new_tokenizer, segment
from normalizer.text import fold_for_matching

TEXTS = (
    "请问柜面通怎么开通",
    "柜面通 怎么开通 what is my balance",
    "i lost my card yesterday, can you freeze it?",
    "型号3 iphone15 的发票怎么开",
    "退款 refund 退款 refund",
    "",
    "   ",
)


@pytest.mark.parametrize("text", TEXTS)
def test_segment_gives_jiebas_tokens(text: str) -> None:
    tokenizer = new_tokenizer(["柜面通"])
    folded = fold_for_matching(text)
    expected = tokenizer.lcut(folded, HMM=False)
    assert segment(tokenizer, folded) == expected
    assert segment(tokenizer, folded) == expected  # the second time from the memo


def test_each_tokenizer_cuts_by_its_own_user_words() -> None:
    """A memo belongs to one tokenizer: a KB's user word must not change how another KB's index cuts text."""
    plain, with_word = new_tokenizer(), new_tokenizer(["柜面通"])
    assert "柜面通" not in segment(plain, "柜面通怎么开通")
    assert "柜面通" in segment(with_word, "柜面通怎么开通")
    assert "柜面通" not in segment(plain, "柜面通怎么开通")


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.text._BLOCK_CACHE", 3)
    tokenizer = new_tokenizer()
    for word in ("alpha", "beta", "gamma", "delta", "epsilon"):
        assert segment(tokenizer, word) == [word]
    assert len(tokenizer.huiliu_blocks) <= 3
