"""Redis round trips, commands and CPU per WeChat push, counted on the wire; and what ``durability: aof`` costs.

Run on demand (never in CI):
    .venv/bin/python bench/redis_roundtrips.py [--pushes 1000] [--concurrency 20] [--runs 2]
        [--root CHECKOUT] [--durability none,aof] [--server redis-server|valkey-server] [--appendfsync everysec]

Each run starts a private Redis (``--server``; valkey-server for ``durability: aof``, which needs WAITAOF, i.e.
Redis 7.2+) on a free loopback port, a counting TCP proxy in front of it, and ``huiliu serve`` (from ``--root``,
this checkout by default) with a safe-mode WeChat inbox whose store URL points at the proxy. Safe-mode text
pushes from 200 repeat senders are answered by the bot as passive replies (the common path).

A round trip is counted the way latency pays for it: on each connection, a burst of requests the gateway sends
before it has heard back from the previous burst (a pipeline, or a single command) is one. Counted from the
first push to one second after the last answer, so the work after a response (recording the delivery) is in.
Also per push: commands (``INFO commandstats``), the gateway's CPU and Redis's own CPU (both from /proc), and
each round trip's first command (EVALSHA named by its script), so it shows what is left to cut.

``--durability none,aof`` alternates the settings run after run (none, aof, none, aof, ...) on one build and
prints p50/p99 and CPU per push for each: the cost of waiting for the AOF before acknowledging.
Every acknowledged push must be stored exactly once (counted from the event stream by MsgId).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import yaml

THIS = Path(__file__).resolve()
ROOT = THIS.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(THIS.parent))

import wechat_push as wp  # noqa: E402

TOKEN, APP_ID, AES_KEY = wp.TOKEN, wp.APP_ID, wp.AES_KEY
API_TOKEN = "bench-api-token-0123456789"
SENDERS = 200


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _script_names(root: Path) -> dict[str, str]:
    """sha1 -> script name, read from the store module of the checkout that runs (its Lua sources)."""
    import ast

    names: dict[str, str] = {}
    source = root / "core" / "store" / "redis" / "store.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    consts: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                value = _const(node.value, consts)
            except ValueError:
                continue
            consts[node.targets[0].id] = value
    for name, value in consts.items():
        if name.startswith("_") and name.upper() == name:
            names[hashlib.sha1(value.encode()).hexdigest()] = name.strip("_").lower()
    return names


def _const(node: Any, consts: dict[str, str]) -> str:
    import ast

    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and node.id in consts:
        return consts[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _const(node.left, consts) + _const(node.right, consts)
    raise ValueError("not a string constant")


@dataclass
class Wire:
    """Round trips through the proxy: per connection, a request burst sent after the previous answer is one."""

    scripts: dict[str, str]
    round_trips: int = 0
    by_command: collections.Counter[str] = field(default_factory=collections.Counter)
    counting: bool = False

    def name(self, data: bytes) -> str:
        parts = data.split(b"\r\n", 6)
        if len(parts) < 5 or not parts[0].startswith(b"*"):
            return "?"
        command = parts[2].decode(errors="replace").upper()
        if command == "EVALSHA":
            return "EVALSHA " + self.scripts.get(parts[4].decode(errors="replace"), parts[4][:8].decode())
        return command

    async def serve(self, listen: int, upstream: int) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
            waiting = False  # sent a burst, no answer yet

            async def client_to_server() -> None:
                nonlocal waiting
                while data := await reader.read(1 << 16):
                    if not waiting:
                        waiting = True
                        if self.counting:
                            self.round_trips += 1
                            self.by_command[self.name(data)] += 1
                    up_writer.write(data)
                    await up_writer.drain()
                up_writer.close()

            async def server_to_client() -> None:
                nonlocal waiting
                while data := await up_reader.read(1 << 16):
                    waiting = False
                    writer.write(data)
                    await writer.drain()
                writer.close()

            try:
                await asyncio.gather(client_to_server(), server_to_client())
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()
                up_writer.close()

        return await asyncio.start_server(handle, "127.0.0.1", listen)


def _pushes(n: int, first_id: int) -> list[tuple[int, dict[str, str], str]]:
    """wechat_push's signed, encrypted pushes from senders oBench0000..0199, each with its MsgId."""
    return [(first_id + i, params, body) for i, (params, body) in enumerate(wp._pushes(n, msg_ids=first_id))]


