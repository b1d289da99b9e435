"""Run the bot's real matching and decision code over FAQ benchmark files and score it like the reference scorer."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.faq import FaqEntry, FaqIndex, KbError
from bot.policy import BotPolicy, Outcome, decide
from core.model import HandoffReason
from core.progress import Progress

# Metric names, in the order the reference scorer prints them (plus the index build time).
METRICS = (
    "top1",
    "top3",
    "answered_correct",
    "wrong_answer_rate",
    "suggested",
    "suggest_hit",
    "handoff_recall",
    "p50_ms",
    "p99_ms",
    "build_s",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchQuery:
    text: str
    expected: str | None  # None: no entry fits, the bot must not answer


@dataclass(frozen=True, slots=True, kw_only=True)
class Bench:
    name: str
    faqs: tuple[FaqEntry, ...]
    queries: tuple[BenchQuery, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """One line of a predictions file, in the reference scorer's format."""

    text: str
    decision: str  # "answer" | "suggest" | "handoff"
    answer_id: str | None
    suggested: tuple[str, ...]
    ranked: tuple[str, ...]
    ms: float
    # Not in the file: the two best scores, which calibration needs.
    best: float = 0.0
    runner_up: float = 0.0
    forced: bool = False  # handed off whatever the scores (a human request, complaint wording)

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "decision": self.decision,
            "answer_id": self.answer_id,
            "suggested": list(self.suggested),
            "ranked": list(self.ranked),
            "ms": round(self.ms, 4),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    name: str
    metrics: dict[str, float]
    predictions: tuple[Prediction, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **self.metrics}


def load_bench(path: pathlib.Path) -> Bench:
    """A benchmark file (format in the shared bench README); raises KbError naming what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        faqs = tuple(
            FaqEntry(
                id=str(f["id"]),
                questions=tuple(str(q) for q in f["questions"]),
                answer=str(f.get("answer") or f["id"]),
            )
            for f in data["faqs"]
        )
        queries = tuple(
            BenchQuery(text=str(q["text"]), expected=None if q["expected"] is None else str(q["expected"]))
            for q in data["queries"]
        )
    except FileNotFoundError:
        raise KbError(f"{path}: file not found") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KbError(f"{path}: not a FAQ benchmark file: {exc!r}") from None
    return Bench(name=str(data.get("name") or path.stem), faqs=faqs, queries=queries)


def _decision_name(outcome: Outcome) -> str:
    """A miss is scored as a handoff: the customer is not answered, and a human takes over after N misses."""
    if outcome is Outcome.ANSWER:
        return "answer"
    if outcome is Outcome.SUGGEST:
        return "suggest"
    return "handoff"


def predict(
    index: FaqIndex, queries: Sequence[BenchQuery], policy: BotPolicy, *, progress: Progress | None = None
) -> tuple[Prediction, ...]:
    """Each query on its own, as a first message in a fresh conversation."""
    out: list[Prediction] = []
    for query in queries:
        if progress is not None:
            progress(len(out), len(queries))
        start = time.perf_counter()
        decision = decide(index, query.text, consecutive_misses=0, policy=policy)
        ms = (time.perf_counter() - start) * 1000
        hits = decision.hits
        out.append(
            Prediction(
                text=query.text,
                decision=_decision_name(decision.outcome),
                answer_id=decision.answer.id if decision.answer is not None else None,
                suggested=tuple(e.id for e in decision.suggestions),
                ranked=tuple(h.entry_id for h in hits),
                ms=ms,
                best=hits[0].score if hits else 0.0,
                runner_up=hits[1].score if len(hits) > 1 else 0.0,
                forced=decision.outcome is Outcome.HANDOFF and decision.handoff_reason is not HandoffReason.NO_MATCH,
            )
        )
    if progress is not None:
        progress(len(out), len(queries))
    return tuple(out)


def score(queries: Sequence[BenchQuery], preds: Sequence[Prediction]) -> dict[str, float]:
    """The reference scorer's metrics, computed the same way (rounding included)."""
    if len(preds) != len(queries):
        raise ValueError(f"{len(preds)} predictions for {len(queries)} queries")
    n_in = n_oos = top1 = top3 = correct = answered = wrong = suggested = suggest_hit = oos_safe = 0
    times: list[float] = []
    for q, p in zip(queries, preds, strict=True):
        times.append(round(p.ms, 4))  # as written to the predictions file
        if q.expected is None:
            n_oos += 1
            oos_safe += p.decision != "answer"
        else:
            n_in += 1
            top1 += p.ranked[:1] == (q.expected,)
            top3 += q.expected in p.ranked[:3]
        if p.decision == "answer":
            answered += 1
            if q.expected is not None and p.answer_id == q.expected:
                correct += 1
            else:
                wrong += 1
        elif p.decision == "suggest":
            suggested += 1
            suggest_hit += q.expected is not None and q.expected in p.suggested
    times.sort()

    def pct(f: float) -> float:
        return times[min(len(times) - 1, int(f * len(times)))] if times else 0.0

    return {
        "top1": round(top1 / max(1, n_in), 4),
        "top3": round(top3 / max(1, n_in), 4),
        "answered_correct": round(correct / max(1, n_in), 4),
        "wrong_answer_rate": round(wrong / max(1, answered), 4),
        "suggested": round(suggested / max(1, len(queries)), 4),
        "suggest_hit": round(suggest_hit / max(1, suggested), 4),
        "handoff_recall": round(oos_safe / max(1, n_oos), 4),
        "p50_ms": round(pct(0.50), 3),
        "p99_ms": round(pct(0.99), 3),
    }


