"""Ranking and confidence on the dev sets with the leave-entries-out measure, in one quick run (issue 22).

    python bench/faq_rank.py [--sets clinc150-en-dev ...] [--holdout-entries 0.2] [--folds 5]
                             [--set bot.faq._BETA=6.0 ...] [--save FILE] [--against FILE] [--json]

For each set: top1 / top3; the best answered_correct any one threshold on the shipped score reaches with wrong
answers at the issue's goal and at most 10% of the left-out entries' questions answered (``bench/faq_decide.py``'s
``score`` row: the same folds, the same measure); the AUROC of right answers against wrong and left-out ones;
answered_correct / wrong / left-out answered / out-of-scope handed off at 0.90 and 0.92; the KB's temperature and
its build CPU. Last, the lowest threshold at which no set answers more than 10% of the left-out questions (how the
shipped ``answer_threshold`` is chosen), with each set's numbers there.

``--set`` overrides a module constant for the run (``module.NAME=value``, a Python literal), so ranking settings
are compared under the same evaluation code. ``--save`` writes each query's score; ``--against`` a saved run
compares with it by a paired bootstrap (the same resampled dev queries and left-out questions for both), printing
the 5th / 50th / 95th percentile of the difference in best answered_correct. On these sets that difference moves
by +-0.01 (clinc150, banking77) and +-0.05 (massive-zh, decided by a few dozen queries at the top of the score)
from resampling alone: a change smaller than that is not a finding.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import pathlib
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.faq_decide import BENCH, SETS, UNKNOWN_GOAL, WRONG_GOAL, auroc, best_reachable  # noqa: E402
from bot.evaluate import Bench, holdout_folds, load_bench  # noqa: E402
from bot.faq import FaqIndex  # noqa: E402
from core.model import FaqHit  # noqa: E402

POINTS = (0.9, 0.92)
GRID = tuple(round(0.80 + 0.005 * k, 3) for k in range(40))  # thresholds tried for the shipped one
ROUNDS = 200  # bootstrap resamples


@dataclass(frozen=True, slots=True)
class Scores:
    """One set's scores: each dev query's (best score, the best entry is right, expected is None) and each
    left-out fold's questions' best scores."""

    name: str
    dev: list[tuple[float, bool, bool]]
    unknown: list[list[float]]

    @property
    def n_in(self) -> int:
        return sum(not oos for _, _, oos in self.dev)

    def at(self, t: float) -> tuple[float, float, float, float]:
        """answered_correct, wrong answer rate, left-out questions answered and handoff_recall at threshold t."""
        answered = [ok for s, ok, _ in self.dev if s >= t]
        oos = [s for s, _, out in self.dev if out]
        leo = float(np.mean([np.mean([s >= t for s in f]) for f in self.unknown if f]))
        return (
            round(sum(answered) / max(1, self.n_in), 4),
            round((len(answered) - sum(answered)) / max(1, len(answered)), 4),
            round(leo, 4),
            round(sum(s < t for s in oos) / max(1, len(oos)), 4),
        )

    def best(
        self, dev: list[tuple[float, bool, bool]] | None = None, unknown: list[list[float]] | None = None
    ) -> float:
        pairs = [(s, ok) for s, ok, _ in (self.dev if dev is None else dev)]
        return best_reachable(pairs, self.n_in, self.unknown if unknown is None else unknown, WRONG_GOAL[self.name])[0]


def measure(bench: Bench, fraction: float, folds: int) -> tuple[Scores, dict[str, object]]:
    start = time.process_time()
    index = FaqIndex(bench.faqs)
    build_cpu = time.process_time() - start
    hits = [index.search(q.text, 3) for q in bench.queries]
    ranked = [[h.entry_id for h in found] for found in hits]
    dev = [
        (_top(found), ids[:1] == [q.expected], q.expected is None)
        for q, ids, found in zip(bench.queries, ranked, hits, strict=True)
    ]
    unknown: list[list[float]] = []
    for kb, asked in holdout_folds(bench, fraction, folds):
        fold = FaqIndex(kb.faqs)
        unknown.append([_top(fold.search(q.text, 3)) for q in asked.queries])
    scores = Scores(bench.name, dev, unknown)
    in_scope = [(q.expected, ids) for q, ids in zip(bench.queries, ranked, strict=True) if q.expected is not None]
    everything = [s for s, _, _ in dev] + [s for f in unknown for s in f]
    positive = [ok for _, ok, _ in dev] + [False] * sum(map(len, unknown))
    summary: dict[str, object] = {
        "name": bench.name,
        "top1": round(sum(ids[:1] == [e] for e, ids in in_scope) / max(1, len(in_scope)), 4),
        "top3": round(sum(e in ids[:3] for e, ids in in_scope) / max(1, len(in_scope)), 4),
        "best_answered_correct": scores.best(),
        "auroc": auroc(everything, positive),
        "points": {str(t): scores.at(t) for t in POINTS},
        "temperature": index.temperature,
        "build_cpu_s": round(build_cpu, 3),
    }
    return scores, summary


def _top(hits: tuple[FaqHit, ...]) -> float:
    return hits[0].score if hits else 0.0


def bootstrap(ours: Scores, theirs: Scores, rounds: int = ROUNDS) -> tuple[float, float, float]:
    """The 5th, 50th and 95th percentile of (ours - theirs) in best answered_correct over paired resamples."""
    rng = np.random.default_rng(0)
    diffs: list[float] = []
    for _ in range(rounds):
        pick = rng.integers(0, len(ours.dev), len(ours.dev)).tolist()
        folds = [rng.integers(0, len(f), len(f)).tolist() for f in ours.unknown]

        diffs.append(_resampled(ours, pick, folds) - _resampled(theirs, pick, folds))
    lo, mid, hi = np.percentile(diffs, [5, 50, 95])
    return round(float(lo), 4), round(float(mid), 4), round(float(hi), 4)


def _resampled(s: Scores, pick: list[int], folds: list[list[int]]) -> float:
    unknown = [[f[k] for k in ks] for f, ks in zip(s.unknown, folds, strict=True)]
    return s.best([s.dev[k] for k in pick], unknown)


def lowest_common(scores: list[Scores]) -> tuple[float, dict[str, tuple[float, float, float, float]]] | None:
    """The lowest threshold on GRID at which no set answers more than UNKNOWN_GOAL of the left-out questions."""
    for t in GRID:
        points = {s.name: s.at(t) for s in scores}
        if all(p[2] <= UNKNOWN_GOAL for p in points.values()):
            return t, points
    return None


def override(spec: str) -> None:
    """``module.NAME=literal``: set a module constant for this run (it must exist)."""
    name, _, value = spec.partition("=")
    module, _, attr = name.rpartition(".")
    mod = importlib.import_module(module)
    if not hasattr(mod, attr):
        raise SystemExit(f"{module} has no {attr}")
    setattr(mod, attr, ast.literal_eval(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="*", default=list(SETS[:3]))
    parser.add_argument("--holdout-entries", type=float, default=0.2)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="MODULE.NAME=VALUE")
    parser.add_argument("--save", type=pathlib.Path, help="write each set's per-query scores here (JSON lines)")
    parser.add_argument("--against", type=pathlib.Path, help="a --save file to compare with (paired bootstrap)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for spec in args.overrides:
        override(spec)
    before: dict[str, Scores] = {}
    if args.against:
        for line in args.against.read_text().splitlines():
            saved = json.loads(line)
            before[saved["name"]] = Scores(saved["name"], [tuple(d) for d in saved["dev"]], saved["unknown"])
    done: list[Scores] = []
    for name in args.sets:
        scores, summary = measure(load_bench(BENCH / f"{name}.json"), args.holdout_entries, args.folds)
        done.append(scores)
        if name in before:
            summary["vs_before"] = bootstrap(scores, before[name])
        if args.json:
            print(json.dumps(summary, ensure_ascii=False))
        else:
            points = summary["points"]
            assert isinstance(points, dict)
            at = "  ".join(f"@{t}: {'/'.join(map(str, p))}" for t, p in points.items())
            print(
                f"{name}: top1 {summary['top1']} top3 {summary['top3']} best {summary['best_answered_correct']} "
                f"AUROC {summary['auroc']} {at} T {summary['temperature']} build {summary['build_cpu_s']} s"
                + (f" | best vs before (5/50/95%): {summary['vs_before']}" if "vs_before" in summary else "")
            )
        sys.stdout.flush()
    if args.save:
        args.save.write_text("".join(json.dumps(asdict(s)) + "\n" for s in done))
    common = lowest_common(done)
    if common is not None and not args.json:
        t, points = common
        print(f"lowest common threshold {t}: " + ", ".join(f"{n} {'/'.join(map(str, p))}" for n, p in points.items()))


if __name__ == "__main__":
    main()
