"""Parse + normalize + store throughput per mail over the shared email corpora (mails/s). Run on demand."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

from connectors.email.connector import EmailConnector
from connectors.email.parse import MailParseError, _parsed_header, parse_mail
from core.config import parse_config
from gateway.wiring import build_bot, build_gateway

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT.parent / "shared" / "corpora" / "email"
_SKIP = {".md", ".json", ".yml", ".rb", ".go", ".py", ".html"}


def corpus() -> list[bytes]:
    return [p.read_bytes() for p in sorted(CORPORA.rglob("*")) if p.is_file() and p.suffix not in _SKIP]


def compare_with_stdlib(mails: list[bytes], rounds: int) -> tuple[float, float]:
    """(ours, stdlib) process CPU seconds per mail: CPU time holds on a busy machine, where wall time does not."""
    ours = stdlib = 0.0
    parser = BytesParser(policy=policy.default)
    for _ in range(rounds):
        started = time.process_time()
        for raw in mails:
            parser.parsebytes(raw)
        stdlib += time.process_time() - started
        _parsed_header.cache_clear()  # one cold pass per round: a replayed corpus would only hit the header cache
        started = time.process_time()
        for raw in mails:
            with contextlib.suppress(MailParseError):
                parse_mail(raw)
        ours += time.process_time() - started
    n = rounds * len(mails)
    return ours / n, stdlib / n


async def run(mails: list[bytes], rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            {
                "data_dir": tmp,
                "bot": {"kb": str(ROOT / "kb" / "faq.yaml")},
                "inboxes": [
                    {"name": "support", "channel": "email", "address": "support@example.test", "acknowledge": False}
                ],
            },
            base_dir=ROOT,
        )
        bot = await asyncio.to_thread(build_bot, config)
        gateway = build_gateway(config, bot)
        await gateway.store.open()
        email = gateway.connectors["support"]
        assert isinstance(email, EmailConnector)

        started = time.perf_counter()
        parsed = 0
        for _ in range(rounds):
            for raw in mails:
                try:
                    parse_mail(raw)
                    parsed += 1
                except MailParseError:
                    pass
        parse_s = time.perf_counter() - started
        print(f"parse only: {rounds * len(mails) / parse_s:,.0f} mails/s ({parsed} parsed of {rounds * len(mails)})")
        ours_cpu, stdlib_cpu = compare_with_stdlib(mails, rounds)
        print(
            f"parse_mail vs the stdlib parser (policy.default), process CPU per mail in alternating rounds: "
            f"{ours_cpu * 1e3:.3f} ms vs {stdlib_cpu * 1e3:.3f} ms = {stdlib_cpu / ours_cpu:.2f}x the stdlib's rate"
        )

        started = time.perf_counter()
        for raw in mails:
            await email.ingest(raw, sink=gateway.intake.receive)
        await gateway.tasks.drain(60)
        full_s = time.perf_counter() - started
        print(f"parse + normalize + store (+ ticket): {len(mails) / full_s:,.1f} mails/s over {len(mails)} mails")
        await gateway.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the parse-only pass")
    args = parser.parse_args()
    mails = corpus()
    asyncio.run(run(mails, args.rounds))


if __name__ == "__main__":
    main()
