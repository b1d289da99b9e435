"""Text normalization and tokenizing for FAQ matching (Chinese first, English too)."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jieba

jieba.setLogLevel(logging.WARNING)

_ZH_STOPWORDS = """
    怎么 怎样 怎么样 如何 咋 咋样 怎么办 咋办 我 我们 你 你们 您 他 她 它 的 了 吗 呢 啊 呀 吧 哦 嘛 么 哈 呐 嗯
    请问 请 问 一下 下 是 在 有 想 要 想要 我要 我想 能 能不能 可以 可不可以 可否 会 会不会 什么 为什么 为啥 啥
    哪里 哪儿 哪 多少 这个 那个 一个 这 那 给 帮 帮我 麻烦 你好 您好 谢谢 和 与 及 就 都 也 还 又 把 被 让 得
    地 着 过 需要 如果 还是 现在 已经 什么时候 时候 一直 自己 怎 个 吗吗 到底 关于 问题 情况 谁
"""

_EN_STOPWORDS = """
    i me my mine we us our you your it its a an the is are was were be been am do does did done can could would
    should will shall may might must to of in on at for with about from by and or but so if please how what which
    this that there these those im i'm hi hello hey want wanna need like get got have has had just any some know
    tell help thank thanks pls plz there's it's what's how's dont don't cant can't ok okay now still yet
"""

ZH_STOPWORDS = frozenset(_ZH_STOPWORDS.split())
EN_STOPWORDS = frozenset(_EN_STOPWORDS.split())
STOPWORDS = ZH_STOPWORDS | EN_STOPWORDS

_CJK_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
_LATIN_WORD = re.compile(r"[a-z][a-z']*")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFKC (full-width to half-width), casefold, punctuation and symbols to spaces, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    chars = [" " if unicodedata.category(c)[0] in "PSZC" and c != "'" else c for c in text]
    return _SPACES.sub(" ", "".join(chars).replace("'", "")).strip()


def is_cjk(token: str) -> bool:
    return _CJK_RUN.fullmatch(token) is not None


def stem(word: str) -> str:
    """A deliberately light English stemmer: enough to join "shipping/shipped/ships" and "addresses/address"."""
    if not _LATIN_WORD.fullmatch(word) or len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if word.endswith("ing") and len(word) >= 6:
        word = word[:-3]
    elif word.endswith("ed") and len(word) >= 5:
        word = word[:-2]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
        word = word[:-1]
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def new_tokenizer(user_words: Iterable[str] = ()) -> Any:
    """A private jieba tokenizer, so our user words never leak into (or from) the global one."""
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    for word in user_words:
        word = normalize(word)
        if word and " " not in word:
            tokenizer.add_word(word)
    return tokenizer


@dataclass(frozen=True, slots=True, kw_only=True)
class Analyzed:
    terms: tuple[str, ...]  # content words in order: stemmed, stopwords dropped
    bigrams: frozenset[str]  # Chinese character bigrams over runs of content words
    content: str  # the content words joined, for fuzzy string comparison


def words(tokenizer: Any, text: str) -> list[str]:
    """Normalized jieba tokens, stopwords included (English words stemmed)."""
    return [stem(t) for t in tokenizer.lcut(normalize(text), HMM=False) if t.strip()]


def analyze(tokenizer: Any, text: str) -> Analyzed:
    terms: list[str] = []
    bigrams: set[str] = set()
    run = ""
    for token in [*words(tokenizer, text), " "]:
        if token in STOPWORDS or token == " " or not is_cjk(token):
            bigrams.update(run[i : i + 2] for i in range(len(run) - 1))
            run = ""
        if token == " " or token in STOPWORDS:
            continue
        terms.append(token)
        if is_cjk(token):
            run += token
    return Analyzed(terms=tuple(terms), bigrams=frozenset(bigrams), content=" ".join(terms))
