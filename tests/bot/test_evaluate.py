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
