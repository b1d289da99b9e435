"""Full (gen-2) garbage collection pauses with the FAQ index loaded, with and without ``core.heap.settle()``.

    python bench/gc_pause.py [--config config.yaml] [--messages 20000] [--sessions 5000] [--runs 2]

Each run is its own process: it builds the bot as ``serve`` does, optionally settles the heap, then answers
--messages queries while keeping --sessions small session records alive (what open web chat sockets hold),
and times every gen-2 collection that happens, in CPU time of the collecting thread (a busy machine does not
move it). It then reloads the KB from its file and does the same again. Runs alternate between the two modes.
A full collection runs on the event loop, so its length is how long every reply waits behind it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import heap  # noqa: E402
from core.config import load_config  # noqa: E402
from gateway.app import build_bot  # noqa: E402

QUERIES = ["我想退款", "怎么开发票", "where is my order", "How do I reset my password?", "运费怎么算", "可以用支付宝吗"]


class Pauses:
    def __init__(self) -> None:
        self.ms: list[float] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.ms.append((time.thread_time() - self._started) * 1e3)


def churn(index: Any, messages: int, sessions: int) -> tuple[Pauses, float]:
    """Answer queries the way intake does, with session records coming and going; (gen-2 pauses, forced full ms)."""
    pauses = Pauses()
    gc.callbacks.append(pauses)
    alive: list[dict[str, object]] = []
    try:
        for i in range(messages):
            hits = index.search(QUERIES[i % len(QUERIES)])
            alive.append({"visitor": f"v{i}", "hits": list(hits), "frames": [{"seq": i, "text": "ok"}]})
            if len(alive) > sessions:
                alive.pop(0)
    finally:
        gc.callbacks.remove(pauses)
    started = time.thread_time()
    gc.collect()
    return pauses, (time.thread_time() - started) * 1e3


def one_run(config_path: Path, messages: int, sessions: int, settle: bool) -> dict[str, Any]:
    bot = build_bot(load_config(config_path))
    bot.index.search(QUERIES[0])  # jieba loads its dictionary on first use
    if settle:
        heap.settle()
    out: dict[str, Any] = {"settled": settle, "tracked_objects": len(gc.get_objects())}
    for label in ("started", "after_kb_reload"):
        if label == "after_kb_reload":
            asyncio.run(bot.index.reload())
        pauses, forced = churn(bot.index, messages, sessions)
        out[label] = {
            "gen2_collections": len(pauses.ms),
            "gen2_max_ms": round(max(pauses.ms, default=0.0), 1),
            "gen2_cpu_ms_per_1000_messages": round(sum(pauses.ms) / messages * 1000, 1),
            "forced_full_collection_ms": round(forced, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=2, help="pairs of runs, alternating without and with settle")
    parser.add_argument("--one", choices=["plain", "settled"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.config, args.messages, args.sessions, args.one == "settled")))
        return
    for _ in range(args.runs):
        for mode in ("plain", "settled"):
            cmd = [sys.executable, __file__, "--one", mode, "--config", str(args.config)]
            cmd += ["--messages", str(args.messages), "--sessions", str(args.sessions)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