async def _drive(
    url: str, pushes: list[tuple[int, dict[str, str], str]], concurrency: int
) -> tuple[float, list[float], list[int], collections.Counter[int]]:
    latencies: list[float] = []
    acked: list[int] = []
    statuses: collections.Counter[int] = collections.Counter()
    queue = list(reversed(pushes))

    async def worker(http: aiohttp.ClientSession) -> None:
        while queue:
            msg_id, params, body = queue.pop()
            started = time.perf_counter()
            try:
                async with http.post(url, params=params, data=body) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
                    if resp.status == 200:
                        acked.append(msg_id)
            except (aiohttp.ClientError, TimeoutError):
                statuses[0] += 1
            latencies.append((time.perf_counter() - started) * 1000)

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, acked, statuses


async def _wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never became ready")


async def _stored(client: aioredis.Redis, prefix: str) -> collections.Counter[str]:
    """How often each push was stored: inbound WeChat message.created events on the stream, by MsgId."""
    counts: collections.Counter[str] = collections.Counter()
    stream = "{" + prefix.rstrip(":") + "}:events"
    last = "-"
    while True:
        entries = await client.xrange(stream, min=last, count=2000)
        if last != "-":
            entries = entries[1:]
        if not entries:
            return counts
        for _entry_id, fields in entries:
            if fields.get("type") == "message.created":
                message = json.loads(fields["event"])["data"].get("message", {})
                if message.get("direction") == "inbound" and message.get("channel") == "wechat":
                    counts[str(message["external_id"])] += 1
        last = entries[-1][0]


