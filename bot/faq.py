"""The FAQ knowledge base: loading it from YAML and searching it."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import operator
import os
import pathlib
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import yaml
from rapidfuzz import fuzz, process

from bot.learn import LinearModel, Rows, train, unique_inverse
from bot.qtype import disagree, question_types, union
from bot.synonyms import STARTER_SYNONYMS, merged, synonym_map
from bot.text import Analyzed, analyze, is_cjk, new_tokenizer, stem
from core.model import FaqHit
from normalizer.text import fold_for_matching


class KbError(Exception):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class FaqEntry:
    id: str
    questions: tuple[str, ...]
    answer: str
    keywords: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    category: str | None = None  # a ticket the bot hands off after matching or suggesting this entry gets it


@dataclass(frozen=True, slots=True, kw_only=True)
class KnowledgeBase:
    """A KB file's content: the entries, and synonym groups (each folds to its first word) for matching."""

    entries: tuple[FaqEntry, ...]
    synonyms: tuple[tuple[str, ...], ...] = ()


_FIELDS = frozenset({"id", "questions", "answer", "keywords", "tags", "category"})
_TOP = frozenset({"faqs", "synonyms"})


def read_kb(path: pathlib.Path) -> KnowledgeBase:
    """Read and validate a KB file; raises KbError naming the file, the entry and the problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KbError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KbError(f"{path}: cannot read: {e}") from None
    except yaml.YAMLError as e:
        raise KbError(f"{path}: invalid YAML: {e}") from None
    return parse_kb(data, str(path))


def load_kb(path: pathlib.Path) -> tuple[FaqEntry, ...]:
    return read_kb(path).entries


def parse_kb(data: object, where: str) -> KnowledgeBase:
    if not isinstance(data, dict) or not isinstance(data.get("faqs"), list) or not data["faqs"]:
        raise KbError(f"{where}: top level must be a mapping with a non-empty 'faqs' list")
    unknown = sorted(str(k) for k in data if k not in _TOP)
    if unknown:
        raise KbError(f"{where}: unknown top-level key(s) {', '.join(unknown)}; allowed: faqs, synonyms")
    entries: list[FaqEntry] = []
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(data["faqs"], start=1):
        entry = parse_entry(raw, f"{where}: entry #{number}")
        if entry.id in first_seen:
            raise KbError(
                f"{where}: entry #{number}: duplicate id {entry.id!r} (first used by entry #{first_seen[entry.id]})"
            )
        first_seen[entry.id] = number
        entries.append(entry)
    groups: list[tuple[str, ...]] = []
    raw_groups = data.get("synonyms") or []
    if not isinstance(raw_groups, list):
        raise KbError(f"{where}: 'synonyms' must be a list of lists of words")
    for n, group in enumerate(raw_groups, start=1):
        groups.append(_strings(group, "synonyms", f"{where}: synonym group #{n}", required=True))
    return KnowledgeBase(entries=tuple(entries), synonyms=tuple(groups))


def parse_entry(raw: object, where: str) -> FaqEntry:
    if not isinstance(raw, dict):
        raise KbError(f"{where}: must be a mapping with id, questions and answer")
    entry_id = raw.get("id")
    if not isinstance(entry_id, str) or not entry_id.strip() or entry_id != entry_id.strip():
        raise KbError(f"{where}: 'id' must be a non-empty string without surrounding spaces")
    where = f"{where} (id {entry_id!r})"
    unknown = sorted(str(k) for k in raw if k not in _FIELDS)
    if unknown:
        raise KbError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELDS))}")
    questions = _strings(raw.get("questions"), "questions", where, required=True)
    for n, question in enumerate(questions, start=1):
        if not fold_for_matching(question):
            raise KbError(f"{where}: question #{n} is empty")
    answer = raw.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise KbError(f"{where}: 'answer' must be a non-empty string")
    category = raw.get("category")
    if category is not None and (not isinstance(category, str) or not category.strip()):
        raise KbError(f"{where}: 'category' must be a non-empty string")
    return FaqEntry(
        id=entry_id,
        questions=questions,
        answer=answer.strip(),
        keywords=_strings(raw.get("keywords"), "keywords", where, required=False),
        tags=_strings(raw.get("tags"), "tags", where, required=False),
        category=category.strip() if category else None,
    )


def _strings(value: object, name: str, where: str, *, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list) or (required and not value) or not all(isinstance(v, str) for v in value):
        raise KbError(f"{where}: {name!r} must be a {'non-empty ' if required else ''}list of strings")
    if not all(v.strip() for v in value):
        raise KbError(f"{where}: {name!r} holds an empty string")
    return tuple(v.strip() for v in value)


def kb_document(kb: KnowledgeBase) -> dict[str, Any]:
    faqs: list[dict[str, Any]] = []
    for e in kb.entries:
        item: dict[str, Any] = {"id": e.id, "questions": list(e.questions)}
        if e.keywords:
            item["keywords"] = list(e.keywords)
        item["answer"] = e.answer
        if e.tags:
            item["tags"] = list(e.tags)
        if e.category:
            item["category"] = e.category
        faqs.append(item)
    doc: dict[str, Any] = {}
    if kb.synonyms:
        doc["synonyms"] = [list(g) for g in kb.synonyms]
    doc["faqs"] = faqs
    return doc


def write_kb(path: pathlib.Path, kb: KnowledgeBase) -> None:
    """Write the KB atomically (temp file + rename), so a reader never sees half a file. Comments are not kept."""
    text = "# FAQ knowledge base, written by Huiliu's admin API.\n" + yaml.safe_dump(
        kb_document(kb), allow_unicode=True, sort_keys=False, width=1000
    )
    fd, tmp = tempfile.mkstemp(prefix=".faq-", suffix=".yaml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


class Matcher(Protocol):
    """What the policy and intake need from an index: a fixed FaqIndex, or a LiveIndex that hot-reloads."""

    def search(self, text: str, limit: int = 3) -> tuple[FaqHit, ...]: ...

    def entry(self, entry_id: str) -> FaqEntry | None: ...


# --- matching ------------------------------------------------------------------------------------------------
# Feature kinds: whole words count most; Chinese character bigrams and single characters are fallbacks for
# words jieba segments differently (开发票 vs 发票), so they count for less. Weights were tuned on the dev sets.
_W_WORD = 1.0
_W_BIGRAM = 0.8
_W_CHAR = 0.5
_W_PAIR = 0.4  # two adjacent content words, for English word order ("card declined" vs "declined transfer")
_IDF_POWER = 1.0
_UNKNOWN = 0.7  # a query word the KB never uses counts against a match, like a fairly rare KB word
# Score = weighted mix of the entry's normalized BM25, its best and second phrasings' cosines and a fuzzy ratio.
_A_BEST, _A_SECOND, _A_BM25, _A_FUZZ = 0.15, 0.05, 0.70, 0.10
_KEYWORD_BONUS = 0.08
_K1, _B = 1.2, 0.75
_CANDIDATES = 16  # entries whose BM25 is completed on every query feature after the inverted-index pass
_RESCORE = 6  # of those, the best are scored on their phrasings too
# Candidates come from the rarest query features until this many postings are walked (always the rarest one):
# common features then only rescore the candidates, so a query's cost does not grow with the KB.
_POSTINGS_BUDGET = 500
# Single Chinese characters find candidates only as a fallback, for a query whose words and bigrams reach few
# postings (massive-zh-dev: 14% of queries share no word or bigram with their entry, only characters, as 下雪 and
# 雪). They are walked after every word and bigram, and only while fewer postings than this have been walked.
_CHAR_BUDGET = 60
_CHAR_MIN = 2
_TYPO_CUTOFF = 84
_TYPO_CACHE = 10_000  # typo fixes remembered per index
# Answers remembered per index. Customers ask the same few questions in the same words ("怎么开发票", a menu
# question, "转人工"), and a search is a pure function of the index (rebuilt, never changed, on a KB reload) and the
# text: repeating it cost a third of a push's CPU on the event loop.
_SEARCH_CACHE = 4096
# The learned model (bot/learn.py) and how its logits combine with the lexical score: logit = model + _BETA *
# lexical score, softmax over the rescored candidates and a "none of these" option at logit _NULL, so a query
# that no candidate explains well gets a low probability even when one candidate beats the others.
# Confusable entries each phrasing is trained against (from the inverted index). 32 rather than 8: the model then
# also learns to tell an entry from the less obvious neighbours a query still meets among its candidates, and its
# probabilities separate right from wrong answers better on every dev set.
_TRAIN_NEGATIVES = 32
# ...within a budget of (phrasing, negative) pairs, so a large KB trains in bounded time: 1,000 entries of ten
# phrasings took 6.2 s to build with 32 each, 2.6 s with 8. The dev KBs (up to 1,500 trained phrasings) keep 32.
_TRAIN_PAIRS = 64_000
_MIN_NEGATIVES = 8
_TRAIN_BUDGET = 120  # postings walked to find them: a phrasing's rarest words find its confusable entries
# The model's word and bigram inputs are damped IDF values (the square root): the weights it learns say which words
# tell entries apart, and a full IDF let rare words (a name, a typo in one phrasing) outweigh what it learned. Single
# characters keep their full IDF: one character is shared by many unrelated words, and only its rarity says how
# much it tells. All four dev sets rank better (top1: clinc150 +0.010, banking77 +0.012, massive +0.006, afqmc +0.004).
_MODEL_IDF_POWER = 0.5
# Phrase-level inputs, weighed below single words (a scale on their damped IDF): adjacent English word pairs,
# stopwords kept ("my card" / "card arrive", "what is" / "is it"), and a text's first and last word, where a
# question's kind (how / can / what) and its object usually sit. Top1, before -> after (pairs only / with ends):
# clinc150 0.816 -> 0.8177 / 0.8200, banking77 0.736 -> 0.747 / 0.7433, massive-zh 0.6317 -> 0.6317 / 0.6322,
# afqmc 0.0810 -> 0.0810 / 0.0808. Chinese word pairs added nothing (massive-zh +0.0006); English character
# n-grams cost every English set (3-grams: clinc150 0.800, banking77 0.725). Weights 0.4-1.4 for the pairs were
# tried: at 1.0 banking77 falls back to 0.735, at 0.4 clinc150 gains less. They cost build time: more inputs per
# phrasing to train on (bench/faq_speed.py --many-phrasings, build CPU about +35%).
_MODEL_KIND: dict[str, float] = {"q": 0.6, "e": 0.3}
_ALPHA = 1.0
_BETA = 8.0
_NULL = 4.0
# An entry whose phrasings never ask what the query asks (bot/qtype.py: a definition where every phrasing asks
# how to do it) is no answer to it, however many topic words they share: its score is capped below answering (it
# can still be suggested). The ranking stays as it was. Dev sets, best answered_correct reachable with wrong
# answers at goal and at most 10% of left-out entries' questions answered: clinc150 0.470 -> 0.494, banking77
# 0.369 -> 0.387, massive-zh 0.194 -> 0.187.
_QTYPE_CAP = 0.5
_UNCORROBORATED = 0.5  # the highest score of an entry that only one phrasing supports (below answering)
# A KB's own temperature on the logits (and the null), so a probability means the same in every KB: how sure the
# index may be depends on how alike its entries are (massive-zh-dev's near-identical intents make confident wrong
# answers that clinc150-en-dev's distinct ones do not). It is fitted when the index is built, by holding a third
# of the phrasings of every entry with enough of them out of a second index and asking that index for them: the
# temperature that gives those held-out phrasings the highest likelihood (their own entry, or "none of these" when
# the index does not offer it). Only for a KB with this many phrasings per entry on average, and enough held-out
# phrasings to say anything; otherwise 1. A temperature rather than thresholds per KB: one number fitted on the
# whole likelihood is stable where thresholds read off a few dozen held-out phrasings were not. Even so, ~50
# held-out phrasings gave massive-zh-dev anything from 0.8 to 1.4 depending on which were held out (~150: 1.0 to
# 1.15), and the 25-entry sample KB a meaningless 1.9: below _CALIBRATE_MIN_HELD the temperature stays 1.
_CALIBRATE_MIN_PHRASINGS = 3.0
_CALIBRATE_MIN_HELD = 120
# The highest score shown: "none of these" always keeps some probability, so a 1.0 would only be rounding (and
# answer_threshold 1.0 must still mean "never answer").
_MAX_SCORE = 0.9999
# Held-out folds pooled for the temperature: up to _MAX_FOLDS, until _HELD_TARGET phrasings are held out. One fold
# of a dev KB (150-450 phrasings) gave temperatures that moved with which third was held out (clinc150 0.68-0.77,
# banking77 0.83-0.92, massive-zh 0.98-1.16), and with them answered_correct at the same thresholds (clinc150
# 0.57-0.60). Three folds pooled: 0.73-0.74, 0.89-0.90 and 1.05-1.12 (clinc150 0.593-0.603 at 0.85). A large KB
# reaches the target in one fold, so its build pays for one held-out index only.
_MAX_FOLDS = 3
_HELD_TARGET = 1000
# Sibling entries: two entries that the held-out fit's phrasings of one rank under the other at least this many
# times (massive-zh-dev: play_music and music_likeness). When the best two candidates are siblings, the best one's
# score is capped below answering (unless the query is one of its phrasings as written): the customer picks from a
# "did you mean" list rather than get the wrong one. Best answered_correct at goal (as for _QTYPE_CAP): 5 gave
# clinc150 0.492 (0.494 without), banking77 0.403 (0.387), massive-zh 0.184 (0.187); 3 and 2 cost every set (2:
# 0.458 / 0.354 / 0.136), as the rule then caught right answers more than wrong ones.
_SIBLING_MIN = 5
_SIBLING_CAP = 0.5
_T_MIN, _T_MAX = 0.5, 2.0  # the temperatures a KB may get


def _features_cached(a: Analyzed, cache: dict[Analyzed, frozenset[str]]) -> frozenset[str]:
    feats = cache.get(a)
    if feats is None:
        feats = cache[a] = frozenset(_features(a))
    return feats


def _model_features_cached(a: Analyzed, cache: dict[Analyzed, frozenset[str]]) -> frozenset[str]:
    feats = cache.get(a)
    if feats is None:
        feats = cache[a] = frozenset(_model_features(a))
    return feats


_DIGITS = re.compile(r"[0-9]+")


def _shapes(tokens: Sequence[str]) -> set[str]:
    """Tokens with digits stand for their shape too ("5pm" and "7pm" both are "0pm", "50" and "2000" are "0"):
    a KB's phrasings hold a few example numbers, and customers type others."""
    if not _DIGITS.search("".join(tokens)):  # most texts hold none: one scan, not one per token
        return set()
    return {_DIGITS.sub("0", t) for t in tokens if _DIGITS.search(t)}


