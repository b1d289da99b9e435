"""Web chat round trips through the real server, with many idle sockets open beside the active visitors.

Run on demand (never in CI):

    .venv/bin/python bench/webchat_roundtrip.py [--visitors 200] [--messages 20] [--think-s 1.0] [--idle 5000]
        [--store sqlite|redis] [--target after=. --target before=/tmp/huiliu-main --target bare] [--runs 2]

Each target is a server in its own process: ``NAME=DIR`` runs ``huiliu serve`` from the source tree DIR (the sample
config's store, the sample KB; ``--store redis`` for Redis), and ``bare`` runs a bare aiohttp WebSocket server (on
the loop ``serve`` picks by default: uvloop when installed) that speaks the same frames (hello -> welcome, message
-> ack + reply) with no store and no bot: the comparator issue 23's goal is set against (reply p99 with the idle
sockets open <= 2x bare aiohttp's under the same client). Runs alternate between the targets, ``--runs`` times over.

The clients run in processes of their own, so their CPU does not share the server's loop: ``--idle-procs``
processes hold the idle sockets (each says hello, then only answers the server's heartbeat pings), and this
process drives the ``--visitors`` active ones, each sending ``--messages`` messages with ``--think-s`` (+-50%)
between them. Per run it prints one JSON line: messages per second, p50/p99 of a round trip (message sent to
the bot's reply received), the server's CPU per message and in total over the active phase (CPU is the figure
that does not depend on how busy the machine is), the clients' CPU in the same phase (their share of the
machine), errors (failed connects, hellos, messages, idle sockets dropped), and on Redis the most connections
the server held to Redis at once (sampled with ``ss``; its pool's bound is ``store.max_connections``).

``--profile P`` samples the server with py-spy over the active phase into ``P-TARGET-PID.txt`` (collapsed stacks;
the venv's py-spy, from the bench extra); ``--profile-gil`` samples only the thread holding the GIL, which is what
the event loop waits on when the store thread runs Python. ``--latency-log L`` also writes the server's collections
as ``L-gc-TARGET-PID.txt`` (seconds into the active phase, generation, CPU ms, wall ms; negative times are before
it), so a slow reply can be matched with a pass or told apart from one. Environment knobs for the server (huiliu
targets only): ``BENCH_GC_TYPES=FILE`` appends the object count and commonest types before each full pass;
``BENCH_COUNT_JOBS=1`` adds ``store_jobs`` and ``store_batches`` (hand-overs to the SQLite thread); two experiments,
measured and not part of the product: ``BENCH_SWITCH_INTERVAL=S`` (``sys.setswitchinterval``; 0.0005 made the p99 ~1
s: the loop and the store thread hand the GIL to each other all the time) and ``BENCH_BG_CHECKPOINT=S`` (WAL
checkpoints on a thread of their own every S seconds instead of in the store thread's commits).

5,000 sockets need as many file descriptors on each side: the script raises its soft ``ulimit -n`` to the hard
limit (the children inherit it) and says so when the hard limit is too low. The bench config lifts the per-address
abuse limits (every client here is 127.0.0.1) and the per-visitor frame rate; nothing else differs from
``config.yaml``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

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
HEARTBEAT_S = 30.0  # the web chat inbox's default heartbeat_s; the bare server uses the same


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < need:
        print(f"ulimit -n is {hard}; {need} sockets need more: raise the hard limit", file=sys.stderr)


def _cpu_s(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20


def _redis_connections(pid: int, redis_port: int) -> int:
    """How many TCP connections process ``pid`` holds to Redis right now."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", "dport", f"= :{redis_port}"], capture_output=True, text=True
    ).stdout
    return sum(1 for line in out.splitlines() if f"pid={pid}," in line)