async def _commands(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info",))


async def one_run(args: argparse.Namespace, root: Path, durability: str, run: int) -> dict[str, Any]:
    scripts = _script_names(root)
    with tempfile.TemporaryDirectory() as tmp:
        redis_port, proxy_port, port = wp._free_port(), wp._free_port(), wp._free_port()
        aof = durability == "aof" or args.appendonly
        server = await asyncio.create_subprocess_exec(
            args.server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp,
            "--appendonly", "yes" if aof else "no", "--appendfsync", args.appendfsync,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        wire = Wire(scripts=scripts)
        proxy = await wire.serve(proxy_port, redis_port)
        direct = aioredis.Redis(port=redis_port, decode_responses=True)
        for _ in range(100):
            try:
                await direct.ping()
                break
            except (ConnectionError, OSError, aioredis.ConnectionError):
                await asyncio.sleep(0.05)
        prefix = "bench-rt:"
        config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
        config["data_dir"] = tmp
        config["store"] = {"backend": "redis", "url": f"redis://127.0.0.1:{proxy_port}/0", "prefix": prefix}
        if durability == "aof":
            config["store"]["durability"] = "aof"
        if args.pool_timeout is not None:
            config["store"]["pool_timeout_s"] = args.pool_timeout
        config["api"] = {"tokens": ["${BENCH_API_TOKEN}"]}
        config["bot"]["kb"] = str(ROOT / "kb" / "faq.yaml")
        config["bot"]["max_misses"] = 10**6
        config["bot"].pop("business_hours", None)
        config["inboxes"] = [
            {"name": "bench", "channel": "wechat", "token": TOKEN, "app_id": APP_ID,
             "app_secret": "unused-no-api-call-expected", "encoding_aes_key": AES_KEY, "mode": "safe",
             "api_base": "http://127.0.0.1:9", "reply_budget_s": 2}
        ]  # fmt: skip
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "--log-level", "WARNING", "serve", "-c", str(path),
            "--port", str(port), cwd=root, env={**os.environ, "BENCH_API_TOKEN": API_TOKEN},
        )  # fmt: skip
        try:
            await _wait_ready(f"http://127.0.0.1:{port}/readyz")
            url = f"http://127.0.0.1:{port}/wechat/bench"
            first = 8_000_000_000 + run * 1_000_000
            # Warm-up: every sender writes once, so the measured pushes are the common path (a repeat sender).
            # As many at once as measured, so the pool has opened its connections (their set-up is no push's).
            await _drive(url, _pushes(SENDERS, first), args.concurrency)
            await asyncio.sleep(1.0)
            pushes = _pushes(args.pushes + SENDERS, first)[SENDERS:]
            commands, gw_cpu, redis_cpu = await _commands(direct), _cpu_s(gateway.pid), _cpu_s(server.pid)
            wire.counting = True
            elapsed, latencies, acked, statuses = await _drive(url, pushes, args.concurrency)
            await asyncio.sleep(1.0)  # deliveries recorded after the responses
            wire.counting = False
            commands = await _commands(direct) - commands
            gw_cpu, redis_cpu = _cpu_s(gateway.pid) - gw_cpu, _cpu_s(server.pid) - redis_cpu
            stored = await _stored(direct, prefix)
        finally:
            gateway.terminate()
            await gateway.wait()
            proxy.close()
            await direct.aclose()
            server.terminate()
            await server.wait()
    n = len(pushes)
    latencies.sort()
    return {
        "durability": durability,
        "pushes": n,
        "acknowledged": len(acked),
        "errors": sum(c for s, c in statuses.items() if s != 200),
        "statuses": {str(s): c for s, c in sorted(statuses.items())},  # 0: no answer (client timeout)
        "lost": sum(1 for m in acked if stored[str(m)] == 0),
        "doubled": sum(1 for m, _, _ in pushes if stored[str(m)] > 1),
        "round_trips_per_push": round(wire.round_trips / n, 2),
        "commands_per_push": round(commands / n, 2),
        "server_cpu_ms_per_push": round(gw_cpu * 1000 / n, 3),
        "redis_cpu_ms_per_push": round(redis_cpu * 1000 / n, 3),
        "msgs_per_s": round(n / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))], 2),
        "round_trips_by_first_command": {k: round(v / n, 2) for k, v in wire.by_command.most_common() if v / n >= 0.01},
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--runs", type=int, default=1, help="runs per durability setting, alternating")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose gateway runs")
    parser.add_argument("--durability", default="none", help="comma-separated: none, aof")
    parser.add_argument("--server", default=None, help="redis-server or valkey-server (default: valkey if found)")
    parser.add_argument("--appendfsync", default="everysec", choices=["everysec", "always", "no"])
    parser.add_argument("--appendonly", action="store_true", help="AOF on for durability none too")
    parser.add_argument("--pool-timeout", type=float, help="store.pool_timeout_s (default: the config's, 5)")
    args = parser.parse_args()
    settings = args.durability.split(",")
    if args.server is None:
        args.server = "valkey-server" if shutil.which("valkey-server") else "redis-server"
    results: list[dict[str, Any]] = []
    for run in range(args.runs):
        for setting in settings:
            result = await one_run(args, args.root.resolve(), setting, run * len(settings) + settings.index(setting))
            results.append(result)
            print(json.dumps(result, ensure_ascii=False), flush=True)
    if len(settings) > 1:
        summary: dict[str, dict[str, float]] = {}
        for setting in settings:
            mine = [r for r in results if r["durability"] == setting]
            summary[setting] = {
                k: round(statistics.median(r[k] for r in mine), 3)
                for k in ("server_cpu_ms_per_push", "redis_cpu_ms_per_push", "p50_ms", "p99_ms", "msgs_per_s")
            }
        print(json.dumps({"median_over_runs": summary, "server": args.server}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