def build_index(bench: Bench) -> tuple[FaqIndex, float]:
    start = time.perf_counter()
    index = FaqIndex(bench.faqs)
    return index, time.perf_counter() - start


def evaluate(
    bench: Bench, policy: BotPolicy, *, index: FaqIndex | None = None, progress: Progress | None = None
) -> Report:
    build_s = 0.0
    if index is None:
        index, build_s = build_index(bench)
    preds = predict(index, bench.queries, policy, progress=progress)
    metrics = score(bench.queries, preds)
    metrics["build_s"] = round(build_s, 3)
    return Report(name=bench.name, metrics=metrics, predictions=preds)


@dataclass(frozen=True, slots=True, kw_only=True)
class Unknown:
    """Leave-entries-out: how the bot treats questions about entries its KB lacks (averaged over folds)."""

    name: str
    holdout: float
    folds: int
    queries: int  # held-out phrasings asked, over all folds
    answered: float  # every such answer is wrong
    suggested: float
    handed_off: float  # a miss or a handoff

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "holdout_entries": self.holdout,
            "folds": self.folds,
            "leo_queries": self.queries,
            "leo_answered": self.answered,
            "leo_suggested": self.suggested,
            "leo_handed_off": self.handed_off,
        }


def holdout_folds(bench: Bench, fraction: float, folds: int, *, seed: int = 0) -> list[tuple[Bench, Bench]]:
    """``folds`` splits of the KB, each leaving out ``fraction`` of the entries (disjoint while they fit): the
    kept entries make the KB, and every phrasing of a left-out entry becomes a query that must not be answered.

    This mimics customers asking what the KB lacks with data one has: a KB author's own phrasings of topics
    the bot was not given. The order is a seeded shuffle, so runs (and the calibrated thresholds) repeat.
    """
    if not 0 < fraction < 1:
        raise ValueError("the held-out fraction must be between 0 and 1")
    if folds < 1:
        raise ValueError("folds must be at least 1")
    order = list(range(len(bench.faqs)))
    random.Random(seed).shuffle(order)
    size = max(1, round(fraction * len(order)))
    splits: list[tuple[Bench, Bench]] = []
    for fold in range(folds):
        start = (fold * size) % len(order)
        out = {order[(start + k) % len(order)] for k in range(size)}
        kept = tuple(e for n, e in enumerate(bench.faqs) if n not in out)
        held = tuple(
            BenchQuery(text=q, expected=None) for n, e in enumerate(bench.faqs) if n in out for q in e.questions
        )
        name = f"{bench.name}#leo{fold}"
        splits.append((Bench(name=name, faqs=kept, queries=()), Bench(name=name, faqs=kept, queries=held)))
    return splits


def evaluate_unknown(
    bench: Bench, policy: BotPolicy, *, fraction: float, folds: int
) -> tuple[Unknown, list[tuple[Bench, tuple[Prediction, ...]]]]:
    """The leave-entries-out measure, and each fold's predictions (which calibration takes into account)."""
    answered = suggested = handed = total = 0.0
    per_fold: list[tuple[Bench, tuple[Prediction, ...]]] = []
    count = 0
    for kb, asked in holdout_folds(bench, fraction, folds):
        index = FaqIndex(kb.faqs)
        preds = predict(index, asked.queries, policy)
        per_fold.append((asked, preds))
        n = max(1, len(preds))
        answered += sum(p.decision == "answer" for p in preds) / n
        suggested += sum(p.decision == "suggest" for p in preds) / n
        handed += sum(p.decision == "handoff" for p in preds) / n
        total += 1
        count += len(preds)
    return (
        Unknown(
            name=bench.name,
            holdout=fraction,
            folds=folds,
            queries=count,
            answered=round(answered / total, 4),
            suggested=round(suggested / total, 4),
            handed_off=round(handed / total, 4),
        ),
        per_fold,
    )


