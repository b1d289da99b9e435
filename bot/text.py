"""Tokenizing for FAQ matching (Chinese first, English too), over normalizer.text.fold_for_matching."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jieba

from normalizer.text import fold_for_matching

jieba.setLogLevel(logging.WARNING)

# Only fillers and particles: question words (什么时候, 多少, 哪里; when, where, how) often tell entries apart,
# and the KB's own IDF already discounts words that every entry shares.
_ZH_STOPWORDS = """
    的 了 吗 呢 啊 呀 吧 哦 嘛 么 哈 嗯 呐 啦 呗 嘞 哇 喔 请问 请 一下 怎么 怎么样 如何 怎样 咋
    我 我们 你 你们 您 帮 帮我 请帮我 麻烦 麻烦你 你好 您好 谢谢 能 可以 想 要 是 在
    一个 这个 那个 就 都 也 还 把 给 我想 我要 想要 能不能
    可不可以
"""

_EN_STOPWORDS = """
    a an the is are was were be am do does did to of in on at for with and or please i me my you your it its can
    could would will im i'm hi hello hey pls plz
"""

ZH_STOPWORDS = frozenset(_ZH_STOPWORDS.split())
EN_STOPWORDS = frozenset(_EN_STOPWORDS.split())
STOPWORDS = ZH_STOPWORDS | EN_STOPWORDS

_CJK_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_LATIN_WORD = re.compile(r"[a-z][a-z']*")


def is_cjk(token: str) -> bool:
    return _CJK_RUN.fullmatch(token) is not None


_IRREGULAR = {
    "was": "be",
    "were": "be",
    "been": "be",
    "paid": "pay",
    "sent": "send",
    "lost": "lose",
    "stolen": "steal",
    "stole": "steal",
    "bought": "buy",
    "made": "make",
    "gave": "give",
    "given": "give",
    "took": "take",
    "taken": "take",
    "received": "receive",
    "children": "child",
    "men": "man",
    "women": "woman",
    "people": "person",
    "left": "leave",
    "spent": "spend",
    "went": "go",
    "gone": "go",
    "froze": "freeze",
    "frozen": "freeze",
    "wrote": "write",
    "written": "write",
    "forgot": "forget",
    "forgotten": "forget",
}


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A deliberately light English stemmer: it joins inflections ("shipping/shipped/ships") and a few
    irregular forms, and stops there, so unrelated words are not folded together as a full Porter stemmer does."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if not _LATIN_WORD.fullmatch(word) or len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if word.endswith("ing") and len(word) >= 6:
        word = word[:-3]
    elif word.endswith("ied") and len(word) >= 5:
        word = word[:-3] + "y"
    elif word.endswith("ed") and len(word) >= 5:
        word = word[:-2]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
        word = word[:-1]
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


@functools.cache
def _base_dictionary() -> tuple[dict[str, int], int]:
    """jieba's dictionary, loaded once per process (about a second); every tokenizer starts from a copy."""
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    return tokenizer.FREQ, tokenizer.total


def new_tokenizer(user_words: Iterable[str] = ()) -> Any:
    """A private jieba tokenizer, so our user words never leak into (or from) the global one."""
    freq, total = _base_dictionary()
    words = sorted({w for w in (fold_for_matching(u) for u in user_words) if w and " " not in w and is_cjk(w)})
    tokenizer = jieba.Tokenizer()
    # A tokenizer without user words only reads the shared dictionary; add_word writes, so it gets its own copy.
    tokenizer.FREQ, tokenizer.total, tokenizer.initialized = (dict(freq) if words else freq), total, True
    for word in words:
        tokenizer.add_word(word)
    tokenizer.huiliu_blocks = {}  # segment()'s memo: this tokenizer's user words decide how a block is cut
    return tokenizer