# the bare aiohttp comparator -------------------------------------------------------------------------------
def _bare_server(port: int) -> None:
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=1 << 16)
        await ws.prepare(request)
        seq = 0
        async for msg in ws:
            frame = json.loads(msg.data)
            if frame["type"] == "hello":
                visitor = uuid.uuid4().hex
                await ws.send_str(json.dumps({"type": "welcome", "seq": 0, "token": visitor, "visitor_id": visitor}))
            elif frame["type"] == "message":
                message_id = uuid.uuid4().hex
                await ws.send_str(json.dumps({"type": "ack", "seq": seq, "id": frame["id"], "message_id": message_id}))
                seq += 1
                reply = {"type": "message", "seq": seq, "author": "bot", "text": frame["text"]}
                await ws.send_str(json.dumps({**reply, "message_id": message_id}, ensure_ascii=False))
        return ws

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    from gateway.event_loop import loop_factory  # this checkout's, as the huiliu targets import theirs

    app = web.Application()
    app.router.add_get("/chat/ws", ws_handler)
    app.router.add_get("/readyz", ready)
    # On the loop ``huiliu serve`` picks by default (uvloop when installed): the loop's own cost is the same on
    # both sides of the comparison, so the difference stays the gateway's work.
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=loop_factory("auto")[1]())


# the server's garbage collections ------------------------------------------------------------------------------
def _gc_server(out: str, cli_args: list[str]) -> None:
    """``huiliu serve`` with a GC probe: each SIGUSR1 appends the collections since the previous one to ``out``
    (count and CPU time of the collecting thread per generation, the longest gen-2 pass), so the bench reads
    what the active phase alone cost."""
    import gc
    import runpy

    started = [0.0, 0.0]
    passes: list[tuple[int, float]] = []
    events: list[tuple[float, int, float, float]] = []  # wall start (perf_counter), generation, CPU ms, wall ms

    def probe(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            if info["generation"] == 2 and os.environ.get("BENCH_GC_TYPES"):  # what a full pass is about to walk
                kinds = Counter(type(o).__qualname__ for o in gc.get_objects())
                with open(os.environ["BENCH_GC_TYPES"], "a", encoding="utf-8") as f:
                    print(time.perf_counter(), sum(kinds.values()), kinds.most_common(12), file=f)
            started[0] = time.thread_time()
            started[1] = time.perf_counter()
        else:
            cpu_ms = (time.thread_time() - started[0]) * 1000
            passes.append((info["generation"], cpu_ms))
            events.append((started[1], info["generation"], cpu_ms, (time.perf_counter() - started[1]) * 1000))

    def report(*_: object) -> None:
        taken = list(passes)
        passes.clear()
        with open(out + ".events", "a", encoding="utf-8") as f:  # perf_counter is CLOCK_MONOTONIC: one clock
            f.writelines(f"{at:.4f} {gen} {cpu:.2f} {wall:.2f}\n" for at, gen, cpu, wall in events)
        events.clear()
        figures: dict[str, Any] = {}
        for gen in range(3):
            ms = [m for g, m in taken if g == gen]
            figures[f"gc{gen}_passes"] = len(ms)
            figures[f"gc{gen}_cpu_ms"] = round(sum(ms), 1)
        figures["gc2_max_ms"] = round(max((m for g, m in taken if g == 2), default=0.0), 1)
        figures["store_jobs"], figures["store_batches"] = jobs
        jobs[:] = [0, 0]
        figures["gc_frozen"] = gc.get_freeze_count()
        figures["gc_unfrozen"] = len(gc.get_objects())
        if os.environ.get("BENCH_GC_TYPES"):  # what the collector still walks, by type
            kinds = Counter(type(o).__qualname__ for o in gc.get_objects())
            print(kinds.most_common(25), file=sys.stderr)
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(figures) + "\n")

    def reclaim(*_: object) -> None:
        """A full settle now: what it frees is garbage the collector had not reached, frozen cycles included."""
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps({"gc_full_settle_freed": freed}) + "\n")

    jobs = [0, 0]  # store jobs submitted, batches run (each one a hand-over to the store thread and back)
    if os.environ.get("BENCH_COUNT_JOBS"):
        from core.store.sqlite import worker

        submit, run_batch = worker.SerialWorker.submit, worker.SerialWorker._run_batch

        async def counted_submit(self: Any, fn: Any) -> Any:
            jobs[0] += 1
            return await submit(self, fn)

        def counted_batch(self: Any, batch: Any) -> Any:
            jobs[1] += 1
            return run_batch(self, batch)

        worker.SerialWorker.submit = counted_submit  # type: ignore[method-assign]
        worker.SerialWorker._run_batch = counted_batch  # type: ignore[method-assign]
    if os.environ.get("BENCH_BG_CHECKPOINT"):  # an experiment: WAL checkpoints off the store thread
        _checkpoint_in_background(float(os.environ["BENCH_BG_CHECKPOINT"]))
    if os.environ.get("BENCH_SWITCH_INTERVAL"):  # an experiment: how long a thread may keep the GIL
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    gc.callbacks.append(probe)
    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGUSR2, reclaim)
    sys.argv = ["huiliu", *cli_args]
    runpy.run_module("gateway.cli", run_name="__main__", alter_sys=True)


