"""Long CLI jobs show a progress bar on a terminal, and only their summary in a pipe or with --quiet."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from core.config import load_config
from core.model import Channel, QuarantinedItem
from tests.conftest import ROOT, quarantine_items
from tests.phone.rows import asterisk
from tests.phone.test_cdr_import import write_config as phone_config

HUILIU = [sys.executable, "-m", "gateway.cli"]


def run(args: list[str], *, terminal: bool) -> tuple[int, str, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal (as a person at a shell) or on pipes."""
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"}
    env.pop("NO_COLOR", None)
    if not terminal:
        done = subprocess.run([*HUILIU, *args], capture_output=True, env=env, cwd=ROOT, timeout=120, check=False)
        return done.returncode, done.stdout.decode(), done.stderr.decode()
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*HUILIU, *args], stdout=follower, stderr=follower, env=env, cwd=ROOT)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    code = proc.wait(timeout=120)
    return code, b"".join(chunks).decode(errors="replace"), ""


@pytest.fixture
def calls_file(tmp_path: Path) -> tuple[Path, Path]:
    rows = [asterisk(uniqueid=f"9.{n}", src=f"1380013{n:04d}", disposition="NO ANSWER") for n in range(40)]
    csv = tmp_path / "Master.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return phone_config(tmp_path), csv


def test_calls_import_draws_a_bar_on_a_terminal_and_ends_with_the_summary(calls_file: tuple[Path, Path]) -> None:
    config, csv = calls_file
    code, out, _ = run(["calls", "import", str(csv), "-c", str(config)], terminal=True)
    assert code == 0
    assert "importing calls" in out and "40/40" in out
    assert (
        out.rstrip()
        .splitlines()[-1]
        .endswith("imported 40, skipped 0 (0 already imported, 0 not calls with a customer), bad 0")
    )


def test_calls_import_is_quiet_in_a_pipe_and_with_quiet(calls_file: tuple[Path, Path]) -> None:
    config, csv = calls_file
    code, out, err = run(["calls", "import", str(csv), "-c", str(config)], terminal=False)
    assert code == 0 and "importing calls" not in out + err
    assert out == "imported 40, skipped 0 (0 already imported, 0 not calls with a customer), bad 0\n"
    code, out, _ = run(["calls", "import", str(csv), "-c", str(config), "--quiet"], terminal=True)
    assert code == 0 and "importing calls" not in out and "\x1b[" not in out
    assert "imported 0, skipped 40 (40 already imported" in out


def test_faq_eval_draws_a_bar_and_prints_its_report(tmp_path: Path) -> None:
    kb = yaml.safe_load((ROOT / "kb" / "faq.yaml").read_text(encoding="utf-8"))
    faqs = [{"id": f["id"], "questions": f["questions"], "answer": f["answer"]} for f in kb["faqs"]]
    queries = [{"text": q, "expected": f["id"]} for f in faqs for q in f["questions"][:2]]
    bench = tmp_path / "mini.json"
    bench.write_text(json.dumps({"name": "mini", "faqs": faqs, "queries": queries}, ensure_ascii=False), "utf-8")
    code, out, _ = run(["faq", "eval", str(bench)], terminal=True)
    assert code == 0 and f"{len(queries)}/{len(queries)}" in out
    assert "top1" in out.split(f"{len(queries)}/{len(queries)}")[-1]  # the report comes after the bar
    code, out, err = run(["faq", "eval", str(bench)], terminal=False)
    assert code == 0 and out.startswith("mini\n") and "/" not in err


def test_quarantine_replay_draws_a_bar_and_ends_with_the_results(tmp_path: Path) -> None:
    config_path = phone_config(tmp_path)
    row = asterisk(uniqueid="7.1", disposition="NO ANSWER", answer="").encode()
    item = QuarantinedItem(
        id="cdr:tel:Master.csv:1:7", channel=Channel.PHONE, inbox="tel", reason="test", raw=row,
        received_at=datetime.now(UTC),
    )  # fmt: skip
    asyncio.run(quarantine_items(load_config(config_path), [item]))
    code, out, _ = run(["quarantine", "replay", item.id, "-c", str(config_path)], terminal=True)
    assert code == 0 and "replaying" in out and "1/1" in out
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.rstrip().splitlines()[-1])  # the bar's clean-up codes
    assert last.startswith("cdr:tel:Master.csv:1:7\tok\timported 1 call(s)")
