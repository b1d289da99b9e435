"""The FAQ knowledge base: loading it from YAML and searching it."""

from __future__ import annotations

import math
import pathlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import yaml
from rapidfuzz import fuzz

from bot.text import Analyzed, analyze, is_cjk, new_tokenizer, normalize
from core.model import FaqHit


class KbError(Exception):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class FaqEntry:
    id: str
    questions: tuple[str, ...]
    answer: str
    keywords: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


_FIELDS = frozenset({"id", "questions", "answer", "keywords", "tags"})


def load_kb(path: pathlib.Path) -> tuple[FaqEntry, ...]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KbError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KbError(f"{path}: cannot read: {e}") from None
    except yaml.YAMLError as e:
        raise KbError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("faqs"), list) or not data["faqs"]:
        raise KbError(f"{path}: top level must be a mapping with a non-empty 'faqs' list")
    entries: list[FaqEntry] = []
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(data["faqs"], start=1):
        entry = _parse_entry(raw, f"{path}: entry #{number}")
        if entry.id in first_seen:
            raise KbError(
                f"{path}: entry #{number}: duplicate id {entry.id!r} (first used by entry #{first_seen[entry.id]})"
            )
        first_seen[entry.id] = number
        entries.append(entry)
    return tuple(entries)


def _parse_entry(raw: object, where: str) -> FaqEntry:
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
        if not normalize(question):
            raise KbError(f"{where}: question #{n} is empty")
    answer = raw.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise KbError(f"{where}: 'answer' must be a non-empty string")
    return FaqEntry(
        id=entry_id,
        questions=questions,
        answer=answer.strip(),
        keywords=_strings(raw.get("keywords"), "keywords", where, required=False),
        tags=_strings(raw.get("tags"), "tags", where, required=False),
    )


def _strings(value: object, name: str, where: str, *, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list) or (required and not value) or not all(isinstance(v, str) for v in value):
        raise KbError(f"{where}: {name!r} must be a {'non-empty ' if required else ''}list of strings")
    if not all(v.strip() for v in value):
        raise KbError(f"{where}: {name!r} holds an empty string")
    return tuple(v.strip() for v in value)


# Scoring weights. Bigrams are a fallback for Chinese segmentation differences, so they count for less
# than whole words; query words the KB has never seen count partly against a match (they are evidence
# the customer asks about something else) but not as much as a rare KB word would.
_BIGRAM_WEIGHT = 0.5
_UNKNOWN_WEIGHT = 0.6
_W_PHRASE, _W_ENTRY, _W_FUZZ = 0.45, 0.35, 0.20
_QUERY_SIDE = 0.7  # how much the query's coverage counts against the phrasing's coverage
_KEYWORD_BONUS = 0.15


def _features(a: Analyzed) -> set[str]:
    return set(a.terms) | {"\x00" + b for b in a.bigrams}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Phrase:
    entry: int
    question: str
    features: frozenset[str]
    content: str
    weight: float


class FaqIndex:
    def __init__(self, entries: Sequence[FaqEntry]) -> None:
        self._entries = tuple(entries)
        self._by_id = {e.id: e for e in self._entries}
        if len(self._by_id) != len(self._entries):
            raise ValueError("FAQ entry ids must be unique")
        user_words = [k for e in self._entries for k in e.keywords]
        user_words += [q for e in self._entries for q in e.questions if 2 <= len(normalize(q)) <= 3]
        self._tokenizer = new_tokenizer(user_words)
        analyzed = [[analyze(self._tokenizer, q) for q in e.questions] for e in self._entries]
        self._keywords = [[analyze(self._tokenizer, k) for k in e.keywords] for e in self._entries]
        self._entry_features = [
            set().union(*(_features(a) for a in phrasings), *(_features(k) for k in kws))
            for phrasings, kws in zip(analyzed, self._keywords, strict=True)
        ]
        df: dict[str, int] = defaultdict(int)
        for feats in self._entry_features:
            for f in feats:
                df[f] += 1
        n = max(len(self._entries), 1)
        self._idf = {f: math.log(1 + n / d) for f, d in df.items()}
        self._unknown_idf = math.log(1 + n) * _UNKNOWN_WEIGHT
        self._phrases: list[_Phrase] = []
        self._postings: dict[str, list[int]] = defaultdict(list)
        for i, phrasings in enumerate(analyzed):
            for question, a in zip(self._entries[i].questions, phrasings, strict=True):
                phrase_features = frozenset(_features(a))
                for f in phrase_features:
                    self._postings[f].append(len(self._phrases))
                weight = sum(self._weight(f) for f in phrase_features)
                self._phrases.append(
                    _Phrase(entry=i, question=question, features=phrase_features, content=a.content, weight=weight)
                )

    def _weight(self, feature: str) -> float:
        idf = self._idf.get(feature, self._unknown_idf)
        return idf * _BIGRAM_WEIGHT if feature.startswith("\x00") else idf

    def entry(self, entry_id: str) -> FaqEntry | None:
        return self._by_id.get(entry_id)

    def search(self, text: str, limit: int = 3) -> tuple[FaqHit, ...]:
        query = analyze(self._tokenizer, text)
        feats = _features(query)
        q_weight = sum(self._weight(f) for f in feats)
        if not feats or limit <= 0 or q_weight <= 0:
            return ()
        matched: dict[int, float] = defaultdict(float)
        for f in feats:
            for p in self._postings.get(f, ()):
                matched[p] += self._weight(f)
        best: dict[int, tuple[float, str]] = {}
        for p, m in matched.items():
            phrase = self._phrases[p]
            coverage = _QUERY_SIDE * m / q_weight + (1 - _QUERY_SIDE) * m / max(phrase.weight, 1e-9)
            fuzzy = fuzz.ratio(query.content, phrase.content) / 100
            score = _W_PHRASE * coverage + _W_FUZZ * fuzzy
            if phrase.entry not in best or score > best[phrase.entry][0]:
                best[phrase.entry] = (score, phrase.question)
        hits = []
        for i, (score, question) in best.items():
            in_entry = sum(self._weight(f) for f in feats & self._entry_features[i]) / q_weight
            score += _W_ENTRY * in_entry + self._keyword_bonus(i, query)
            hits.append(FaqHit(entry_id=self._entries[i].id, question=question, score=round(min(score, 1.0), 4)))
        hits.sort(key=lambda h: -h.score)
        return tuple(hits[:limit])

    def _keyword_bonus(self, i: int, query: Analyzed) -> float:
        """A KB author's keyword is strong evidence: all its words present, or (Chinese) it appears in the query."""
        joined = "".join(t for t in query.terms if is_cjk(t))
        terms = set(query.terms)
        for kw in self._keywords[i]:
            chinese = "".join(kw.terms)
            if kw.terms and (set(kw.terms) <= terms or (is_cjk(chinese) and chinese in joined)):
                return _KEYWORD_BONUS
        return 0.0