# jieba cuts a text block by block (a block: a run of Chinese characters, letters and digits; jieba's own split).
# Blocks repeat a lot (every English word is one, and KB phrasings share most of theirs), and cutting one is the
# costly part of analyzing a phrasing: a block is cut once per tokenizer and remembered. For a 10,000-phrasing KB
# of ten-phrasing entries that took the build's segmenting from ~1 s to ~0.3 s; the tokens are the same.
_BLOCK = jieba.re_han_default
_BLOCK_CACHE = 200_000  # blocks remembered per tokenizer (cleared, not evicted, when full)


def segment(tokenizer: Any, folded: str) -> list[str]:
    """``tokenizer.lcut(folded, HMM=False)``, block by block, each block's cut remembered."""
    memo: dict[str, list[str]] | None = getattr(tokenizer, "huiliu_blocks", None)
    if memo is None:
        return list(tokenizer.lcut(folded, HMM=False))
    out: list[str] = []
    for block in _BLOCK.split(folded):
        if not block:
            continue
        cut = memo.get(block)
        if cut is None:
            cut = tokenizer.lcut(block, HMM=False)
            if len(memo) >= _BLOCK_CACHE:
                memo.clear()
            memo[block] = cut
        out += cut
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Analyzed:
    terms: tuple[str, ...]  # content words in order: stemmed, synonyms folded, stopwords dropped
    bigrams: frozenset[str]  # Chinese character bigrams over runs of content words
    chars: frozenset[str]  # Chinese characters of content words
    content: str  # the content words joined, for fuzzy string comparison
    # Every word, stopwords kept (stemmed, synonyms folded): a learned model weighs them itself, and "my" vs
    # "your" or "how" vs "when" often tell intents apart.
    words: tuple[str, ...] = ()


@functools.lru_cache(maxsize=131072)
def _token_facts(raw: str) -> tuple[str, bool] | None:
    """One jieba token's (stemmed form, is a stopword), or None for whitespace: the same few thousand tokens make
    up a KB's phrasings, so this is worked out once per token rather than once per occurrence (a tenth of a
    10,000-phrasing build went to stemming, stopword and script checks of repeated tokens)."""
    if not raw.strip():
        return None
    stemmed = stem(raw) if raw.isascii() else raw
    return stemmed, raw in STOPWORDS or stemmed in STOPWORDS


_is_cjk_cached = functools.lru_cache(maxsize=131072)(is_cjk)


def words(tokenizer: Any, text: str) -> list[str]:
    """Normalized jieba tokens, stopwords included (English words stemmed)."""
    return [stem(t) for t in segment(tokenizer, fold_for_matching(text)) if t.strip()]


def analyze(tokenizer: Any, text: str, synonyms: Mapping[str, str] | None = None, *, folded: bool = False) -> Analyzed:
    """Content words plus Chinese character bigrams and characters, the fallback for words jieba splits otherwise.

    A stopword ends a run, so "密码怎么改" never yields the bigram "码改" that no phrasing would hold. ``folded``:
    the text is already ``fold_for_matching``'s output.
    """
    terms: list[str] = []
    every: list[str] = []
    bigrams: set[str] = set()
    chars: set[str] = set()
    run = ""
    for raw in [*segment(tokenizer, text if folded else fold_for_matching(text)), " "]:
        facts = _token_facts(raw)
        if facts is None:
            token = " "
        else:
            stemmed, stop = facts
            word = synonyms.get(stemmed, stemmed) if synonyms else stemmed
            every.append(word)
            token = " " if stop else word
        if token != " " and _is_cjk_cached(token):
            terms.append(token)
            run += token
            continue
        if run:  # a stopword, a space or a Latin word ends a run of Chinese content words
            bigrams.update(run[i : i + 2] for i in range(len(run) - 1))
            chars.update(run)
            run = ""
        if not token.isspace() and token:
            terms.append(token)
    return Analyzed(
        terms=tuple(terms),
        bigrams=frozenset(bigrams),
        chars=frozenset(chars),
        content=" ".join(terms),
        words=tuple(every),
    )
