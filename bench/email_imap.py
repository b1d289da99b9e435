"""End-to-end IMAP intake throughput: N mails appended to a private Dovecot, taken in by the real gateway."""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp.test_utils import TestServer  # noqa: E402

from core.config import parse_config  # noqa: E402
from gateway.app import GATEWAY, build_bot, create_app  # noqa: E402
from tests.email.conftest import PASSWORD, mail, run_dovecot  # noqa: E402


def fill(port: int, user: str, count: int) -> None:
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login(user, PASSWORD)
    for i in range(count):
        body = f"第 {i} 封邮件：我的订单还没有到，请帮忙查询。\n" * 5
        client.append("INBOX", None, None, mail(message_id=f"<bench{i}@example.org>", body=body))
    client.logout()


async def run(port: int, user: str, count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            {
                "data_dir": tmp,
                "bot": {"kb": str(ROOT / "kb" / "faq.yaml")},
                "inboxes": [
                    {
                        "name": "support",
                        "channel": "email",
                        "address": "support@example.test",
                        "acknowledge": False,
                        "imap": {"tls": "none", "port": port, "user": user, "password": PASSWORD},
                    }
                ],
            },
            base_dir=ROOT,
        )
        bot = await asyncio.to_thread(build_bot, config)
        server = TestServer(create_app(config, bot), host="127.0.0.1")
        started = time.perf_counter()
        await server.start_server()
        store = server.app[GATEWAY].store
        key = "email:support:folder:INBOX"
        while True:
            checkpoint = await store.get_checkpoint(key)
            if checkpoint and f'"last_uid": {count}' in checkpoint:
                break
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        await server.close()
        print(f"IMAP intake: {count} mails in {elapsed:.2f}s = {count / elapsed:,.1f} mails/s (fetch, parse, store)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mails", type=int, default=500)
    args = parser.parse_args()
    with run_dovecot() as dovecot:
        user = dovecot.user()
        fill(dovecot.port, user, args.mails)
        asyncio.run(run(dovecot.port, user, args.mails))


if __name__ == "__main__":
    main()
