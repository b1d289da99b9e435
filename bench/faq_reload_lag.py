"""Event-loop lag while the FAQ index is rebuilt (a KB reload), as a request being served would feel it.

    python bench/faq_reload_lag.py [--many-phrasings] [--phrasings 10000] [--thread]

A ticker on the loop sleeps 1 ms at a time and records how late each wake-up is, while ``LiveIndex.reload()``
rebuilds the index; the same ticker with no reload gives the baseline. It also times a real request path: one
``search()`` on the loop every 10 ms, end to end, during the reload.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from faq_speed import load, load_many, percentile  # noqa: E402

from bot.faq import KnowledgeBase, write_kb  # noqa: E402
from bot.live import LiveIndex, build_index  # noqa: E402


async def tick(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append((time.perf_counter() - t - 0.001) * 1000)


async def serve(index: LiveIndex, queries: list[str], stop: asyncio.Event, times: list[float]) -> None:
    n = 0
    while not stop.is_set():
        t = time.perf_counter()
        index.search(queries[n % len(queries)])
        await asyncio.sleep(0)
        times.append((time.perf_counter() - t) * 1000)
        n += 1
        await asyncio.sleep(0.01)


async def run(path: pathlib.Path, queries: list[str], *, thread: bool) -> None:
    live = await asyncio.to_thread(LiveIndex.load, path, builder=build_index if thread else None)
    for label, reload in (("idle", False), ("during reload", True)):
        stop = asyncio.Event()
        lags: list[float] = []
        times: list[float] = []
        tasks = [asyncio.create_task(tick(stop, lags)), asyncio.create_task(serve(live, queries, stop, times))]
        start = time.perf_counter()
        if reload:
            await live.reload()
        else:
            await asyncio.sleep(2.0)
        took = time.perf_counter() - start
        stop.set()
        await asyncio.gather(*tasks)
        print(
            f"{label:>14}: {took:.2f} s; loop lag p50 {statistics.median(lags):.2f} ms, "
            f"p99 {percentile(lags, 0.99):.1f} ms, max {max(lags):.1f} ms; "
            f"request p50 {statistics.median(times):.2f} ms, "
            f"p99 {percentile(times, 0.99):.1f} ms, max {max(times):.1f} ms ({len(times)} requests)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phrasings", type=int, default=10_000)
    parser.add_argument("--many-phrasings", action="store_true")
    parser.add_argument("--thread", action="store_true", help="build in a thread (as before) instead of a process")
    args = parser.parse_args()
    entries, queries = (load_many if args.many_phrasings else load)(args.phrasings)
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "faq.yaml"
        write_kb(path, KnowledgeBase(entries=tuple(entries)))
        asyncio.run(run(path, queries[::7][:500], thread=args.thread))


if __name__ == "__main__":
    main()
