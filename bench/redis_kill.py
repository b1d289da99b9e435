"""WeChat pushes on Redis, all at once, with a SIGKILL mid-load: errors, lost, doubled, doubled replies.

Run on demand (never in CI):
    .venv/bin/python bench/redis_kill.py [--pushes 500] [--runs 3] [--root /path/to/a/checkout]

Bounded and loopback only: one ``huiliu serve`` (from ``--root``, this checkout by default) on the local Redis
(a fresh key prefix, removed afterwards) and a fake WeChat API in this process. All pushes are sent at once.
When a third have been answered the server is killed with SIGKILL and started again, and every push that got
no answer is retried the way WeChat does (the byte-identical request, up to three times). Then it counts:

- errors: answers with a 5xx status (a 503 is retried like no answer; a 500 is a bug);
- lost: pushes never stored, though WeChat stopped retrying;
- doubled: pushes stored more than once;
- doubled replies: customers who got more than one reply to one push (passive reply plus customer-service API).

``--root`` runs another checkout's code (e.g. main before the fixes) against the same load for a before/after.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import secrets
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TextIO

import aiohttp
import yaml

THIS = Path(__file__).resolve()
ROOT = THIS.parent.parent
sys.path.insert(0, str(ROOT))

from connectors.wechat.signature import sign  # noqa: E402
from tests.wechat.fake_api import FakeWechat  # noqa: E402

TOKEN = "benchtoken"
APP_ID = "wxbench000000001"
APP_SECRET = "bench-app-secret-0123456789"
API_TOKEN = "bench-api-token-0123456789"
REDIS_URL = os.environ.get("HUILIU_REDIS_URL", "redis://127.0.0.1:6379/0")
QUESTIONS = ["我想退款", "怎么开发票", "where is my order", "运费怎么算", "可以用支付宝吗", "优惠券怎么用"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _push(n: int) -> tuple[str, dict[str, str], bytes]:
    """One push as WeChat signs it: its retries are this very request again."""
    openid = f"oKill{n:05d}"
    timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
    xml = (
        f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{timestamp}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{QUESTIONS[n % len(QUESTIONS)]}]]></Content><MsgId>{9_100_000_000 + n}</MsgId></xml>"
    )
    query = {"timestamp": timestamp, "nonce": nonce, "signature": sign(TOKEN, timestamp, nonce)}
    return openid, query, xml.encode()


async def _serve(root: Path, config: Path, port: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "-c", str(config), "--port", str(port),
        cwd=root, stdout=asyncio.subprocess.DEVNULL, stderr=_log(),
        env={**os.environ, "BENCH_API_TOKEN": API_TOKEN},
    )  # fmt: skip


def _log() -> int | TextIO:
    """The gateway's log: to the file named by BENCH_LOG, else nowhere."""
    path = os.environ.get("BENCH_LOG")
    return open(path, "a", encoding="utf-8") if path else asyncio.subprocess.DEVNULL


