"""Would a build-time answer / suggest / hand-off model decide better than the score? (issue 22)

    python bench/faq_decide.py [--sets clinc150-en-dev ...] [--holdout-entries 0.2] [--folds 5] [--json]

The bot answers when its best entry's probability (bot/faq.py, capped by the question-type and sibling rules)
reaches ``answer_threshold``. This measures the alternative the issue proposes: a small logistic regression over
what the top candidates say, trained when the index is built on the KB's own phrasings, with no data beyond the
KB. The training data is what the temperature fit already has, so it would cost no extra index: a third of the
phrasings of each entry held out of an index built from the rest (as in ``FaqIndex._fit_confidence``), each asked
twice, as ranked (a positive when its own entry comes first) and with its own entry taken out of the ranking (a
pseudo-out-of-KB question: "none of these" is right). Each KB, including each leave-entries-out fold's, trains its
own model. Variants, each capped by the same rules as the score:

- ``score``: the shipped probability (the baseline);
- ``platt``: the model over the probability alone (a per-KB recalibration: the same ranking of queries);
- ``top``: the probability, the logit gaps to the runner-up and to "none of these", corroboration, question-type
  agreement and the sibling flag;
- ``against``: ``top`` plus evidence against the entry: the share of the query's word weight (and of all its
  feature weight) that the entry never uses, the share the KB never uses, the largest such word, query length;
- ``penalty``: the score's logit minus the share of the query's word weight the entry never uses (no training).

For each it prints the best answered_correct any threshold reaches with wrong answers at the issue's goal and at
most 10% of the left-out entries' questions answered (the threshold chosen on the dev file itself, so an upper
bound for one shipped threshold), the AUROC of right answers against wrong and left-out ones, and the points at a
few thresholds. It reaches into the index's internals (ranking, term weights): it is a measurement, not an API.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.evaluate import Bench, holdout_folds, load_bench  # noqa: E402
from bot.faq import _NULL, FaqEntry, FaqIndex, _features  # noqa: E402

BENCH = ROOT.parent / "shared" / "bench" / "faq"
SETS = ("clinc150-en-dev", "banking77-en-dev", "massive-zh-dev", "afqmc-zh-dev")
WRONG_GOAL = {"clinc150-en-dev": 0.04, "banking77-en-dev": 0.08, "massive-zh-dev": 0.07, "afqmc-zh-dev": 0.20}
UNKNOWN_GOAL = 0.10
HELD_TARGET = 1000  # held-out phrasings per KB, as the temperature fit
CAP = 0.5  # the rules' cap (bot/faq.py: _QTYPE_CAP, _SIBLING_CAP, _UNCORROBORATED)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a query's top candidates say about answering with the best one."""

    top: str  # the best entry's id
    p1: float  # its probability, before the rules' caps
    logit_gap: float  # over the runner-up, in temperature units
    null_gap: float  # over "none of these"
    corroborated: bool
    agrees: bool
    siblings: bool
    miss_words: float  # share of the query's word weight the entry never uses
    miss_all: float  # the same over all its features (words, bigrams, characters, pairs)
    unknown: float  # share of its word weight the whole KB never uses
    max_miss: float  # the weight of the most salient word the entry never uses
    words: int

    @property
    def capped(self) -> bool:
        return not (self.corroborated and self.agrees) or self.siblings


def evidence(index: FaqIndex, text: str, exclude: str | None = None) -> Evidence | None:
    """The evidence for ``text``'s best entry (``exclude``: as if that entry were not in the KB)."""
    query = index._analyze(text)
    ranked = index._rank(text, 3, query)
    if exclude is not None:
        ranked = [r for r in ranked if index.entries[r.entry].id != exclude]
    if not ranked:
        return None
    t = index.temperature
    top = ranked[0]
    norm = math.exp((_NULL - top.logit) / t) + sum(math.exp((r.logit - top.logit) / t) for r in ranked)
    feats = _features(index._fix_typos(query))
    weight2, unknown2, terms = index._weight2, index._unknown2, index._entry_terms[top.entry]

    def weight(f: str) -> float:
        return math.sqrt(weight2.get(f) or unknown2[f[0]])

    words = [f for f in feats if f[0] == "w"]
    all_weight = sum(map(weight, feats)) or 1.0
    word_weight = sum(map(weight, words)) or 1.0
    runner_up = ranked[1].logit if len(ranked) > 1 else top.logit - 10 * t
    pair = tuple(sorted((top.entry, ranked[1].entry))) if len(ranked) > 1 else ()
    return Evidence(
        top=index.entries[top.entry].id,
        p1=1.0 / norm,
        logit_gap=min((top.logit - runner_up) / t, 10.0),
        null_gap=(top.logit - _NULL) / t,
        corroborated=top.corroborated,
        agrees=top.agrees,
        siblings=not top.verbatim and pair in index._siblings,
        miss_words=sum(weight(f) for f in words if f not in terms) / word_weight,
        miss_all=sum(weight(f) for f in feats if f not in terms) / all_weight,
        unknown=sum(weight(f) for f in words if f not in weight2) / word_weight,
        max_miss=max((weight(f) for f in words if f not in terms), default=0.0),
        words=len(words),
    )


