"""WeChat text pushes end to end, against a bare aiohttp handler that only parses the same XML.

Run on demand (never in CI):  .venv/bin/python bench/wechat_push.py [--pushes 2000] [--concurrency 20] [--workers N]

The gateway runs as its own process (``huiliu serve``) with a safe-mode (encrypted) WeChat inbox, SQLite and
the sample KB: each push is signature-checked, nonce-claimed, decrypted, parsed, deduplicated, stored, answered
by the bot and answered back as an encrypted passive reply. The bare handler runs as its own process too and
only parses the body. Pushes are built (signed, encrypted) before the clock starts. Afterwards the store is
opened and every acknowledged push must be there. Prints msgs/s and p50/p99 for both, and their ratio.
``--workers N`` serves with ``huiliu serve --workers N``; the server CPU is then that of the supervisor and all
its workers together.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web
from wechatpy.crypto import WeChatCrypto

THIS = Path(__file__).resolve()
ROOT = THIS.parent.parent
sys.path.insert(0, str(ROOT))

from connectors.wechat import crypto, render  # noqa: E402
from connectors.wechat.parse import parse_push, read_xml  # noqa: E402
from connectors.wechat.signature import sign, verify  # noqa: E402

TOKEN = "benchtoken"
APP_ID = "wxbench000000001"
AES_KEY = "Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OWFiY2RlZmdoaWo"
QUESTIONS = ["我想退款", "怎么开发票", "where is my order", "运费怎么算", "可以用支付宝吗", "优惠券怎么用"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pushes(n: int) -> list[tuple[dict[str, str], str]]:
    crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID)
    out = []
    for i in range(n):
        timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
        xml = (
            f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[oBench{i % 200:04d}]]>"
            f"</FromUserName><CreateTime>{timestamp}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{QUESTIONS[i % len(QUESTIONS)]}]]></Content><MsgId>{7_000_000_000 + i}</MsgId></xml>"
        )
        envelope = read_xml(crypto.encrypt_message(xml, nonce, timestamp))
        params = {
            "timestamp": timestamp,
            "nonce": nonce,
            "signature": sign(TOKEN, timestamp, nonce),
            "encrypt_type": "aes",
            "msg_signature": envelope["MsgSignature"],
        }
        encrypted = envelope["Encrypt"]
        body = f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        out.append((params, body))
    return out


async def _drive(
    url: str, pushes: list[tuple[dict[str, str], str]], concurrency: int
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    acked = 0
    queue = list(reversed(pushes))

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal acked
        while queue:
            params, body = queue.pop()
            started = time.perf_counter()
            async with http.post(url, params=params, data=body) as resp:
                await resp.read()
                if resp.status == 200:
                    acked += 1
            latencies.append((time.perf_counter() - started) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, acked


def _cpu_s(pid: int) -> tuple[float, float]:
    """The server's (user, system) CPU so far, its worker processes' included: per push, it is less at the
    mercy of other load than msgs/s."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for each in _tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / tick, system / tick


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a supervisor's workers)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for child in children:
            out += _tree(int(child))
    return out


async def _measure(pid: int, url: str, pushes: list[tuple[dict[str, str], str]], concurrency: int) -> dict[str, float]:
    user, system = _cpu_s(pid)
    summary = _summary(*await _drive(url, pushes, concurrency))
    user_after, system_after = _cpu_s(pid)
    summary["server_cpu_ms_per_push"] = round((user_after + system_after - user - system) * 1000 / len(pushes), 3)
    summary["of_which_system_ms"] = round((system_after - system) * 1000 / len(pushes), 3)
    return summary


def _summary(elapsed: float, latencies: list[float], acked: int) -> dict[str, float]:
    latencies = sorted(latencies)
    return {
        "pushes": len(latencies),
        "acknowledged": acked,
        "seconds": round(elapsed, 2),
        "msgs_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
    }


async def _wait_ready(url: str, workers: int = 1) -> None:
    """Until ``url`` answers 200, from each of ``workers`` worker processes (fresh connections reach any one)."""
    seen: set[int] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        for _ in range(1200):
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        worker = (await resp.json(content_type=None) if workers > 1 else {}).get("worker", {})
                        seen.add(worker.get("index", 0))
                        if len(seen) >= workers:
                            return
                        continue
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never became ready")


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, *args, cwd=ROOT, env=os.environ.copy())


def _serve_one(port: int, handler: Callable[[web.Request], Awaitable[web.Response]]) -> None:
    """A one-route comparison server, with the /readyz the driver waits for."""

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/wechat/bench", handler)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def bare_server(port: int) -> None:
    """The baseline: parse the body's XML and say success, nothing else."""

    async def handler(request: web.Request) -> web.Response:
        read_xml(await request.read())
        return web.Response(text="success")

    _serve_one(port, handler)