def _features(a: Analyzed) -> set[str]:
    feats = {"w" + t for t in a.terms}
    feats.update("w" + t for t in _shapes(a.terms))
    feats.update("b" + b for b in a.bigrams)
    feats.update("c" + c for c in a.chars)
    latin = [t for t in a.terms if not is_cjk(t)]
    feats.update("p" + x + " " + y for x, y in itertools.pairwise(latin))
    return feats


def _model_features(a: Analyzed) -> set[str]:
    """The learned model's features: every word (stopwords too), adjacent word pairs, the first and last word, and
    Chinese character bigrams and characters."""
    words = a.words
    feats = {"r" + t for t in words}
    feats.update("r" + t for t in _shapes(words))
    feats.update("q" + x + " " + y for x, y in itertools.pairwise(words) if x.isascii() and y.isascii())
    if words:
        feats.update(("e^" + words[0], "e$" + words[-1]))
    feats.update("b" + b for b in a.bigrams)
    feats.update("c" + c for c in a.chars)
    return feats


_weight = operator.itemgetter(1)  # of a posting (entry, weight); a stable sort, reversed, keeps ties in entry order
_KIND = {"w": _W_WORD, "b": _W_BIGRAM, "c": _W_CHAR, "p": _W_PAIR}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Phrase:
    question: str
    features: frozenset[str]
    inv_norm: float
    content: str


