"""The cost of metrics on the WeChat push path: server CPU per push with ``ops.metrics`` on and off.

Run on demand (never in CI):  .venv/bin/python bench/metrics_cost.py [--pushes 1000] [--rounds 2]

The same gateway as bench/wechat_push.py (its own ``huiliu serve`` process, a safe-mode WeChat inbox, SQLite,
the sample KB), started once with metrics and once without, in alternating rounds so that load from elsewhere
on the machine falls on both alike. CPU per push is the server process's user+system time over the measured
pushes. With metrics on, /metrics is scraped once after each round (its own cost is printed apart).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

THIS = Path(__file__).resolve()
sys.path.insert(0, str(THIS.parent))

import wechat_push as wp  # noqa: E402

API_TOKEN = "bench-metrics-token-0123456789"


def _config(tmp: Path, metrics: bool) -> Path:
    config: dict[str, Any] = yaml.safe_load((wp.ROOT / "config.yaml").read_text(encoding="utf-8"))
    config["data_dir"] = str(tmp)
    config["api"] = {"tokens": [API_TOKEN]}
    config["bot"]["kb"] = str(wp.ROOT / "kb" / "faq.yaml")
    config["bot"]["max_misses"] = 10**6
    config["bot"].pop("business_hours", None)
    config["inboxes"] = [
        {
            "name": "bench",
            "channel": "wechat",
            "token": wp.TOKEN,
            "app_id": wp.APP_ID,
            "app_secret": "unused-no-api-call-expected",
            "encoding_aes_key": wp.AES_KEY,
            "mode": "safe",
            "api_base": "http://127.0.0.1:9",
        }
    ]
    config["ops"] = {"metrics": metrics}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


async def _round(metrics: bool, pushes: int, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = _config(Path(tmp), metrics)
        port = wp._free_port()
        proc = await wp._spawn("-m", "gateway.cli", "--log-level", "WARNING", "serve", "-c", str(path),
                               "--port", str(port))  # fmt: skip
        try:
            await wp._wait_ready(f"http://127.0.0.1:{port}/readyz")
            url = f"http://127.0.0.1:{port}/wechat/bench"
            await wp._drive(url, wp._pushes(20), 4)
            result = await wp._measure(proc.pid, url, wp._pushes(pushes + 20)[20:], concurrency)
            if metrics:
                user, system = wp._cpu_s(proc.pid)
                started = time.perf_counter()
                async with aiohttp.ClientSession() as http:
                    headers = {"Authorization": f"Bearer {API_TOKEN}"}
                    async with http.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as resp:
                        text = await resp.text()
                        assert resp.status == 200 and "huiliu_messages_total" in text, resp.status
                user_after, system_after = wp._cpu_s(proc.pid)
                result["scrape_ms"] = round((time.perf_counter() - started) * 1000, 1)
                result["scrape_cpu_ms"] = round((user_after + system_after - user - system) * 1000, 1)
        finally:
            proc.terminate()
            await proc.wait()
    return result


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"with_metrics": [], "without_metrics": []}
    for _ in range(args.rounds):
        for name, metrics in (("without_metrics", False), ("with_metrics", True)):
            runs[name].append(await _round(metrics, args.pushes, args.concurrency))
    cpu = {name: statistics.median(r["server_cpu_ms_per_push"] for r in rs) for name, rs in runs.items()}
    print(json.dumps({
        **runs,
        "median_cpu_ms_per_push": cpu,
        "metrics_overhead": f"{(cpu['with_metrics'] / cpu['without_metrics'] - 1) * 100:+.1f}%",
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