def protocol_server(port: int) -> None:
    """WeChat's own protocol work and nothing else: both signatures, decryption, parsing the message, and
    the encrypted passive reply. The gateway can go no faster than this, whatever its store and bot cost."""
    key = crypto.aes_key(AES_KEY)

    async def handler(request: web.Request) -> web.Response:
        q = request.query
        if not verify(q["signature"], TOKEN, q["timestamp"], q["nonce"]):
            raise web.HTTPForbidden()
        encrypt = read_xml(await request.read())["Encrypt"]
        if not verify(q["msg_signature"], TOKEN, q["timestamp"], q["nonce"], encrypt):
            raise web.HTTPForbidden()
        push = parse_push(crypto.decrypt(encrypt, key=key, app_id=APP_ID), inbox="bench", received_at=datetime.now(UTC))
        now = int(time.time())
        xml = render.passive_xml(account=push.account, openid=push.message.sender.value, text="您好", at=now)
        return web.Response(
            text=crypto.envelope(xml, token=TOKEN, key=key, app_id=APP_ID, timestamp=str(now)),
            content_type="application/xml",
        )

    _serve_one(port, handler)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="huiliu serve --workers N (processes on one port)")
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--protocol-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
        config["data_dir"] = tmp
        config["bot"]["kb"] = str(ROOT / "kb" / "faq.yaml")
        config["bot"]["max_misses"] = 10**6
        config["bot"].pop("business_hours", None)
        config["inboxes"] = [
            {
                "name": "bench",
                "channel": "wechat",
                "token": TOKEN,
                "app_id": APP_ID,
                "app_secret": "unused-no-api-call-expected",
                "encoding_aes_key": AES_KEY,
                "mode": "safe",
                "api_base": "http://127.0.0.1:9",
                "reply_budget_s": 0.8,
            }
        ]
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")

        port = _free_port()
        proc = await _spawn(
            "-m", "gateway.cli", "--log-level", "WARNING", "serve", "-c", str(path), "--port", str(port),
            "--workers", str(args.workers),
        )  # fmt: skip
        try:
            await _wait_ready(f"http://127.0.0.1:{port}/readyz", args.workers)
            url = f"http://127.0.0.1:{port}/wechat/bench"
            await _drive(url, _pushes(20), 4)  # warm-up (distinct MsgIds from the measured run below)
            pushes = _pushes(args.pushes + 20)[20:]
            results["gateway"] = await _measure(proc.pid, url, pushes, args.concurrency)
            results["gateway"]["workers"] = args.workers
        finally:
            proc.terminate()
            await proc.wait()
        db = sqlite3.connect(Path(tmp) / "huiliu.sqlite3")
        stored = db.execute(
            "SELECT COUNT(*) FROM messages WHERE channel = 'wechat' AND direction = 'inbound'"
        ).fetchone()
        replies = db.execute(
            "SELECT COUNT(*) FROM messages WHERE channel = 'wechat' AND direction = 'outbound'"
        ).fetchone()
        db.close()
        results["gateway"]["stored_inbound"] = stored[0]
        results["gateway"]["stored_replies"] = replies[0]
        # every acknowledged push (plus the 20 warm-up ones) is in the store
        results["gateway"]["all_acknowledged_stored"] = stored[0] >= results["gateway"]["acknowledged"] + 20

        for name, flag in (("bare_parse_only", "--bare-server"), ("protocol_only", "--protocol-server")):
            port = _free_port()
            server = await _spawn(str(THIS), flag, str(port))
            try:
                await _wait_ready(f"http://127.0.0.1:{port}/readyz")
                url = f"http://127.0.0.1:{port}/wechat/bench"
                await _drive(url, _pushes(20), 4)
                results[name] = await _measure(server.pid, url, _pushes(args.pushes), args.concurrency)
            finally:
                server.terminate()
                await server.wait()

    bare, gateway = results["bare_parse_only"], results["gateway"]
    ratio = gateway["msgs_per_s"] / bare["msgs_per_s"]
    # CPU per push does not depend on how busy the machine (or the load generator) was.
    cpu_ratio = bare["server_cpu_ms_per_push"] / gateway["server_cpu_ms_per_push"]
    protocol_ratio = bare["server_cpu_ms_per_push"] / results["protocol_only"]["server_cpu_ms_per_push"]
    summary = {
        "throughput_ratio": round(ratio, 3),
        "cpu_ratio": round(cpu_ratio, 3),
        "protocol_only_cpu_ratio": round(protocol_ratio, 3),
        "goal": ">= 0.5",
    }
    print(json.dumps({**results, **summary}, indent=2))


if __name__ == "__main__":
    cli = argparse.ArgumentParser(add_help=False)
    cli.add_argument("--bare-server", type=int)
    cli.add_argument("--protocol-server", type=int)
    known, _ = cli.parse_known_args()
    if known.bare_server:
        bare_server(known.bare_server)
    elif known.protocol_server:
        protocol_server(known.protocol_server)
    else:
        asyncio.run(main())