def format_unknown(u: Unknown) -> str:
    head = f"{u.name}: leave-entries-out ({u.holdout:g} of the entries, {u.folds} folds, {u.queries} questions)"
    lines = [head]
    lines += [f"{name:>18}: {value}" for name, value in (("answered", u.answered), ("suggested", u.suggested))]
    lines.append(f"{'handed_off':>18}: {u.handed_off}")
    return "\n".join(lines)


def write_predictions(path: pathlib.Path, preds: Iterable[Prediction]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for p in preds:
            f.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")


def format_report(report: Report) -> str:
    lines = [f"{report.name}"]
    lines += [f"{name:>18}: {report.metrics[name]}" for name in METRICS if name in report.metrics]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    answer_threshold: float
    suggest_threshold: float
    margin: float
    answered_correct: float
    wrong_answer_rate: float

    def as_config(self) -> str:
        return (
            "bot:\n"
            f"  answer_threshold: {self.answer_threshold}\n"
            f"  suggest_threshold: {self.suggest_threshold}\n"
            f"  margin: {self.margin}\n"
        )


def calibrate(
    bench: Bench,
    preds: Sequence[Prediction],
    *,
    target_wrong: float,
    unknown: Sequence[Sequence[Prediction]] = (),
    target_unknown: float = 0.10,
) -> Calibration:
    """The answer threshold and margin that answer the most queries right while keeping wrong answers at target.

    Uses each query's two best scores, so one evaluation pass is enough. Human-request and complaint handoffs
    are not thresholded and stay as they were. ``unknown``: the leave-entries-out folds' predictions (questions
    about entries the KB lacks); thresholds must also keep the share of those answered at ``target_unknown``
    averaged over folds, because a dev file's own out-of-scope queries are too few to say how often the bot
    answers what it does not know. The suggest threshold is the lowest score at which a suggestion list still
    holds the right entry at least half the time, so "did you mean" lists stay useful.
    """
    n_in = sum(q.expected is not None for q in bench.queries)
    thresholdable = [
        (p.best, p.best - p.runner_up, bool(p.ranked) and q.expected == p.ranked[0])
        for q, p in zip(bench.queries, preds, strict=True)
        if not p.forced
    ]
    folds = [[(p.best, p.best - p.runner_up) for p in fold if not p.forced] for fold in unknown if fold]
    best: tuple[int, float, float, float] | None = None  # (correct, -wrong_rate, threshold, margin)
    for margin in [m / 100 for m in range(0, 81)]:
        kept = sorted(((b, ok) for b, d, ok in thresholdable if d >= margin), reverse=True)
        # Per fold, the unknown questions' best scores (with the margin), highest first: how many a threshold answers.
        unknown_scores = [sorted((b for b, d in fold if d >= margin), reverse=True) for fold in folds]
        correct = wrong = 0
        for i, (b, ok) in enumerate(kept):
            correct += ok
            wrong += not ok
            if i + 1 < len(kept) and kept[i + 1][0] == b:
                continue  # all queries with the same score go in together
            rate = wrong / (correct + wrong)
            if rate > target_wrong:
                continue
            if folds:
                share = sum(_at_least(s, b) / len(fold) for s, fold in zip(unknown_scores, folds, strict=True))
                if share / len(folds) > target_unknown:
                    continue
            cand = (correct, -rate, b, margin)
            if best is None or cand > best:
                best = cand
    if best is None:
        return Calibration(
            answer_threshold=1.0, suggest_threshold=1.0, margin=0.0, answered_correct=0.0, wrong_answer_rate=0.0
        )
    correct, neg_rate, threshold, margin = best
    threshold = round(threshold, 4)
    suggest = _suggest_threshold(bench, preds, upper=threshold)
    return Calibration(
        answer_threshold=threshold,
        suggest_threshold=suggest,
        margin=margin,
        answered_correct=round(correct / max(1, n_in), 4),
        wrong_answer_rate=round(-neg_rate, 4),
    )


def _at_least(descending: Sequence[float], threshold: float) -> int:
    """How many of these scores (highest first) reach the threshold."""
    lo, hi = 0, len(descending)
    while lo < hi:
        mid = (lo + hi) // 2
        if descending[mid] >= threshold:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _suggest_threshold(bench: Bench, preds: Sequence[Prediction], *, upper: float) -> float:
    rows = sorted(
        (
            (p.best, q.expected is not None and q.expected in p.ranked[:3])
            for q, p in zip(bench.queries, preds, strict=True)
        ),
        reverse=True,
    )
    hits = total = 0
    chosen = upper
    for score_, ok in rows:
        if score_ > upper:
            continue
        hits += ok
        total += 1
        if hits / total >= 0.5:
            chosen = score_
    return round(min(chosen, upper), 4)


def with_thresholds(policy: BotPolicy, cal: Calibration) -> BotPolicy:
    return dataclasses.replace(
        policy, answer_threshold=cal.answer_threshold, suggest_threshold=cal.suggest_threshold, margin=cal.margin
    )