async def _ready(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(600):
        try:
            async with http.get(url + "/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the gateway did not become ready")


async def _inbound_counts(http: aiohttp.ClientSession, url: str) -> collections.Counter[str]:
    """How often each push was stored: message.created events of inbound WeChat messages, by external id."""
    counts: collections.Counter[str] = collections.Counter()
    after = 0
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    while True:
        async with http.get(f"{url}/api/v1/events", params={"after": after, "limit": 1000}, headers=headers) as r:
            page = await r.json()
        for event in page["events"]:
            message = event["data"].get("message") if event["type"] == "message.created" else None
            if message and message["direction"] == "inbound" and message["channel"] == "wechat":
                counts[message["external_id"]] += 1
        if not page["events"]:
            return counts
        after = page["next_after"]


async def one_run(root: Path, pushes: int) -> dict[str, int]:
    fake = await FakeWechat(app_id=APP_ID, app_secret=APP_SECRET).start()
    prefix = f"bench-kill-{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "data_dir": str(Path(tmp) / "data"),
                    "server": {"host": "127.0.0.1", "port": 8080, "shutdown_grace_s": 5, "resend_after_s": 1},
                    "store": {"backend": "redis", "url": REDIS_URL, "prefix": prefix},
                    "api": {"tokens": ["${BENCH_API_TOKEN}"]},
                    "bot": {"kb": str(ROOT / "kb" / "faq.yaml"), "max_misses": 10**6},
                    "inboxes": [
                        {"name": "oa", "channel": "wechat", "token": TOKEN, "app_id": APP_ID,
                         "app_secret": APP_SECRET, "api_base": fake.url, "reply_budget_s": 4}
                    ],
                },
                allow_unicode=True,
            ),
            encoding="utf-8",
        )  # fmt: skip
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        batch = [_push(n) for n in range(pushes)]
        statuses: collections.Counter[int] = collections.Counter()
        passive: collections.Counter[str] = collections.Counter()
        unanswered: set[int] = set()
        answered = 0
        third = asyncio.Event()

        async def deliver(http: aiohttp.ClientSession, n: int) -> bool:
            nonlocal answered
            openid, query, body = batch[n]
            try:
                async with http.post(f"{url}/wechat/oa", params=query, data=body) as resp:
                    text = await resp.text()
                    statuses[resp.status] += 1
                    if resp.status != 200:
                        return False
            except (TimeoutError, aiohttp.ClientError):
                return False
            if text != "success":
                passive[openid] += 1
            answered += 1
            if answered >= pushes // 3:
                third.set()
            return True

        proc = await _serve(root, config, port)
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:
            await _ready(http, url)

            async def kill() -> None:
                await third.wait()
                proc.send_signal(signal.SIGKILL)

            killer = asyncio.create_task(kill())
            results = await asyncio.gather(*(deliver(http, n) for n in range(pushes)))
            unanswered = {n for n, ok in enumerate(results) if not ok}
            await killer
            await proc.wait()
            proc = await _serve(root, config, port)
            try:
                await _ready(http, url)
                for _ in range(3):  # WeChat retries what got no answer, three times, the same request
                    pending = sorted(unanswered)
                    again = await asyncio.gather(*(deliver(http, n) for n in pending))
                    unanswered = {n for n, ok in zip(pending, again, strict=True) if not ok}
                await asyncio.sleep(25)  # resends after the kill, and WeChat's retry window, play out
                stored = await _inbound_counts(http, url)
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 20)
    await fake.close()
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    tag = "{" + prefix.rstrip(":") + "}:*"
    async for key in client.scan_iter(match=tag, count=1000):
        await client.unlink(key)
    await client.aclose()
    replies = passive + collections.Counter(m["touser"] for m in fake.sent)
    ids = [str(9_100_000_000 + n) for n in range(pushes)]
    return {
        "errors": sum(c for s, c in statuses.items() if s >= 500 and s != 503),
        "503": statuses[503],
        "lost": sum(1 for i in ids if stored[i] == 0),
        "doubled": sum(1 for i in ids if stored[i] > 1),
        "doubled_replies": sum(1 for openid, _, _ in batch if replies[openid] > 1),
        "no_reply": sum(1 for openid, _, _ in batch if replies[openid] == 0),
        "unanswered_after_retries": len(unanswered),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose gateway runs")
    args = parser.parse_args()
    totals: collections.Counter[str] = collections.Counter()
    for run in range(1, args.runs + 1):
        result = await one_run(args.root.resolve(), args.pushes)
        totals.update(result)
        print(f"run {run}: " + ", ".join(f"{k} {v}" for k, v in result.items()), flush=True)
    print(f"total over {args.runs} runs of {args.pushes}: " + ", ".join(f"{k} {v}" for k, v in totals.items()))


if __name__ == "__main__":
    asyncio.run(main())
