"""``huiliu quarantine list|replay`` against the SQLite store, with no server and no mailbox running."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from core.config import Config, load_config
from core.model import Channel, Direction, QuarantinedItem
from core.store import open_store
from gateway.cli import main
from tests.conftest import ROOT, quarantine_items
from tests.email.conftest import mail


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    data = {
        "data_dir": str(tmp_path / "data"),
        "bot": {"kb": str(ROOT / "kb" / "faq.yaml")},
        "inboxes": [
            {
                "name": "support",
                "channel": "email",
                "address": "support@example.test",
                "acknowledge": False,
                "imap": {"tls": "none", "port": 1},
                "smtp": {"tls": "none", "port": 1},
            }
        ],
    }
    path.write_text(yaml.safe_dump(data))
    return path


async def _state(config: Config) -> tuple[list[QuarantinedItem], bool]:
    store = open_store(config)
    await store.open()
    try:
        found = await store.find_message(
            channel=Channel.EMAIL, inbox="support", direction=Direction.INBOUND, external_id="fixed@example.org"
        )
        return await store.quarantined(include_replayed=True), found is not None
    finally:
        await store.close()


def _item(item_id: str, raw: bytes) -> QuarantinedItem:
    return QuarantinedItem(
        id=item_id,
        channel=Channel.EMAIL,
        inbox="support",
        reason="parser error",
        raw=raw,
        received_at=datetime.now(UTC),
    )


def test_list_then_replay_stores_the_mail_and_marks_the_item(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path)
    good = _item("email:support:aaa", mail(message_id="<fixed@example.org>"))  # parses now (a fixed parser)
    bad = _item("email:support:bbb", b"Subject: still no sender\r\n\r\nx")
    asyncio.run(quarantine_items(load_config(config), [good, bad]))

    assert main(["quarantine", "list", "-c", str(config)]) == 0
    listed = capsys.readouterr().out
    assert "email:support:aaa" in listed and "email:support:bbb" in listed

    assert main(["quarantine", "replay", "email:support:aaa", "email:support:bbb", "-c", str(config)]) == 1
    out = capsys.readouterr().out
    assert "email:support:aaa\tok\tstored as message msg_" in out
    assert "email:support:bbb\tfailed\tstill cannot be read" in out
    items, stored = asyncio.run(_state(load_config(config)))
    assert stored
    assert {i.id: i.replayed for i in items} == {"email:support:aaa": True, "email:support:bbb": False}

    assert main(["quarantine", "list", "-c", str(config)]) == 0
    assert "email:support:aaa" not in capsys.readouterr().out