def pseudo_examples(entries: Sequence[FaqEntry], parent: FaqIndex) -> list[tuple[Evidence, bool]]:
    """The KB's own training data: held-out phrasings as ranked and with their entry taken out (see above)."""
    out: list[tuple[Evidence, bool]] = []
    held_total = 0
    for fold in range(3):
        if held_total >= HELD_TARGET:
            break
        held: list[tuple[str, str]] = []
        kept: list[FaqEntry] = []
        for i, e in enumerate(entries):
            n = len(e.questions)
            if n >= 3:
                gone = {(i + fold + j * 3) % n for j in range(n // 3)}
                held += [(q, e.id) for k, q in enumerate(e.questions) if k in gone]
                e = FaqEntry(id=e.id, questions=tuple(q for k, q in enumerate(e.questions) if k not in gone), answer="")
            kept.append(e)
        if not held:
            break
        held = held[: HELD_TARGET - held_total]
        held_total += len(held)
        index = FaqIndex(kept, calibrate=False)
        # As the parent would see it: its temperature and its siblings (by id).
        index._temperature = parent.temperature
        position = {e.id: k for k, e in enumerate(kept)}
        ids = [e.id for e in parent.entries]
        index._siblings = frozenset(
            (min(position[ids[a]], position[ids[b]]), max(position[ids[a]], position[ids[b]]))
            for a, b in parent._siblings
        )
        for text, own in held:
            ranked = evidence(index, text)
            if ranked is not None:
                out.append((ranked, ranked.top == own))
            without = evidence(index, text, exclude=own)
            if without is not None:
                out.append((without, False))
    return out


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _top(e: Evidence) -> list[float]:
    return [_logit(e.p1), e.logit_gap, e.null_gap, float(e.corroborated), float(e.agrees), float(e.siblings)]


def _against(e: Evidence) -> list[float]:
    return [*_top(e), e.miss_words, e.miss_all, e.unknown, e.max_miss, math.log1p(e.words)]


FEATURES: dict[str, Callable[[Evidence], list[float]]] = {
    "platt": lambda e: [_logit(e.p1)],
    "top": _top,
    "against": _against,
}


def fit_logistic(rows: list[list[float]], labels: list[bool], l2: float = 1.0) -> Callable[[list[float]], float]:
    """L2-regularized logistic regression on standardized features, by Newton's method (a few ms)."""
    x = np.asarray(rows, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    penalty = l2 * np.diag(np.r_[np.ones(z.shape[1] - 1), 0.0])
    beta = np.zeros(z.shape[1])
    for _ in range(30):
        p = 1.0 / (1.0 + np.exp(-z @ beta))
        step = np.linalg.solve((z * (p * (1 - p))[:, None]).T @ z + penalty, z.T @ (p - y) + penalty @ beta)
        beta -= step
        if float(np.abs(step).max()) < 1e-8:
            break

    def predict(row: list[float]) -> float:
        v: npt.NDArray[np.float64] = np.r_[(np.asarray(row) - mean) / scale, 1.0]
        return float(1.0 / (1.0 + math.exp(-float(v @ beta))))

    return predict


Scorer = Callable[[Evidence | None], float]


def _composed(
    model: Callable[[list[float]], float], vector: Callable[[Evidence], list[float]]
) -> Callable[[Evidence], float]:
    return lambda e: model(vector(e))


def scorers(examples: list[tuple[Evidence, bool]]) -> tuple[dict[str, Scorer], float]:
    """Each variant's score for a query's evidence (capped by the rules), and the seconds the models took to fit."""

    def capped(value: Callable[[Evidence], float]) -> Scorer:
        return lambda e: 0.0 if e is None else min(value(e), CAP) if e.capped else value(e)

    out: dict[str, Scorer] = {
        "score": capped(lambda e: e.p1),
        "penalty": capped(lambda e: 1.0 / (1.0 + math.exp(-(_logit(e.p1) - e.miss_words)))),
    }
    start = time.process_time()
    if len({ok for _, ok in examples}) == 2:
        for name, vector in FEATURES.items():
            model = fit_logistic([vector(e) for e, _ in examples], [ok for _, ok in examples])
            out[name] = capped(_composed(model, vector))
    return out, time.process_time() - start


@dataclass(frozen=True, slots=True)
class Row:
    variant: str
    best_answered_correct: float  # at the wrong-answer goal and <= 10% of left-out entries' questions answered
    best_threshold: float
    auroc: float
    points: dict[str, tuple[float, float, float]]  # threshold -> (answered_correct, wrong rate, left-out answered)


def best_reachable(
    dev: list[tuple[float, bool]], n_in: int, unknown: list[list[float]], wrong_goal: float
) -> tuple[float, float]:
    rows = sorted(dev, key=lambda r: -r[0])
    folds = [np.sort(np.asarray(f))[::-1] for f in unknown if f]
    best, at = 0, 1.0
    correct = wrong = 0
    for k, (s, ok) in enumerate(rows):
        correct += ok
        wrong += not ok
        if k + 1 < len(rows) and rows[k + 1][0] == s:
            continue
        if wrong / (correct + wrong) > wrong_goal:
            continue
        if folds and float(np.mean([np.count_nonzero(f >= s) / len(f) for f in folds])) > UNKNOWN_GOAL:
            continue
        if correct > best:
            best, at = correct, s
    return round(best / max(1, n_in), 4), round(at, 4)


def auroc(scores: list[float], positive: list[bool]) -> float:
    s = np.asarray(scores)
    y = np.asarray(positive, dtype=bool)
    ranks = np.empty(len(s))
    ranks[np.argsort(s, kind="stable")] = np.arange(len(s))
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    return round(float((ranks[y].sum() - n_pos * (n_pos - 1) / 2) / (n_pos * n_neg)), 4)


def measure(bench: Bench, fraction: float, folds: int) -> dict[str, object]:
    start = time.process_time()
    index = FaqIndex(bench.faqs)
    build_cpu = time.process_time() - start
    examples = pseudo_examples(bench.faqs, index)
    own, fit_cpu = scorers(examples)
    dev = [(evidence(index, q.text), q.expected) for q in bench.queries]
    n_in = sum(expected is not None for _, expected in dev)
    # Each leave-entries-out fold's KB trains its own model on its own phrasings, as a shipped KB would.
    unknown: list[tuple[dict[str, Scorer], list[Evidence | None]]] = []
    for kb, asked in holdout_folds(bench, fraction, folds):
        fold_index = FaqIndex(kb.faqs)
        fold_scorers, _ = scorers(pseudo_examples(kb.faqs, fold_index))
        unknown.append((fold_scorers, [evidence(fold_index, q.text) for q in asked.queries]))
    rows: list[Row] = []
    for name, scorer in own.items():
        labelled = [(scorer(e), e is not None and e.top == expected) for e, expected in dev]
        leo = [[fs.get(name, fs["score"])(e) for e in asked] for fs, asked in unknown]
        best, threshold = best_reachable(labelled, n_in, leo, WRONG_GOAL[bench.name])
        points: dict[str, tuple[float, float, float]] = {}
        for t in (0.5, 0.6, 0.7, 0.8, 0.9, 0.92):
            answered = [ok for s, ok in labelled if s >= t]
            share = float(np.mean([np.mean([s >= t for s in f]) for f in leo if f])) if leo else 0.0
            wrong = (len(answered) - sum(answered)) / max(1, len(answered))
            points[str(t)] = (round(sum(answered) / max(1, n_in), 4), round(wrong, 4), round(share, 4))
        scores = [s for s, _ in labelled] + [s for f in leo for s in f]
        positive = [ok for _, ok in labelled] + [False] * sum(map(len, leo))
        rows.append(Row(name, best, threshold, auroc(scores, positive), points))
    return {
        "name": bench.name,
        "build_cpu_s": round(build_cpu, 3),
        "decision_examples": len(examples),
        "decision_fit_cpu_s": round(fit_cpu, 4),
        "rows": [asdict(r) for r in rows],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="*", default=list(SETS))
    parser.add_argument("--holdout-entries", type=float, default=0.2)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for name in args.sets:
        result = measure(load_bench(BENCH / f"{name}.json"), args.holdout_entries, args.folds)
        if args.json:
            print(json.dumps(result, ensure_ascii=False))
            continue
        print(
            f"{name}: build {result['build_cpu_s']} s CPU; decision model: {result['decision_examples']} examples, "
            f"fitted in {result['decision_fit_cpu_s']} s CPU"
        )
        rows = result["rows"]
        assert isinstance(rows, list)
        for row in rows:
            points = "  ".join(f"{t}: {'/'.join(map(str, v))}" for t, v in row["points"].items())
            print(
                f"  {row['variant']:>8}: best {row['best_answered_correct']} (at {row['best_threshold']}), "
                f"AUROC {row['auroc']}; at threshold (correct/wrong/left-out answered) {points}"
            )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
