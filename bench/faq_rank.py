"""Ranking and confidence on the dev sets, with the leave-entries-out measure, in one quick run (issue 22).

    python bench/faq_rank.py [--sets clinc150-en-dev ...] [--holdout-entries 0.2] [--folds 5] [--json]
                             [--set bot.faq._BETA=6.0 ...]

For each set: top1 / top3, and the best answered_correct any one threshold on the shipped score reaches with
wrong answers at the issue's goal and at most 10% of the left-out entries' questions answered (as
``bench/faq_decide.py``'s ``score`` row, the same folds), plus answered_correct / wrong / left-out answered /
out-of-scope handed off at thresholds 0.90 and 0.92 (the shipped one), the temperature and the build's CPU time.
``--set`` overrides a module constant for the run (``module.NAME=value``), to compare ranking settings under the
same evaluation code without editing it.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.faq_decide import BENCH, SETS, WRONG_GOAL, best_reachable  # noqa: E402
from bot.evaluate import Bench, holdout_folds, load_bench  # noqa: E402
from bot.faq import FaqIndex  # noqa: E402

THRESHOLDS = (0.9, 0.92)


def _scores(index: FaqIndex, texts: list[str]) -> list[tuple[float, str | None]]:
    out: list[tuple[float, str | None]] = []
    for text in texts:
        hits = index.search(text, 3)
        out.append((hits[0].score, hits[0].entry_id) if hits else (0.0, None))
    return out


def measure(bench: Bench, fraction: float, folds: int) -> dict[str, object]:
    start = time.process_time()
    index = FaqIndex(bench.faqs)
    build_cpu = time.process_time() - start
    ranked = [index.search(q.text, 3) for q in bench.queries]
    n_in = sum(q.expected is not None for q in bench.queries)
    top1 = sum(q.expected is not None and bool(h) and h[0].entry_id == q.expected for q, h in zip(bench.queries, ranked))
    top3 = sum(q.expected is not None and q.expected in [x.entry_id for x in h] for q, h in zip(bench.queries, ranked))
    dev = [(h[0].score if h else 0.0, bool(h) and h[0].entry_id == q.expected) for q, h in zip(bench.queries, ranked)]
    unknown = [
        [s for s, _ in _scores(FaqIndex(kb.faqs), [q.text for q in asked.queries])]
        for kb, asked in holdout_folds(bench, fraction, folds)
    ]
    best, at = best_reachable(dev, n_in, unknown, WRONG_GOAL[bench.name])
    points: dict[str, dict[str, float]] = {}
    for t in THRESHOLDS:
        answered = [ok for s, ok in dev if s >= t]
        oos = [s for (s, _), q in zip(dev, bench.queries) if q.expected is None]
        points[str(t)] = {
            "answered_correct": round(sum(answered) / max(1, n_in), 4),
            "wrong": round((len(answered) - sum(answered)) / max(1, len(answered)), 4),
            "leo_answered": round(float(np.mean([np.mean([s >= t for s in f]) for f in unknown if f])), 4),
            "handoff_recall": round(sum(s < t for s in oos) / max(1, len(oos)), 4),
        }
    return {
        "name": bench.name,
        "top1": round(top1 / max(1, n_in), 4),
        "top3": round(top3 / max(1, n_in), 4),
        "best_answered_correct": best,
        "best_threshold": at,
        "points": points,
        "temperature": index.temperature,
        "build_cpu_s": round(build_cpu, 3),
    }


def _override(spec: str) -> None:
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
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for spec in args.overrides:
        _override(spec)
    for name in args.sets:
        result = measure(load_bench(BENCH / f"{name}.json"), args.holdout_entries, args.folds)
        if args.json:
            print(json.dumps(result, ensure_ascii=False))
        else:
            pts = "  ".join(
                f"@{t}: {p['answered_correct']}/{p['wrong']}/{p['leo_answered']}/{p['handoff_recall']}"
                for t, p in result["points"].items()  # type: ignore[attr-defined]
            )
            print(
                f"{name}: top1 {result['top1']} top3 {result['top3']} best {result['best_answered_correct']} "
                f"(at {result['best_threshold']}) {pts} T {result['temperature']} build {result['build_cpu_s']} s"
            )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
