"""Intake cost of the service rules: CPU per message with the sample config's rule set against none.

Run on demand (never in CI):  .venv/bin/python bench/rules_cost.py [--conversations 150] [--rounds 3]

Two gateways (SQLite in a temporary folder, the sample KB), one with ``extract``/``routing``/``queues``/``sla``
from config.yaml and one without, are driven through ``Intake.receive`` in alternating rounds. Each
conversation is three customer messages: a question with an order number, "转人工" (the handoff: the ticket is
created, fields extracted, routed, assigned and given its SLA), and one more message while it waits for an
agent (the rules run again). Process CPU time (the store's thread included) is divided by the messages sent.
Prints one JSON line per configuration with µs of CPU per message, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import parse_config
from core.model import Channel, Identity, IdentityKind, InboundMessage
from gateway.app import GATEWAY, Gateway, build_bot, create_app

ROOT = Path(__file__).resolve().parent.parent
TEXTS = (
    "订单号：{order} 的发票抬头开错了，金额 ¥1,299.50，电话 13800138000",
    "转人工",
    "麻烦快一点，我下午还要报销",
)


def config(tmp: Path, rules: bool) -> Any:
    data: dict[str, Any] = {
        "data_dir": str(tmp),
        "bot": {"kb": str(ROOT / "kb" / "faq.yaml"), "kb_watch_s": 0},
        "inboxes": [{"name": "web", "channel": "webchat"}],
    }
    if rules:
        sample = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
        data |= {key: sample[key] for key in ("extract", "routing", "queues", "sla")}
    return parse_config(data, base_dir=ROOT)


async def drive(gw: Gateway, start: int, conversations: int) -> int:
    sent = 0
    for n in range(start, start + conversations):
        for i, text in enumerate(TEXTS):
            result = await gw.intake.receive(
                InboundMessage(
                    channel=Channel.WEBCHAT,
                    inbox="web",
                    external_id=f"{n}:{i}",
                    sender=Identity(IdentityKind.WEBCHAT_VISITOR, f"{n:032x}"),
                    text=text.format(order=20261201000000 + n),
                    received_at=datetime.now(UTC),
                )
            )
            if result.handled is not None:
                await result.handled
            sent += 1
    return sent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=150, help="conversations per round and gateway")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        base = build_bot(config(Path(folder) / "kb", rules=False))
        apps = {}
        for name, rules in (("none", False), ("sample", True)):
            app = create_app(config(Path(folder) / name, rules), base)
            runner = web.AppRunner(app)
            await runner.setup()  # the app's lifespan: store open, background work started; no socket
            apps[name] = (app, runner)
        cpu = {name: 0.0 for name in apps}
        sent = {name: 0 for name in apps}
        await drive(apps["none"][0][GATEWAY], 10**6, 20)  # warm both (jieba, holidays, SQLite caches)
        await drive(apps["sample"][0][GATEWAY], 10**6, 20)
        for round_ in range(args.rounds):
            for name in ("none", "sample") if round_ % 2 == 0 else ("sample", "none"):
                began = time.process_time()
                sent[name] += await drive(apps[name][0][GATEWAY], round_ * args.conversations, args.conversations)
                cpu[name] += time.process_time() - began
        for _, runner in apps.values():
            await runner.cleanup()
        per = {name: cpu[name] / sent[name] * 1e6 for name in apps}
        for name in apps:
            print(json.dumps({"rules": name, "messages": sent[name], "cpu_us_per_message": round(per[name], 1)}))
        print(json.dumps({"ratio_sample_over_none": round(per["sample"] / per["none"], 3)}))


if __name__ == "__main__":
    asyncio.run(main())
