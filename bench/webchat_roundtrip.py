"""Web chat round trips through the real server: visitor message → stored → bot decision → reply frame.

Run on demand (never in CI):  .venv/bin/python bench/webchat_roundtrip.py [--visitors 20] [--messages 50]
[--store sqlite|redis]

The gateway runs as its own process (``huiliu serve``) with the sample config's SQLite store and the
sample KB, so the client's load does not share its event loop. Prints messages per second and the
p50/p99 latency of one round trip, from sending a message to receiving the bot's reply, and the gateway's
CPU per message (compare that one across code versions: it does not depend on how busy the machine was).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "我想退款",
    "怎么开发票",
    "where is my order",
    "How do I reset my password?",
    "运费怎么算",
    "你们几点下班",
    "可以用支付宝吗",
    "订单",  # a suggestion
    "do you ship to Canada",
    "优惠券怎么用",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _visitor(url: str, n_messages: int, latencies: list[float]) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
        await ws.receive_json()
        for i in range(n_messages):
            text = QUESTIONS[i % len(QUESTIONS)]
            started = time.perf_counter()
            await ws.send_json({"type": "message", "id": f"m{i}", "text": text})
            while True:
                frame = json.loads((await ws.receive()).data)
                if frame["type"] == "message":
                    break
            latencies.append((time.perf_counter() - started) * 1000)


def _cpu_s(pid: int) -> float:
    """The gateway's user + system CPU so far: per message, it is less at the mercy of other load than msgs/s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drop_redis_prefix(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    from core.store.redis import key_tag

    client = aioredis.Redis.from_url(url)
    keys = [k async for k in client.scan_iter(match=key_tag(prefix) + "*", count=1000)]
    for start in range(0, len(keys), 500):
        await client.unlink(*keys[start : start + 500])
    await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--visitors", type=int, default=20)
    parser.add_argument("--messages", type=int, default=50, help="per visitor")
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"

    with tempfile.TemporaryDirectory() as tmp:
        config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
        config["data_dir"] = tmp
        config["bot"]["kb"] = str(ROOT / "kb" / "faq.yaml")
        config["bot"]["max_misses"] = 1000  # keep every visitor with the bot: this measures the bot path
        config["inboxes"][0]["frames_per_minute"] = 100000
        if args.store == "redis":
            config["store"] = {"backend": "redis", "url": args.redis_url, "prefix": prefix}
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        port = _free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "--log-level",
            "WARNING",
            "serve",
            "-c",
            str(path),
            "--port",
            str(port),
            cwd=ROOT,
            env=os.environ.copy(),
        )
        try:
            async with aiohttp.ClientSession() as http:
                for _ in range(300):
                    try:
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
            url = f"ws://127.0.0.1:{port}/chat/ws"
            await _visitor(url, 5, [])  # warm-up
            latencies: list[float] = []
            cpu_before = _cpu_s(proc.pid)
            started = time.perf_counter()
            await asyncio.gather(*(_visitor(url, args.messages, latencies) for _ in range(args.visitors)))
            elapsed = time.perf_counter() - started
            cpu_s = _cpu_s(proc.pid) - cpu_before
        finally:
            proc.terminate()
            await proc.wait()
            if args.store == "redis":
                await _drop_redis_prefix(args.redis_url, prefix)

    latencies.sort()
    total = len(latencies)
    p99 = latencies[min(total - 1, int(total * 0.99))]
    print(
        json.dumps(
            {
                "store": args.store,
                "visitors": args.visitors,
                "messages": total,
                "seconds": round(elapsed, 2),
                "messages_per_s": round(total / elapsed, 1),
                "p50_ms": round(statistics.median(latencies), 2),
                "p99_ms": round(p99, 2),
                "server_cpu_ms_per_message": round(cpu_s * 1000 / total, 3),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
