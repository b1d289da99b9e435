"""CDR import through the one intake path: the CLI against the configured store, and the watched folder."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from core.config import load_config
from core.model import Channel, Direction, HandoffReason, Priority, TicketStatus
from core.store import TicketQuery, open_store
from gateway.cli import main
from gateway.intake import BotSetup
from tests.conftest import ROOT, make_config, started
from tests.phone.conftest import call_message, phone_inbox, store_of
from tests.phone.rows import asterisk, freeswitch, fs_json


def write_config(tmp_path: Path, **inbox: object) -> Path:
    config = {
        "data_dir": str(tmp_path / "data"),
        "bot": {"kb": str(ROOT / "kb" / "faq.yaml")},
        "inboxes": [{"name": "tel", "channel": "phone", "cti_enabled": False, **inbox}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


MISSED = {"answer": "", "billsec": "0", "disposition": "NO ANSWER", "end": "2024-03-01 09:00:40", "duration": "40"}


BUSY = {**MISSED, "disposition": "BUSY", "start": "2024-03-01 10:00:00", "end": "2024-03-01 10:00:05"}


BUSY = {**MISSED, "disposition": "BUSY", "start": "2024-03-01 10:00:00", "end": "2024-03-01 10:00:05"}


def master_csv() -> str:
    return (
        "\n".join(
            [
                asterisk(uniqueid="1.1"),
                asterisk(uniqueid="1.2", **MISSED),
                asterisk(uniqueid="1.3", **BUSY),
                '"broken","row"',
                asterisk(uniqueid="1.4", src="201", dst="202"),
                asterisk(uniqueid="1.5", src="13900139000", disposition="FAILED", answer="", billsec="0"),
                asterisk(uniqueid="1.6", start="2024-13-45 99:00:00"),
            ]
        )
        + "\n"
    )


def test_calls_import_reports_counts_and_lines_and_reimport_imports_nothing_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path)
    cdr = tmp_path / "Master.csv"
    cdr.write_text(master_csv(), encoding="utf-8")
    args = ["calls", "import", str(cdr), "--format", "asterisk-csv", "-c", str(config_path)]

    assert main(args) == 1  # bad rows make the exit status 1 so a script notices
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "imported 4, skipped 1 (0 already imported, 1 not calls with a customer), bad 2"
    assert out[1] == "  line 4: expected 16 to 21 columns, got 2"
    assert out[2].startswith("  line 7: time '2024-13-45 99:00:00'")

    assert main(args) == 1
    again = capsys.readouterr().out.splitlines()
    assert again[0] == "imported 0, skipped 5 (4 already imported, 1 not calls with a customer), bad 2"

    async def check() -> None:
        config = await asyncio.to_thread(load_config, config_path)
        store = open_store(config)
        await store.open()
        try:
            page = await store.list_tickets(TicketQuery(channel=Channel.PHONE))
            (li_lei, other) = sorted(page.tickets, key=lambda t: t.priority != Priority.HIGH)
            assert li_lei.handoff_reason is HandoffReason.MISSED_CALL and li_lei.priority is Priority.HIGH
            assert li_lei.status is TicketStatus.NEW and other.priority is Priority.NORMAL
            answered = await store.find_message(
                channel=Channel.PHONE, inbox="tel", direction=Direction.INBOUND, external_id="1.1"
            )
            assert answered is not None and answered.meta["talk_s"] == 300 and answered.meta["source"] == "asterisk-csv"
            calls = await store.messages(answered.conversation_id)
            assert [m.external_id for m in calls] == ["1.1", "1.2", "1.3"]
        finally:
            await store.close()

    asyncio.run(check())


def test_calls_import_of_freeswitch_csv_and_json_with_the_configured_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path, timezone="Europe/Berlin")
    csv_file = tmp_path / "Master.csv"
    csv_file.write_text(
        freeswitch() + "\n" + freeswitch(uuid="fs-2", hangup_cause="ORIGINATOR_CANCEL", answer_stamp="", billsec="0")
    )
    json_file = tmp_path / "cdr.json"
    json_file.write_text(fs_json() + "\n" + fs_json(encode=True, uuid="fs-j2", hangup_cause="NO_ANSWER",
                                                     answer_epoch="0", billsec="0"))  # fmt: skip
    cfg = ["-c", str(config_path)]
    assert main(["calls", "import", str(csv_file), "--format", "freeswitch-csv", *cfg]) == 0
    assert capsys.readouterr().out.startswith("imported 2, skipped 0")
    assert main(["calls", "import", str(json_file), "--format", "freeswitch-json", "--inbox", "tel", *cfg]) == 0
    assert capsys.readouterr().out.startswith("imported 2, skipped 0")
    assert main(["calls", "import", str(json_file), "--format", "freeswitch-json", *cfg]) == 0
    assert capsys.readouterr().out.startswith("imported 0, skipped 2 (2 already imported")

    async def check() -> None:
        config = await asyncio.to_thread(load_config, config_path)
        store = open_store(config)
        await store.open()
        try:
            first = await store.find_message(
                channel=Channel.PHONE, inbox="tel", direction=Direction.INBOUND,
                external_id="6b0b2a7e-0c8b-4d9b-9a43-0f4f0d9b0001",
            )  # fmt: skip
            assert first is not None and first.meta["started_at"] == "2024-03-01T10:00:00+01:00"
            assert first.meta["caller_name"] == "Han Meimei"
        finally:
            await store.close()

    asyncio.run(check())


def test_calls_import_names_a_missing_phone_inbox_or_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = write_config(tmp_path)
    assert main(["calls", "import", str(tmp_path / "nope.csv"), "-c", str(config_path)]) == 2
    assert "nope.csv" in capsys.readouterr().err
    cdr = tmp_path / "Master.csv"
    cdr.write_text(master_csv())
    assert main(["calls", "import", str(cdr), "--inbox", "fax", "-c", str(config_path)]) == 2
    assert "there is no phone inbox 'fax'" in capsys.readouterr().err


async def _write(path: Path, text: str, mode: str = "w") -> None:
    def run() -> None:
        with path.open(mode, encoding="utf-8") as fh:
            fh.write(text)

    await asyncio.to_thread(run)


async def test_watched_folder_imports_appended_rows_once_and_quarantines_bad_ones(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    folder = tmp_path / "cdr"
    await asyncio.to_thread(folder.mkdir)
    inbox = phone_inbox(cdr={"watch_folder": str(folder), "watch_poll_s": 0.05, "watch_pattern": "*.csv"})
    config = make_config(tmp_path, inboxes=[inbox])
    master = folder / "Master.csv"
    await _write(master, asterisk(uniqueid="w1") + "\n" + '"bad"\n')
    async with started(config, bot_setup) as gw:
        for _ in range(200):
            if await call_message(gw, "tel", "w1") is not None:
                break
            await asyncio.sleep(0.02)
        assert await call_message(gw, "tel", "w1") is not None
        half = asterisk(uniqueid="w3", **MISSED)
        await _write(master, asterisk(uniqueid="w2", **MISSED) + "\n" + half[:40], "a")
        for _ in range(200):
            if await call_message(gw, "tel", "w2") is not None:
                break
            await asyncio.sleep(0.02)
        assert await call_message(gw, "tel", "w2") is not None
        await asyncio.sleep(0.2)
        assert await call_message(gw, "tel", "w3") is None, "a line still being written waits"
        await _write(master, half[40:] + "\n", "a")
        for _ in range(200):
            if await call_message(gw, "tel", "w3") is not None:
                break
            await asyncio.sleep(0.02)
        assert await call_message(gw, "tel", "w3") is not None
        (item,) = await store_of(gw).quarantined()
        assert item.reason == "Master.csv line 2: expected 16 to 21 columns, got 1" and item.raw == b'"bad"'
        state = json.loads(await store_of(gw).get_checkpoint("phone:tel:cdr-file:Master.csv") or "{}")
        assert state["line"] == 5
    # A restart reads on from the checkpoint: nothing is imported twice, the bad row is not re-quarantined.
    async with started(config, bot_setup) as gw:
        await asyncio.sleep(0.3)
        w1 = await call_message(gw, "tel", "w1")
        assert w1 is not None
        assert [m.external_id for m in await store_of(gw).messages(w1.conversation_id)] == ["w1", "w2", "w3"]
        assert len(await store_of(gw).quarantined()) == 1
