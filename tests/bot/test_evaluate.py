"""``huiliu faq eval``: its numbers equal the shared reference scorer's on the predictions it writes."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from bot.evaluate import Bench, calibrate, evaluate, load_bench
from bot.policy import BotPolicy
from gateway.cli import main
from tests.conftest import SHARED, need

BENCH_DIR = SHARED / "bench" / "faq"
DEV_SETS = ["clinc150-en-dev", "banking77-en-dev", "massive-zh-dev", "afqmc-zh-dev"]


def _slice(tmp_path: pathlib.Path, name: str, every: int = 12, limit: int = 150) -> pathlib.Path:
    """A small, fast slice of a dev set: the whole KB (the KB size is the point), every n-th query."""
    need(BENCH_DIR.is_dir(), f"{BENCH_DIR} is not there")
    data = json.loads((BENCH_DIR / f"{name}.json").read_text(encoding="utf-8"))
    if len(data["faqs"]) > 1000:
        kept = {q["expected"] for q in data["queries"][: every * limit : every]}
        data["faqs"] = [f for f in data["faqs"] if f["id"] in kept][:300]
        ids = {f["id"] for f in data["faqs"]}
        data["queries"] = [q for q in data["queries"] if q["expected"] is None or q["expected"] in ids]
    data["queries"] = data["queries"][::every][:limit]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def _reference_scorer(bench: pathlib.Path, predictions: pathlib.Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(BENCH_DIR / "score.py"), str(bench), str(predictions), "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("name", DEV_SETS)
def test_eval_numbers_equal_the_reference_scorer(
    tmp_path: pathlib.Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _slice(tmp_path, name)
    predictions = tmp_path / "pred.jsonl"
    assert main(["faq", "eval", str(bench), "--json", "--predictions", str(predictions)]) == 0
    (ours,) = json.loads(capsys.readouterr().out)
    reference = _reference_scorer(bench, predictions)
    assert ours["name"] == reference["name"] == name
    for metric, value in reference.items():
        assert ours[metric] == value, metric
    assert ours["build_s"] > 0
    assert len(predictions.read_text(encoding="utf-8").splitlines()) == len(load_bench(bench).queries)


def test_eval_uses_the_configured_thresholds(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _slice(tmp_path, "clinc150-en-dev")
    config = tmp_path / "config.yaml"
    config.write_text("bot:\n  answer_threshold: 1.0\n  suggest_threshold: 1.0\n", encoding="utf-8")
    assert main(["faq", "eval", str(bench), "--json", "-c", str(config)]) == 0
    (strict,) = json.loads(capsys.readouterr().out)
    assert main(["faq", "eval", str(bench), "--json"]) == 0
    (default,) = json.loads(capsys.readouterr().out)
    assert strict["answered_correct"] == 0 and strict["suggested"] == 0
    assert default["answered_correct"] > 0
    assert strict["top1"] == default["top1"]  # thresholds change decisions, never the ranking


def test_text_report_names_every_metric(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _slice(tmp_path, "massive-zh-dev", every=40)
    assert main(["faq", "eval", str(bench)]) == 0
    out = capsys.readouterr().out
    for metric in (
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
    ):
        assert f"{metric}:" in out


def test_calibration_meets_its_target_on_the_file(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _slice(tmp_path, "clinc150-en-dev", every=6, limit=400)
    bench: Bench = load_bench(path)
    report = evaluate(bench, BotPolicy())
    cal = calibrate(bench, report.predictions, target_wrong=0.05)
    tuned = evaluate(
        bench,
        BotPolicy(answer_threshold=cal.answer_threshold, suggest_threshold=cal.suggest_threshold, margin=cal.margin),
    )
    assert tuned.metrics["wrong_answer_rate"] <= 0.05
    assert tuned.metrics["answered_correct"] == cal.answered_correct > 0
    assert main(["faq", "eval", str(path), "--calibrate", "--target-wrong", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "bot:\n  answer_threshold:" in out and "margin:" in out


def test_unreadable_bench_is_a_clear_error(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    assert main(["faq", "eval", str(bad)]) == 2
    assert "bad.json: not a FAQ benchmark file" in capsys.readouterr().err


def test_leave_entries_out_asks_every_phrasing_of_the_left_out_entries(tmp_path: pathlib.Path) -> None:
    from bot.evaluate import holdout_folds

    bench = load_bench(_slice(tmp_path, "banking77-en-dev"))
    folds = holdout_folds(bench, 0.2, 5)
    assert len(folds) == 5
    left_out: set[str] = set()
    for kb, asked in folds:
        kept = {e.id for e in kb.faqs}
        out = [e for e in bench.faqs if e.id not in kept]
        assert len(out) == round(0.2 * len(bench.faqs))
        assert all(q.expected is None for q in asked.queries)
        assert [q.text for q in asked.queries] == [q for e in out for q in e.questions]
        assert not left_out & {e.id for e in out}  # five folds of a fifth: no entry is left out twice
        left_out |= {e.id for e in out}
    assert len(left_out) == 5 * round(0.2 * len(bench.faqs))


def test_faq_eval_reports_how_often_it_answers_what_the_kb_lacks(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _slice(tmp_path, "massive-zh-dev")
    assert main(["faq", "eval", str(bench), "--json", "--holdout-entries", "0.2", "--folds", "2"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["folds"] == 2 and row["holdout_entries"] == 0.2 and row["leo_queries"] > 0
    assert row["leo_answered"] + row["leo_suggested"] + row["leo_handed_off"] == pytest.approx(1.0, abs=1e-3)
    assert main(["faq", "eval", str(bench), "--holdout-entries", "1.5"]) == 2


def test_calibration_keeps_unknown_questions_at_their_target() -> None:
    """Questions about left-out entries count against a threshold like wrong answers do: a threshold that answers
    too many of them is not chosen, even where the dev file's own answers would allow it."""
    from bot.evaluate import BenchQuery, Prediction

    def pred(best: float) -> Prediction:
        return Prediction(
            text="q", decision="suggest", answer_id=None, suggested=(), ranked=("a",), ms=0.0, best=best, runner_up=0.0
        )

    bench = Bench(name="b", faqs=(), queries=tuple(BenchQuery(text="q", expected="a") for _ in range(10)))
    preds = [pred(0.5 + i / 20) for i in range(10)]  # all right: any threshold keeps wrong answers at 0
    assert calibrate(bench, preds, target_wrong=0.05).answer_threshold == 0.5
    unknown = [[pred(0.6), pred(0.7), pred(0.8), pred(0.3)]]  # 0.8 answers a quarter of them, 0.85 none
    cal = calibrate(bench, preds, target_wrong=0.05, unknown=unknown, target_unknown=0.1)
    assert cal.answer_threshold == 0.85
