"""CDR import speed: parse rows/s and end-to-end import rows/s (intake into SQLite) on a generated file.

Answered calls go through intake's bulk path (many rows per store write); missed calls open or escalate a
ticket in bulk too (``bulk intake`` line: how many went which way).

Missed calls (callback tickets, raised priorities) go in bulk too where the store can (SQLite), else one at a time.

python bench/cdr_import.py --rows 100000 [--format asterisk-csv|freeswitch-csv|freeswitch-json] [--parse-only]
    [--redis redis://127.0.0.1:6379/0]  (the store on Redis, under a key prefix of its own, removed after)
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.phone.cdr import CdrFormat, decode, parse_cdr
from connectors.phone.connector import cdr_options
from core.config import PhoneInbox, parse_config
from core.store.redis.store import key_tag
from gateway.app import build_bot
from gateway.calls import import_calls

ROOT = Path(__file__).resolve().parent.parent
DISPOSITIONS = ["ANSWERED"] * 6 + ["NO ANSWER", "BUSY", "FAILED", "CONGESTION"]
CAUSES = {"ANSWERED": "NORMAL_CLEARING", "NO ANSWER": "NO_ANSWER", "BUSY": "USER_BUSY", "FAILED": "ORIGINATOR_CANCEL",
          "CONGESTION": "SWITCH_CONGESTION"}  # fmt: skip


def variables(
    i: int, caller: str, stamp: str, answer: str, end: str, duration: int, talk: int, disp: str
) -> dict[str, str]:
    return {
        "uuid": f"uuid-{i:08d}",
        "caller_id_number": caller,
        "destination_number": "4008001234",
        "start_stamp": stamp,
        "answer_stamp": answer,
        "end_stamp": end,
        "duration": str(duration),
        "billsec": str(talk),
        "hangup_cause": CAUSES[disp],
    }


def generate(rows: int, fmt: CdrFormat, customers: int) -> str:
    """Rows for ``customers`` distinct callers (repeat callers join their open tickets)."""
    rng = random.Random(5)
    start = datetime(2024, 3, 1, 8, 0, 0)
    lines = []
    for i in range(rows):
        begin = start + timedelta(seconds=i * 7)
        caller = f"138{rng.randrange(customers):08d}"
        disposition = rng.choice(DISPOSITIONS)
        answered = disposition == "ANSWERED"
        wait, talk = rng.randrange(1, 60), rng.randrange(10, 900) if answered else 0
        answer = (begin + timedelta(seconds=wait)).strftime("%Y-%m-%d %H:%M:%S") if answered else ""
        end = (begin + timedelta(seconds=wait + talk)).strftime("%Y-%m-%d %H:%M:%S")
        stamp = begin.strftime("%Y-%m-%d %H:%M:%S")
        if fmt is CdrFormat.ASTERISK_CSV:
            lines.append(
                f'"","{caller}","4008001234","from-trunk","""C{i}"" <{caller}>","SIP/trunk-{i:08x}",'
                f'"SIP/2{i % 50:02d}-{i:08x}","Queue","sales,t","{stamp}","{answer}","{end}",{wait + talk},{talk},'
                f'"{disposition}","DOCUMENTATION","1709251200.{i}",""'
            )
        elif fmt is CdrFormat.FREESWITCH_CSV:
            lines.append(
                f'"C{i}","{caller}","4008001234","public","{stamp}","{answer}","{end}","{wait + talk}","{talk}",'
                f'"{CAUSES[disposition]}","uuid-{i:08d}","","","PCMA","PCMA"'
            )
        else:
            lines.append(
                json.dumps({"variables": variables(i, caller, stamp, answer, end, wait + talk, talk, disposition)})
            )
    return "\n".join(lines) + "\n"