def _checkpoint_in_background(every_s: float) -> None:
    """The store's connections stop checkpointing on commit (each checkpoint syncs the WAL and the database: 2
    fdatasync of 2-14 ms on the store thread every ~160 ms at 200 messages/s, every store job behind them
    waiting); a thread with a connection of its own checkpoints every ``every_s`` instead."""
    import sqlite3
    import threading

    connect = sqlite3.connect
    started: list[str] = []

    def checkpoints(path: str) -> None:
        db = connect(path, isolation_level=None, check_same_thread=False)
        while True:
            time.sleep(every_s)
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def connecting(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        db: sqlite3.Connection = connect(database, *args, **kwargs)
        path = str(database)
        if path.endswith(".sqlite3"):
            db.execute("PRAGMA wal_autocheckpoint=0")
            if path not in started:
                started.append(path)
                threading.Thread(target=checkpoints, args=(path,), daemon=True).start()
        return db

    sqlite3.connect = connecting  # type: ignore[assignment]


def _lines(path: str) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines() if Path(path).exists() else []


async def _report_written(out: str, lines_wanted: int) -> list[str]:
    """The GC probe's report file once it has ``lines_wanted`` lines (or what it has after 10 s)."""
    lines: list[str] = []
    for _ in range(200):
        lines = await asyncio.to_thread(_lines, out)
        if len(lines) >= lines_wanted:
            break
        await asyncio.sleep(0.05)
    return lines


async def _gc_figures(server: asyncio.subprocess.Process, out: str) -> dict[str, Any]:
    """The active phase's collections, then what a full settle frees right after it (the garbage that frozen
    cycles and uncollected generations held: ``core.heap.Settler`` frees it hourly)."""
    figures: dict[str, Any] = {}
    for sig, lines_wanted in ((signal.SIGUSR1, 2), (signal.SIGUSR2, 3)):
        server.send_signal(sig)
        lines = await _report_written(out, lines_wanted)
        if len(lines) >= lines_wanted:
            figures.update(json.loads(lines[-1]))
    return figures


# idle sockets (their own process) ------------------------------------------------------------------------------
async def _hold_idle(url: str, count: int) -> None:
    """Open ``count`` sockets that say hello, print how many made it, keep them (answering heartbeats) until
    stdin closes, then print how many were dropped meanwhile."""
    errors = 0
    dropped = 0
    opened: list[aiohttp.ClientWebSocketResponse] = []
    gate = asyncio.Semaphore(100)  # connect in waves, as visitors arrive, not 5,000 SYNs at once
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one() -> None:
            nonlocal errors, dropped
            try:
                async with gate:
                    ws = await http.ws_connect(url, autoping=True, timeout=aiohttp.ClientWSTimeout(ws_close=60))
                    await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
                    welcome = await asyncio.wait_for(ws.receive_json(), 60)
                    if welcome.get("type") != "welcome":
                        raise RuntimeError(f"no welcome: {welcome}")
            except Exception as exc:
                errors += 1
                if errors <= 5:
                    print(f"idle socket failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                return
            opened.append(ws)
            async for msg in ws:  # reading is what answers the server's pings
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
            if not closing:
                dropped += 1

        closing = False
        tasks = [asyncio.create_task(one()) for _ in range(count)]
        while len(opened) + errors < count:  # noqa: ASYNC110 (two counters, no one event)
            await asyncio.sleep(0.1)
        print(json.dumps({"opened": len(opened), "errors": errors}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        closing = True
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)
        print(json.dumps({"dropped": dropped}), flush=True)


class _IdleClients:
    def __init__(self, url: str, total: int, procs: int) -> None:
        self._url = url
        self._counts = [total // procs + (1 if i < total % procs else 0) for i in range(procs)] if total else []
        self.procs: list[asyncio.subprocess.Process] = []
        self.opened = 0
        self.errors = 0
        self.dropped = 0

    async def start(self) -> None:
        for count in self._counts:
            cmd = [sys.executable, __file__, "--role", "idle", "--url", self._url, "--idle", str(count)]
            pipe = asyncio.subprocess.PIPE
            self.procs.append(await asyncio.create_subprocess_exec(*cmd, stdin=pipe, stdout=pipe))
        for proc in self.procs:
            assert proc.stdout is not None
            line = json.loads(await proc.stdout.readline())
            self.opened += line["opened"]
            self.errors += line["errors"]

    def cpu_s(self) -> float:
        return sum(_cpu_s(p.pid) for p in self.procs)

    async def stop(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            line = await proc.stdout.readline()
            if line:
                self.dropped += json.loads(line)["dropped"]
            await proc.wait()


# active visitors ------------------------------------------------------------------------------------------------
async def _visitor(
    http: aiohttp.ClientSession,
    url: str,
    n_messages: int,
    think_s: float,
    latencies: list[float],
    errors: list[str],
    timeline: list[tuple[float, float]] | None = None,
) -> None:
    try:
        async with http.ws_connect(url) as ws:
            await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
            welcome = await ws.receive_json()
            if welcome["type"] != "welcome":
                raise RuntimeError(f"no welcome: {welcome}")
            for i in range(n_messages):
                if think_s:
                    await asyncio.sleep(think_s * random.uniform(0.5, 1.5))
                started = time.perf_counter()
                await ws.send_json({"type": "message", "id": f"m{i}", "text": QUESTIONS[i % len(QUESTIONS)]})
                while True:
                    msg = await ws.receive(timeout=30)  # a reply later than this counts as an error
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        raise RuntimeError(f"socket ended: {msg.type.name}")
                    frame = json.loads(msg.data)
                    if frame["type"] == "error":
                        raise RuntimeError(f"error frame: {frame}")
                    if frame["type"] == "message":
                        break
                latencies.append((time.perf_counter() - started) * 1000)
                if timeline is not None:
                    timeline.append((started, latencies[-1]))
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")


# one run -----------------------------------------------------------------------------------------------------------
async def _wait_ready(port: int) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the server never became ready")


def _config(tmp: str, args: argparse.Namespace, prefix: str) -> Path:
    config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    config["data_dir"] = tmp
    config["bot"]["kb"] = str(ROOT / "kb" / "faq.yaml")
    config["bot"]["kb_watch_s"] = 0
    config["bot"]["max_misses"] = 1000  # keep every visitor with the bot: this measures the bot path
    sockets = args.idle + args.visitors + 100
    config["inboxes"][0].update(
        frames_per_minute=100_000,
        max_sockets=max(10_000, sockets),
        sockets_per_address=sockets,  # every bench client is 127.0.0.1
        connections_per_address_per_minute=10 * sockets,
        new_visitors_per_address_per_hour=10 * sockets,
    )
    if args.store == "redis":
        config["store"] = {"backend": "redis", "url": args.redis_url, "prefix": prefix}
        if args.max_connections:
            config["store"]["max_connections"] = args.max_connections
    path = Path(tmp) / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


async def _profiler(out: str | None, name: str, pid: int, gil: bool) -> asyncio.subprocess.Process | None:
    """py-spy (``pip install py-spy``; this interpreter's own first, else PATH's) sampling the server over the
    active phase, as collapsed stacks; ``gil`` samples only the thread that holds the GIL (what the loop waits on)."""
    if not out:
        return None
    path = f"{out}-{name}-{pid}.txt"
    own = Path(sys.executable).parent / "py-spy"
    return await asyncio.create_subprocess_exec(
        str(own) if own.exists() else "py-spy", "record", "--format", "raw", "--rate", "200", "-o", path,
        "-p", str(pid), *(["--gil"] if gil else []),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def _drop_redis_prefix(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    from core.store.redis import key_tag

    client = aioredis.Redis.from_url(url)
    keys = [k async for k in client.scan_iter(match=key_tag(prefix) + "*", count=1000)]
    for start in range(0, len(keys), 500):
        await client.unlink(*keys[start : start + 500])
    await client.aclose()


async def _run(name: str, source: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        gc_out = str(Path(tmp) / "gc.jsonl")
        if source is None:
            cmd = [sys.executable, __file__, "--role", "bare-server", "--port", str(port)]
            cwd = ROOT
        else:
            serve = ["--log-level", "WARNING", "serve", "-c", str(_config(tmp, args, prefix)), "--port", str(port)]
            cmd = [sys.executable, __file__, "--role", "gc-server", "--gc-out", gc_out, "--", *serve]
            cwd = source
        server_log = Path(tmp) / "server.log"
        with server_log.open("wb") as log_file:  # the server's log, to count what it logged as errors
            server = await asyncio.create_subprocess_exec(
                *cmd, cwd=cwd, env={**os.environ, "PYTHONPATH": str(cwd)}, stderr=log_file
            )
        idle = _IdleClients(f"ws://127.0.0.1:{port}/chat/ws", args.idle, args.idle_procs)
        peak_redis = 0
        sampling = True

        async def sample_redis() -> None:
            nonlocal peak_redis
            redis_port = int(args.redis_url.rsplit(":", 1)[1].split("/")[0])
            while sampling:
                n = await asyncio.to_thread(_redis_connections, server.pid, redis_port)
                peak_redis = max(peak_redis, n)
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample_redis()) if args.store == "redis" and source is not None else None
        try:
            await _wait_ready(port)
            url = f"ws://127.0.0.1:{port}/chat/ws"
            started = time.perf_counter()
            await idle.start()
            idle_open_s = time.perf_counter() - started
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                await _visitor(http, url, 5, 0, [], [])  # warm-up
                await asyncio.sleep(max(0.0, args.settle_s - 10))  # the idle sockets' hellos finish on the server
                idle_cpu = _cpu_s(server.pid)
                await asyncio.sleep(min(10.0, args.settle_s))  # what the idle sockets alone cost the server
                idle_cpu = (_cpu_s(server.pid) - idle_cpu) / min(10.0, args.settle_s)
                latencies: list[float] = []
                errors: list[str] = []
                timeline: list[tuple[float, float]] = []
                if source is not None:  # the server's GC figures count from here; its report is not the phase's CPU
                    server.send_signal(signal.SIGUSR1)
                    await _report_written(gc_out, 1)
                cpu_server, cpu_idle, cpu_self = _cpu_s(server.pid), idle.cpu_s(), _cpu_s(os.getpid())
                profiler = await _profiler(args.profile, name, server.pid, args.profile_gil)
                started = time.perf_counter()
                await asyncio.gather(
                    *(
                        _visitor(http, url, args.messages, args.think_s, latencies, errors, timeline)
                        for _ in range(args.visitors)
                    )
                )
                elapsed = time.perf_counter() - started
                load_1m = os.getloadavg()[0]
                if args.latency_log:
                    rows = [f"{at - started:.3f} {ms:.1f}" for at, ms in sorted(timeline)]
                    log_path = Path(f"{args.latency_log}-{name}-{server.pid}.txt")
                    await asyncio.to_thread(log_path.write_text, "\n".join(rows) + "\n", encoding="utf-8")
                if profiler is not None:
                    profiler.send_signal(2)
                    await profiler.wait()
                cpu_server = _cpu_s(server.pid) - cpu_server
                cpu_idle = idle.cpu_s() - cpu_idle
                cpu_self = _cpu_s(os.getpid()) - cpu_self
                gc_figures = await _gc_figures(server, gc_out) if source is not None else {}
                if args.latency_log and source is not None:  # each collection: seconds into the run, gen, ms
                    gc_events = [line.split() for line in await asyncio.to_thread(_lines, gc_out + ".events")]
                    rows = [f"{float(at) - started:.3f} {gen} {cpu} {wall}" for at, gen, cpu, wall in gc_events]
                    gc_path = Path(f"{args.latency_log}-gc-{name}-{server.pid}.txt")
                    await asyncio.to_thread(gc_path.write_text, "\n".join(rows) + "\n", encoding="utf-8")
            rss_mib = _rss_mib(server.pid)
            await idle.stop()
        finally:
            sampling = False
            if sampler is not None:
                await sampler
            server.terminate()
            await server.wait()
            logged = server_log.read_text(encoding="utf-8", errors="replace").splitlines()
            server_errors = [line for line in logged if " ERROR " in line or " CRITICAL " in line]
            if server_errors and args.keep_logs:
                kept = Path(f"{args.keep_logs}-{name}-{server.pid}.log")
                await asyncio.to_thread(kept.write_text, "\n".join(logged), encoding="utf-8")
            if args.store == "redis" and source is not None:
                await _drop_redis_prefix(args.redis_url, prefix)

    latencies.sort()
    total = len(latencies)
    result: dict[str, Any] = {
        "target": name,
        "store": "bare" if source is None else args.store,
        "idle_sockets": idle.opened,
        "visitors": args.visitors,
        "messages": total,
        "seconds": round(elapsed, 2),
        "messages_per_s": round(total / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(latencies[min(total - 1, int(total * 0.99))], 2) if latencies else None,
        "max_ms": round(latencies[-1], 2) if latencies else None,
        "server_cpu_ms_per_message": round(cpu_server * 1000 / max(total, 1), 3),
        "server_cpu_share": round(cpu_server / elapsed, 3),  # of one core, over the active phase
        "load_1m": round(load_1m, 2),  # the machine's load average at the end of the active phase
        "client_cpu_share": round((cpu_idle + cpu_self) / elapsed, 3),
        "idle_client_cpu_share": round(cpu_idle / elapsed, 3),
        "idle_open_s": round(idle_open_s, 1),
        "server_cpu_share_idle": round(idle_cpu, 3),  # with only the idle sockets open, before the active phase
        "server_rss_mib": rss_mib,
        "errors": len(errors) + idle.errors + idle.dropped,
        "server_errors_logged": len(server_errors),
        **gc_figures,
    }
    if server_errors:
        result["first_server_error"] = server_errors[0][:300]
    if errors:
        result["first_error"] = errors[0]
    if args.store == "redis" and source is not None:
        result["peak_redis_connections"] = peak_redis
    return result


async def main(args: argparse.Namespace) -> None:
    _raise_nofile(args.idle + 2 * args.visitors + 1000)
    targets = _targets(args.target or [f"after={ROOT}", "bare"])
    for _ in range(args.runs):
        for name, source in targets:
            print(json.dumps(await _run(name, source, args), ensure_ascii=False), flush=True)


def _targets(specs: list[str]) -> list[tuple[str, Path | None]]:
    """``NAME=DIR`` serves huiliu from DIR; ``bare`` the bare aiohttp comparator."""
    targets: list[tuple[str, Path | None]] = []
    for spec in specs:
        name, _, path = spec.partition("=")
        targets.append((name, None if name == "bare" and not path else Path(path or ROOT).resolve()))
    return targets


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--visitors", type=int, default=200)
    parser.add_argument("--messages", type=int, default=20, help="per active visitor")
    parser.add_argument("--think-s", type=float, default=1.0, help="mean pause before each message")
    parser.add_argument("--idle", type=int, default=5000, help="idle sockets (hello, then only heartbeats)")
    parser.add_argument("--idle-procs", type=int, default=1, help="processes holding the idle sockets")
    parser.add_argument(
        "--settle-s", type=float, default=35.0, help="pause after the idle sockets opened, before measuring"
    )
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--max-connections", type=int, default=0, help="store.max_connections (0: the default)")
    parser.add_argument("--target", action="append", help="NAME=SOURCE_DIR (huiliu serve from there) or bare")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--keep-logs", help="keep a server log with errors as KEEP_LOGS-TARGET-PID.log")
    parser.add_argument("--profile", help="py-spy the server over the active phase into PROFILE-TARGET-PID.txt")
    parser.add_argument("--profile-gil", action="store_true", help="py-spy --gil: only the thread holding the GIL")
    parser.add_argument(
        "--latency-log", help="write each round trip as 'SECONDS_INTO_RUN MS' into LATENCY_LOG-TARGET-PID.txt"
    )
    parser.add_argument("--gc-out", help=argparse.SUPPRESS)
    parser.add_argument("cli_args", nargs="*", help=argparse.SUPPRESS)
    roles = ["main", "idle", "bare-server", "gc-server"]
    parser.add_argument("--role", choices=roles, default="main", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    options = _parse()
    if options.role == "bare-server":
        _bare_server(options.port)
    elif options.role == "gc-server":
        _gc_server(options.gc_out, options.cli_args)
    elif options.role == "idle":
        asyncio.run(_hold_idle(options.url, options.idle))
    else:
        asyncio.run(main(options))