@dataclass(frozen=True, slots=True)
class _Scored:
    """A rescored candidate: its logit, the entry and its best phrasing, whether more than one phrasing (or a
    keyword) supports it, whether it asks the query's kind of question, and what the null option reads off it."""

    logit: float
    entry: int
    phrasing: int
    corroborated: bool
    agrees: bool
    verbatim: bool  # the query is one of this entry's phrasings, as written


@dataclass(frozen=True, slots=True, kw_only=True)
class _Analysis:
    """How an index analyzes text, and what it has analyzed: shared with the held-out indexes cut from it."""

    tokenizer: Any
    synonyms: dict[str, str]
    cache: dict[str, Analyzed]
    normalized: dict[str, str]  # phrasing -> fold_for_matching(phrasing)
    # What the index reads off an analyzed phrasing, computed once for the index and its held-out indexes.
    features: dict[Analyzed, frozenset[str]] = dataclasses.field(default_factory=dict)
    model_features: dict[Analyzed, frozenset[str]] = dataclasses.field(default_factory=dict)
    kinds: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)  # phrasing -> its question types
    # (entry, phrasing) -> the confusable entries it is trained against
    negatives: dict[tuple[int, str], list[int]] = dataclasses.field(default_factory=dict)


class FaqIndex:
    """An inverted index over the entries, with term weights learned from the KB itself.

    Built once (sync, pure). Each entry is one BM25 document (all its phrasings and keywords); its postings hold
    precomputed BM25 weights, so a query only walks the postings of its rarer features. The best few entries are
    then scored exactly: every query feature, their best phrasings (weighted cosine) and a rapidfuzz comparison.
    """

    def __init__(
        self,
        entries: Sequence[FaqEntry],
        *,
        synonyms: Iterable[Iterable[str]] = (),
        calibrate: bool = True,
        _analysis: _Analysis | None = None,
    ) -> None:
        """``_analysis``: the tokenizer, synonyms and analyzed texts of the index a held-out index is cut from, so
        fitting the temperature neither builds a second tokenizer nor segments the same phrasings again."""
        self._entries = tuple(entries)
        self._by_id = {e.id: e for e in self._entries}
        if len(self._by_id) != len(self._entries):
            raise ValueError("FAQ entry ids must be unique")
        groups = [tuple(g) for g in synonyms]
        self._user_words: tuple[str, ...] = ()
        if _analysis is None:
            normal = {q: fold_for_matching(q) for e in self._entries for q in e.questions}
            user_words = [k for e in self._entries for k in e.keywords]
            user_words += [q for e in self._entries for q in e.questions if 2 <= len(normal[q]) <= 4]
            user_words += [w for g in (*groups, *STARTER_SYNONYMS) for w in g]
            tokenizer = new_tokenizer(user_words)
            self._user_words = tuple(user_words)
            folds = merged(synonym_map(groups, normalize=_fold), synonym_map(STARTER_SYNONYMS, normalize=_fold))
            _analysis = _Analysis(tokenizer=tokenizer, synonyms=folds, cache={}, normalized=normal)
        self._tokenizer = _analysis.tokenizer
        self._synonyms = _analysis.synonyms
        cache = _analysis.cache
        normal = _analysis.normalized
        analyzed = [[self._analyze_cached(q, cache, normal) for q in e.questions] for e in self._entries]
        self._keywords = [[self._analyze_cached(k, cache) for k in e.keywords] for e in self._entries]
        # A question typed exactly as one entry (and no other) words it.
        verbatim: dict[str, int] = {}
        for i, e in enumerate(self._entries):
            for q in e.questions:
                verbatim[normal[q]] = i if verbatim.get(normal[q], i) == i else -1
        self._verbatim = {q: i for q, i in verbatim.items() if i >= 0}
        # Each distinct phrasing's question types, once (held-out indexes share the texts).
        kinds = _analysis.kinds
        for e in self._entries:
            for q in e.questions:
                if q not in kinds:
                    kinds[q] = question_types(normal[q])
        self._qtypes = [union(kinds[q] for q in e.questions) for e in self._entries]
        feats_cache = _analysis.features
        phrase_feats = [[_features_cached(a, feats_cache) for a in phrasings] for phrasings in analyzed]
        keyword_feats = [[_features_cached(k, feats_cache) for k in kws] for kws in self._keywords]
        # A term's frequency in an entry is the number of its phrasings (and keywords) that hold it: a word most
        # phrasings of an entry share is what that entry is about.
        tfs = [Counter(itertools.chain(*phrase_feats[i], *keyword_feats[i])) for i in range(len(self._entries))]
        df: Counter[str] = Counter()
        for tf in tfs:
            df.update(tf.keys())
        n = max(len(self._entries), 1)
        self._n = n
        self._weight2 = {f: (_KIND[f[0]] * math.log(1 + n / d) ** _IDF_POWER) ** 2 for f, d in df.items()}
        self._unknown2 = {k: (w * math.log(1 + n) ** _IDF_POWER * _UNKNOWN) ** 2 for k, w in _KIND.items()}
        self._vocab = sorted({f[1:] for f in df if f[0] == "w" and not is_cjk(f[1:]) and f[1:].isalpha()})
        self._vocab_by_initial: dict[str, list[str]] = defaultdict(list)
        for word in self._vocab:
            self._vocab_by_initial[word[0]].append(word)
        self._typos: dict[str, str] = {}
        self._searched: dict[tuple[str, int], tuple[FaqHit, ...]] = {}
        weight2 = self._weight2
        self._phrases: list[tuple[_Phrase, ...]] = [
            tuple(
                _Phrase(
                    question=self._entries[i].questions[k],
                    features=feats,
                    inv_norm=1.0 / (math.sqrt(math.fsum(map(weight2.__getitem__, feats))) or 1.0),
                    content=a.content,
                )
                for k, (feats, a) in enumerate(zip(phrase_feats[i], analyzed[i], strict=True))
            )
            for i in range(len(self._entries))
        ]
        lengths = [sum(tf.values()) for tf in tfs]
        avg = sum(lengths) / max(len(lengths), 1) or 1.0
        self._bm25 = {f: math.log(1 + (n - d + 0.5) / (d + 0.5)) * _KIND[f[0]] for f, d in df.items()}
        self._bm25_unknown = {k: w * math.log(1 + (n + 0.5) / 0.5) * _UNKNOWN for k, w in _KIND.items()}
        self._entry_terms: list[dict[str, float]] = []
        postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
        bm25 = self._bm25
        for i, tf in enumerate(tfs):
            denom_len = _K1 * (1 - _B + _B * lengths[i] / avg)
            values = {f: bm25[f] * c * (_K1 + 1) / (c + denom_len) for f, c in tf.items()}
            self._entry_terms.append(values)
            for f, v in values.items():
                postings[f].append((i, v))
        ranked = {f: sorted(p, key=_weight, reverse=True) for f, p in postings.items()}
        # Each feature's place in the walk's order, sorted once: (words and bigrams before characters, fewer postings
        # first, then the feature itself).
        order = sorted(ranked, key=lambda f: (f[0] == "c", len(ranked[f]), f))
        self._anchor_rank = {f: k for k, f in enumerate(order)}
        # The postings as two flat arrays, one feature after another in that order, and where each feature's are:
        # a walk sums them in numpy (a loop over them in Python was a fifth of ranking a query), and an index sent
        # from the process that built it pickles two arrays rather than a tuple per posting.
        flat = np.array(list(itertools.chain.from_iterable(map(ranked.__getitem__, order))), dtype=np.float64)
        flat = flat.reshape(-1, 2)  # (entry, weight) rows, none in a KB of stopwords
        self._post_entry = flat[:, 0].astype(np.int64)
        self._post_weight = flat[:, 1].copy()
        sizes = [len(ranked[f]) for f in order]
        starts = [0, *itertools.accumulate(sizes)][:-1]
        self._postings: dict[str, tuple[int, int]] = dict(zip(order, zip(starts, sizes, strict=True), strict=True))
        self._train_model(analyzed, phrase_feats, _analysis.model_features, _analysis.negatives, order)
        self._temperature, self._siblings = self._fit_confidence(_analysis) if calibrate else (1.0, frozenset())

    def __getstate__(self) -> dict[str, Any]:
        """An index built in another process (bot/aside.py) crosses over without its jieba tokenizer: that holds
        a lock and a copy of jieba's whole dictionary, and is rebuilt from the KB's user words on arrival."""
        state = dict(self.__dict__)
        del state["_tokenizer"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._tokenizer = new_tokenizer(self._user_words)

    @property
    def temperature(self) -> float:
        """The KB's own temperature on the logits (1 when the KB is too small or too thin to fit one)."""
        return self._temperature

    def _fit_confidence(self, analysis: _Analysis) -> tuple[float, frozenset[tuple[int, int]]]:
        """The KB's temperature, and its sibling entries (the pairs its held-out phrasings confuse).

        Hold a third of the phrasings of each entry (with at least three) out of a held-out index, and pick the
        temperature under which that index's probabilities best predict where those phrasings belong. Folds after
        the first hold out the next third each, pooled, until _HELD_TARGET phrasings are held out (see _MAX_FOLDS).
        A held-out phrasing that the held-out index ranks under another entry makes the two siblings.
        """
        entries = self._entries
        if sum(len(e.questions) for e in entries) < _CALIBRATE_MIN_PHRASINGS * len(entries):
            return 1.0, frozenset()
        if sum(len(e.questions) // 3 for e in entries) < _CALIBRATE_MIN_HELD:
            return 1.0, frozenset()
        examples: list[tuple[list[float], int]] = []  # (logits, position of the right one; -1: none of these)
        confused: dict[tuple[int, int], int] = defaultdict(int)
        for fold in range(_MAX_FOLDS):
            if len(examples) >= _HELD_TARGET:
                break
            held: list[tuple[str, int]] = []
            kept: list[FaqEntry] = []
            for i, e in enumerate(entries):
                n = len(e.questions)
                if n >= 3:
                    # A third of its phrasings, spread over the list and not always from its start.
                    out = {(i + fold + j * 3) % n for j in range(n // 3)}
                    held += [(q, i) for k, q in enumerate(e.questions) if k in out]
                    rest = tuple(q for k, q in enumerate(e.questions) if k not in out)
                    e = FaqEntry(id=e.id, questions=rest, answer=e.answer, keywords=e.keywords)
                kept.append(e)
            # A large KB holds out more than it needs in one fold: rank an even sample of them (ranking is most
            # of the fit's cost once the held-out index is built).
            need = _HELD_TARGET - len(examples)
            if len(held) > need:
                held = [held[round(n * len(held) / need)] for n in range(need)]
            other = FaqIndex(kept, calibrate=False, _analysis=analysis)
            for text, i in held:
                ranked = other._rank(text, _RESCORE, analysis.cache.get(text), analysis=analysis)
                logits = [r.logit for r in ranked]
                gold = next((n for n, r in enumerate(ranked) if r.entry == i), -1)
                examples.append((logits, gold))
                if ranked and ranked[0].entry != i:
                    confused[min(i, ranked[0].entry), max(i, ranked[0].entry)] += 1
        siblings = frozenset(pair for pair, count in confused.items() if count >= _SIBLING_MIN)

        def nll(inv_t: float) -> float:
            total = 0.0
            for logits, gold in examples:
                top = max(logits, default=_NULL)
                null = (_NULL - top) * inv_t
                zs = [(x - top) * inv_t for x in logits]
                total += math.log(math.exp(null) + sum(map(math.exp, zs))) - (zs[gold] if gold >= 0 else null)
            return total

        # The likelihood is convex in 1/T (a log-sum-exp of linear functions minus a linear one): golden section.
        lo, hi = 1.0 / _T_MAX, 1.0 / _T_MIN
        ratio = (math.sqrt(5) - 1) / 2
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        fa, fb = nll(a), nll(b)
        while hi - lo > 1e-3:
            if fa < fb:
                hi, b, fb = b, a, fa
                a = hi - ratio * (hi - lo)
                fa = nll(a)
            else:
                lo, a, fa = a, b, fb
                b = lo + ratio * (hi - lo)
                fb = nll(b)
        return round(2.0 / (lo + hi), 3), siblings

    def _train_model(
        self,
        analyzed: list[list[Analyzed]],
        phrase_feats: list[list[frozenset[str]]],
        cache: dict[Analyzed, frozenset[str]],
        shared: dict[tuple[int, str], list[int]],
        order: list[str],
    ) -> None:
        """Learn per-entry feature weights from the phrasings: each phrasing is an example of its entry, told
        apart from the entries the inverted index finds for it. ``order``: the features in the walk's order."""
        model_feats = [[_model_features_cached(a, cache) for a in phrasings] for phrasings in analyzed]
        every = list(itertools.chain.from_iterable(itertools.chain.from_iterable(model_feats)))
        df = Counter(every)
        total = sum(len(p) for p in model_feats)
        # feature -> (its column in the model, its damped IDF): one lookup per query feature
        names = sorted(df)
        counts = np.fromiter((df[f] for f in names), dtype=np.float64, count=len(names))
        kind = np.fromiter((_MODEL_KIND.get(f[0], 1.0) for f in names), dtype=np.float64, count=len(names))
        power = np.fromiter((1.0 if f[0] == "c" else _MODEL_IDF_POWER for f in names), np.float64, len(names))
        idf = kind * (np.log((1 + total) / (1 + counts)) + 1) ** power
        self._model_feats = dict(zip(names, zip(range(len(names)), idf.tolist(), strict=True), strict=True))
        classes: list[int] = []
        negatives: dict[int, list[int]] = {}
        trained = sum(len(p) for p in model_feats if len(p) > 1)
        per_row = max(_MIN_NEGATIVES, min(_TRAIN_NEGATIVES, _TRAIN_PAIRS // max(trained, 1)))
        # An entry with one phrasing has nothing its phrasings share to learn: its centroid is it. A held-out index
        # takes the entries its parent index found (the same entries, in the same order): walking for them again
        # was a tenth of a large KB's build.
        missing = {
            (i, q): feats
            for i, phrasings in enumerate(model_feats)
            if len(phrasings) > 1
            for q, feats in zip(self._entries[i].questions, phrase_feats[i], strict=True)
            if (i, q) not in shared
        }
        shared.update(zip(missing, self._confusable(list(missing.items()), order, per_row), strict=True))
        for i, phrasings in enumerate(model_feats):
            for q in self._entries[i].questions:
                if len(phrasings) > 1:
                    negatives[len(classes)] = shared[i, q][:per_row]
                classes.append(i)
        # Every phrasing's row at once (what _model_row does for a query): its features in column order, with
        # their IDF values, L2-normalized. Every feature of a phrasing is known here.
        column = {f: k for k, f in enumerate(names)}
        cols = np.fromiter(map(column.__getitem__, every), dtype=np.int64, count=len(every))
        lengths = np.fromiter((len(f) for p in model_feats for f in p), dtype=np.int64, count=total)
        row = np.repeat(np.arange(total), lengths)
        cols = cols[np.argsort(row * max(len(names), 1) + cols, kind="stable")]
        values = idf[cols]
        norm = np.sqrt(np.bincount(row, weights=values * values, minlength=total))
        norm[norm == 0] = 1.0
        self._model: LinearModel = train(
            Rows(lengths=lengths, features=cols, values=values / norm[row]), classes, negatives, len(self._entries)
        )

    def _confusable(
        self, phrasings: list[tuple[tuple[int, str], frozenset[str]]], order: list[str], limit: int
    ) -> list[list[int]]:
        """For each phrasing (its entry, its text; its features): the entries ``_walk(features, _TRAIN_BUDGET)``
        finds for it, by partial BM25, best first (ties in the order found), without its own entry, at most
        ``limit``.

        The same walk, for every phrasing at once in numpy: a phrasing's own walk in Python was a tenth of a large
        KB's build. A feature's postings are walked up to the budget left (the characters' budget for a Chinese
        character), and how much that leaves is a running sum capped by the budgets along the walk's order.
        """
        if not phrasings:
            return []
        rank = self._anchor_rank
        postings = self._postings
        budget, char_budget = _TRAIN_BUDGET, min(_TRAIN_BUDGET, _CHAR_BUDGET)
        # The postings, one feature after another in the walk's order.
        size = np.fromiter((postings[f][1] for f in order), dtype=np.int64, count=len(order))
        offset = np.cumsum(size) - size
        is_char = np.fromiter((f[0] == "c" for f in order), dtype=bool, count=len(order))
        entry, weight = self._post_entry, self._post_weight
        # Each phrasing's features in the walk's order (its anchors), one phrasing after another.
        ranked = [rank.get(f, -1) for _, feats in phrasings for f in feats]
        owner = np.repeat(np.arange(len(phrasings)), [len(feats) for _, feats in phrasings])
        feature = np.asarray(ranked, dtype=np.int64)
        known = feature >= 0
        owner, feature = owner[known], feature[known]
        feature = feature[np.argsort(owner * len(order) + feature)]
        count = np.bincount(owner, minlength=len(phrasings))
        first = np.cumsum(count) - count  # each phrasing's first anchor
        # Postings walked after each anchor: the running sum of its postings, capped by the anchor's budget, never
        # going back (a character's lower budget ends the walk where the words left it at or past it).
        some = first[count > 0]  # (a phrasing of stopwords only has no anchors)
        total = np.cumsum(size[feature])
        total -= np.repeat(total[some] - size[feature[some]], count[count > 0])
        cap = np.where(is_char[feature], char_budget, budget)
        step = budget + 1  # keeps each phrasing's running maximum its own
        after = np.maximum.accumulate(np.minimum(cap, total) + owner * step) - owner * step
        before = np.concatenate(([0], after[:-1]))
        before[some] = 0
        taken = after - before
        # The postings walked, in walk order: (phrasing, entry, weight, from a character).
        pos = np.repeat(offset[feature] - np.cumsum(taken) + taken, taken) + np.arange(int(taken.sum()))
        by = np.repeat(owner, taken)
        by_char = np.repeat(is_char[feature], taken)
        n = len(self._entries)
        keys, group = unique_inverse(by * n + entry[pos])
        score = np.bincount(group, weights=weight[pos], minlength=len(keys))
        found_at = np.empty(len(keys), dtype=np.int64)
        found_at[group[::-1]] = np.arange(len(group) - 1, -1, -1)  # the first time each was found
        phrasing_of, entry_of = keys // n, keys % n
        own = np.fromiter((i for (i, _), _ in phrasings), dtype=np.int64, count=len(phrasings))
        keep = entry_of != own[phrasing_of]
        # An entry that only a character found must share _CHAR_MIN of the phrasing's characters (as in _walk).
        terms = self._entry_terms
        for g in np.flatnonzero(by_char[found_at] & keep).tolist():
            p = int(phrasing_of[g])
            values = terms[int(entry_of[g])]
            mine = feature[first[p] : first[p] + count[p]]
            if sum(order[a] in values for a in mine[is_char[mine]].tolist()) < _CHAR_MIN:
                keep[g] = False
        kept = np.flatnonzero(keep)
        best = kept[np.lexsort((found_at[kept], -score[kept], phrasing_of[kept]))]
        # The first ``limit`` of each phrasing's run.
        where = phrasing_of[best]
        runs = np.bincount(where, minlength=len(phrasings))
        place = np.arange(len(best)) - np.repeat(np.cumsum(runs) - runs, runs)
        found = entry_of[best[place < limit]].tolist()
        ends = np.cumsum(np.minimum(runs, limit)).tolist()
        return [found[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]

    def _model_row(self, feats: Iterable[str]) -> tuple[list[int], list[float]]:
        """Known features with IDF values, L2-normalized (unknown features say nothing to the model)."""
        table = self._model_feats
        # In column order: a set's order changes with PYTHONHASHSEED, and with it the float sums (and near-ties).
        known = sorted(found for f in feats if (found := table.get(f)) is not None)
        norm = math.sqrt(math.fsum(idf * idf for _, idf in known)) or 1.0
        return [k for k, _ in known], [idf / norm for _, idf in known]

    def _walk(self, feats: Iterable[str], budget: int = _POSTINGS_BUDGET) -> tuple[dict[int, float], set[str]]:
        """Candidates from the rarer features (always the rarest one), so common words never force a walk over
        most of the index; returns their partial BM25 and the features whose every posting was walked."""
        postings = self._postings
        # Words and bigrams first, rarest first; single characters last and only as a fallback (_CHAR_BUDGET).
        # Ties go by the feature itself: in set order, which a budget cut then depends on, the candidates (and
        # the model's training negatives) changed with PYTHONHASHSEED, and every metric by about 0.001.
        rank = self._anchor_rank
        anchors = sorted((f for f in feats if f in rank), key=rank.__getitem__)
        walked = 0
        complete: set[str] = set()
        char_budget = min(budget, _CHAR_BUDGET)
        chars_from = -1  # postings walked before the first character's (-1: no character walked)
        spans: list[tuple[int, int]] = []
        for f in anchors:
            # Postings are in order of weight, so a cut keeps the entries where the feature counts most.
            at, size = postings[f]
            if f[0] == "c":
                if walked >= char_budget:
                    break
                if chars_from < 0:
                    chars_from = walked
                take = min(size, char_budget - walked)
            else:
                take = min(size, budget - walked)
            spans.append((at, take))
            walked += take
            if take == size:
                complete.add(f)
            if walked >= budget:
                break
        if not spans:
            return {}, complete
        # Each entry's sum of the postings walked, in the order they were walked (bincount adds them in that order,
        # as a loop did), and entries in the order first found.
        if len(spans) == 1:
            at, take = spans[0]
            ids, weights = self._post_entry[at : at + take], self._post_weight[at : at + take]
        else:
            pick = np.concatenate([np.arange(at, at + take) for at, take in spans])
            ids, weights = self._post_entry[pick], self._post_weight[pick]
        sums = np.bincount(ids, weights=weights)
        seen = np.full(len(sums), walked, dtype=np.int64)
        seen[ids[::-1]] = np.arange(walked - 1, -1, -1)  # where each entry was first found
        firsts = ids[seen[ids] == np.arange(walked)]
        acc = dict(zip(firsts.tolist(), sums[firsts].tolist(), strict=True))
        if chars_from >= 0:
            # An entry that shares only one character with the query (天 in 今天 and 几天) is no candidate.
            chars = [f for f in anchors if f[0] == "c"]
            terms = self._entry_terms
            for i in firsts[seen[firsts] >= chars_from].tolist():
                values = terms[i]
                if sum(f in values for f in chars) < _CHAR_MIN:
                    del acc[i]
        return acc, complete

    def _analyze_cached(self, text: str, cache: dict[str, Analyzed], folded: dict[str, str] | None = None) -> Analyzed:
        """``folded``: texts already folded for matching (the phrasings), so they are not folded twice."""
        a = cache.get(text)
        if a is None:
            if folded is not None and (done := folded.get(text)) is not None:
                a = cache[text] = analyze(self._tokenizer, done, self._synonyms, folded=True)
            else:
                a = cache[text] = self._analyze(text)
        return a

    def _analyze(self, text: str) -> Analyzed:
        return analyze(self._tokenizer, text, self._synonyms)

    @property
    def entries(self) -> tuple[FaqEntry, ...]:
        return self._entries

    def entry(self, entry_id: str) -> FaqEntry | None:
        return self._by_id.get(entry_id)

    def _fix_typos(self, query: Analyzed) -> Analyzed:
        """An English word the KB never uses is most likely a typo of one it does ("pasword")."""
        fixed: list[str] = []
        changed = False
        for t in query.terms:
            if len(t) >= 4 and t.isalpha() and t.isascii() and ("w" + t) not in self._weight2:
                fix = self._typos.get(t)
                if fix is None:
                    fix = self._typo_fix(t)
                    if len(self._typos) >= _TYPO_CACHE:
                        self._typos.clear()  # bounded; cleared *before* the new word goes in, never after
                    self._typos[t] = fix
                changed |= fix != t
                fixed.append(fix)
            else:
                fixed.append(t)
        if not changed:
            return query
        fixes = dict(zip(query.terms, fixed, strict=True))
        return Analyzed(
            terms=tuple(fixed),
            bigrams=query.bigrams,
            chars=query.chars,
            content=" ".join(fixed),
            words=tuple(fixes.get(w, w) for w in query.words),
        )

    def _typo_fix(self, word: str) -> str:
        """The closest KB word, if it is close: same first letter (typos rarely hit it, and "cold" is not "old"),
        and not shorter unless the word is long ("titl" is not "til", "ruin" is not "run")."""
        choices = self._vocab_by_initial.get(word[0], ())
        for match, _, _ in process.extract(word, choices, scorer=fuzz.ratio, score_cutoff=_TYPO_CUTOFF, limit=3):
            if len(match) >= len(word) or len(word) >= 6:
                return match
        return word

    def search(self, text: str, limit: int = 3) -> tuple[FaqHit, ...]:
        if limit <= 0:
            return ()
        found = self._searched.get((text, limit))
        if found is None:
            found = self._search(text, limit)
            if len(self._searched) >= _SEARCH_CACHE:
                self._searched.clear()  # bounded; a miss only costs one search
            self._searched[text, limit] = found
        return found

    def _search(self, text: str, limit: int) -> tuple[FaqHit, ...]:
        scored_entries = self._rank(text, limit)
        if not scored_entries:
            return ()
        t = self._temperature
        top = scored_entries[0].logit
        norm = math.exp((_NULL - top) / t) + sum(math.exp((r.logit - top) / t) for r in scored_entries)
        siblings = (
            len(scored_entries) > 1
            and not scored_entries[0].verbatim
            and tuple(sorted((scored_entries[0].entry, scored_entries[1].entry))) in self._siblings
        )
        hits: list[FaqHit] = []
        for r in scored_entries[:limit]:
            p = math.exp((r.logit - top) / t) / norm
            shown = p if r.corroborated else min(p, _UNCORROBORATED)
            if not r.agrees:
                shown = min(shown, _QTYPE_CAP)
            if siblings:
                shown = min(shown, _SIBLING_CAP)
            question = self._phrases[r.entry][r.phrasing].question
            hits.append(
                FaqHit(entry_id=self._entries[r.entry].id, question=question, score=round(min(shown, _MAX_SCORE), 4))
            )
        return tuple(hits)

    def _rank(
        self, text: str, limit: int, analyzed: Analyzed | None = None, *, analysis: _Analysis | None = None
    ) -> list[_Scored]:
        """The rescored candidates, best first. ``analysis``: what the index (or the one it was cut from) has read
        off ``analyzed`` (one of its phrasings, which the held-out fit asks for), reused rather than read again."""
        query = self._fix_typos(analyzed or self._analyze(text))
        reuse = analyzed is not None and query is analyzed
        feats = _features_cached(query, analysis.features) if analysis and reuse else _features(query)
        acc, complete = self._walk(feats)
        if not acc:
            return []
        known = [f for f in feats if f in self._weight2]
        candidates = heapq.nlargest(_CANDIDATES, acc, key=acc.__getitem__) if len(acc) > _CANDIDATES else list(acc)
        # The candidates' BM25 on every query feature: what the walk left out, added from the entry's own terms.
        rest = [f for f in known if f not in complete]
        terms = self._entry_terms
        exact = {}
        for i in candidates:
            values = terms[i]
            exact[i] = acc[i] + math.fsum([values[f] for f in rest if f in values])
        bm25_max = (_K1 + 1) * math.fsum(self._bm25.get(f) or self._bm25_unknown[f[0]] for f in feats)
        model_feats = (
            _model_features_cached(query, analysis.model_features) if analysis and reuse else _model_features(query)
        )
        logits = self._model.logits(*self._model_row(model_feats), candidates)
        model = dict(zip(candidates, logits, strict=True))
        pre = {i: _ALPHA * model[i] + _BETA * _A_BM25 * exact[i] / bm25_max for i in candidates}
        rescore = heapq.nlargest(max(_RESCORE, limit), pre, key=pre.__getitem__)
        weight2 = self._weight2
        inv_q = 1.0 / math.sqrt(math.fsum(weight2.get(f) or self._unknown2[f[0]] for f in feats))
        feat_set = frozenset(known)
        q_weight = {f: weight2[f] for f in known}.__getitem__
        folded = analysis.normalized.get(text) if analysis else None
        folded = fold_for_matching(text) if folded is None else folded
        verbatim = self._verbatim.get(folded, -1)
        asked = analysis.kinds.get(text) if analysis else None
        asked = question_types(folded) if asked is None else asked
        scored_entries: list[_Scored] = []
        for i in rescore:
            scored = sorted(
                [
                    (math.fsum(map(q_weight, feat_set & ph.features)) * ph.inv_norm * inv_q, k)
                    for k, ph in enumerate(self._phrases[i])
                ],
                reverse=True,
            )
            best, k = scored[0]
            second = scored[1][0] if len(scored) > 1 else 0.0
            phrase = self._phrases[i][k]
            fuzzy = fuzz.ratio(query.content, phrase.content) / 100
            lexical = _A_BEST * best + _A_SECOND * second + _A_BM25 * exact[i] / bm25_max + _A_FUZZ * fuzzy
            bonus = self._keyword_bonus(i, query)
            # Only one phrasing supports the entry (and no keyword), and the query is not that phrasing. In a KB
            # of many near-duplicate one-phrasing entries that is no evidence to answer on, even when the
            # content words are the same (afqmc-zh-dev: 95% of such answers were wrong), so it stays a
            # suggestion. It still ranks by its full score.
            corroborated = second > 0.0 or bool(bonus) or verbatim == i
            agrees = verbatim == i or not disagree(asked, self._qtypes[i])
            logit = _ALPHA * model[i] + _BETA * (lexical + bonus)
            scored_entries.append(_Scored(logit, i, k, corroborated, agrees, verbatim == i))
        scored_entries.sort(key=lambda e: -e.logit)
        return scored_entries

    def _keyword_bonus(self, i: int, query: Analyzed) -> float:
        """A KB author's keyword is strong evidence: all its words present, or (Chinese) it appears in the query."""
        if not self._keywords[i]:
            return 0.0
        joined = "".join(t for t in query.terms if is_cjk(t))
        terms = set(query.terms)
        for kw in self._keywords[i]:
            chinese = "".join(kw.terms)
            if kw.terms and (set(kw.terms) <= terms or (is_cjk(chinese) and chinese in joined)):
                return _KEYWORD_BONUS
        return 0.0


def _fold(word: str) -> str:
    """How a synonym list's word is compared with analyzed tokens: normalized, English stemmed."""
    word = fold_for_matching(word)
    return stem(word) if word.isascii() else word