def baseline(text: str, fmt: CdrFormat, db_path: Path) -> tuple[float, float]:
    """The floor the issue compares against: ``csv.reader`` (``json.loads`` per line for JSON) and one SQLite
    ``executemany`` of the same rows, as text columns. Returns (wall s, CPU s)."""
    wall, cpu = time.perf_counter(), time.process_time()
    if fmt is CdrFormat.FREESWITCH_JSON:
        rows = [list(json.loads(line)["variables"].values()) for line in text.splitlines() if line]
    else:
        rows = list(csv.reader(io.StringIO(text)))
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    db = sqlite3.connect(db_path)
    db.execute(f"CREATE TABLE cdr ({', '.join(f'c{i} TEXT' for i in range(width))})")
    with db:
        db.executemany(f"INSERT INTO cdr VALUES ({', '.join('?' * width)})", rows)
    db.close()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--format", default="asterisk-csv", choices=[f.value for f in CdrFormat])
    parser.add_argument("--parse-only", action="store_true")
    parser.add_argument("--redis", metavar="URL", help="import into Redis at URL instead of SQLite")
    args = parser.parse_args()
    fmt = CdrFormat(args.format)
    prefix = f"hlbench-cdr-{uuid.uuid4().hex[:12]}:"
    try:
        run(args, fmt, prefix)
    finally:
        if args.redis:
            asyncio.run(drop_keys(args.redis, prefix))


async def drop_keys(url: str, prefix: str) -> None:
    """The bench's keys out of the shared Redis."""
    client = aioredis.Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=key_tag(prefix).replace("[", "\\[") + "*", count=1000):
            await client.unlink(key)
    finally:
        await client.aclose()


def run(args: argparse.Namespace, fmt: CdrFormat, prefix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings: dict[str, object] = {
            "data_dir": str(Path(tmp) / "data"),
            "bot": {"kb": str(ROOT / "kb" / "faq.yaml")},
            "inboxes": [{"name": "tel", "channel": "phone", "cti_enabled": False}],
        }
        if args.redis:
            settings["store"] = {"backend": "redis", "url": args.redis, "prefix": prefix}
        config = parse_config(settings, base_dir=ROOT)
        path = Path(tmp) / "cdr.txt"
        path.write_text(generate(args.rows, fmt, args.customers), encoding="utf-8")
        size_mb = path.stat().st_size / 1e6
        inbox = config.inboxes[0]
        assert isinstance(inbox, PhoneInbox)
        options = cdr_options(inbox)
        began = time.perf_counter()
        parsed = parse_cdr(decode(path.read_bytes()), fmt, options)
        parse_s = time.perf_counter() - began
        assert len(parsed.records) == args.rows and not parsed.bad, (len(parsed.records), parsed.bad[:3])
        print(f"{args.rows} rows ({size_mb:.1f} MB, {fmt}): parse {parse_s:.2f} s = {args.rows / parse_s:,.0f} rows/s")
        if args.parse_only:
            return
        base_s, base_cpu = baseline(path.read_text(encoding="utf-8"), fmt, Path(tmp) / "baseline.db")
        bot = build_bot(config)
        began, cpu = time.perf_counter(), time.process_time()
        report = asyncio.run(import_calls(config, bot, path, fmt=fmt, inbox="tel"))
        import_s, import_cpu = time.perf_counter() - began, time.process_time() - cpu
        print(
            f"import (parse + intake + {'Redis' if args.redis else 'SQLite'}, tickets included): {import_s:.1f} s"
            f" = {args.rows / import_s:,.0f} rows/s"
        )
        print(report.lines()[0])
        alone = args.rows - report.in_bulk
        print(f"bulk intake: {report.in_bulk} rows many per store write, the other {alone} one by one")
        print(
            f"baseline (csv + executemany): {base_s:.2f} s = {args.rows / base_s:,.0f} rows/s;"
            f" import/baseline = {base_s / import_s:.3f}x (wall), {base_cpu / import_cpu:.3f}x (CPU);"
            f" CPU per row: import {import_cpu / args.rows * 1e3:.3f} ms, baseline {base_cpu / args.rows * 1e3:.4f} ms"
        )
        began, cpu = time.perf_counter(), time.process_time()
        again = asyncio.run(import_calls(config, bot, path, fmt=fmt, inbox="tel"))
        reimport_s, reimport_cpu = time.perf_counter() - began, time.process_time() - cpu
        print(
            f"re-import (all duplicates): {reimport_s:.1f} s = {args.rows / reimport_s:,.0f} rows/s; {again.lines()[0]}"
        )
        print(f"re-import CPU per row: {reimport_cpu / args.rows * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
