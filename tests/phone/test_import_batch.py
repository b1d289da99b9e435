"""A CDR import as shipped (known rows found in one read, customers in parallel lanes, log lines stored handled)
leaves the store exactly as feeding the same rows one by one through intake does, on SQLite and on Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.capabilities import ImportsCalls
from connectors.phone.call import CallOptions, to_inbound
from connectors.phone.cdr import CdrFormat, decode, parse_cdr
from connectors.phone.connector import ImportReport, cdr_options
from core.clock import utcnow
from core.codec import to_jsonable
from core.config import Config, PhoneInbox
from core.model import Channel, Direction, Identity, IdentityKind
from core.store import Store, TicketQuery
from gateway.intake import BotSetup
from gateway.wiring import offline_gateway
from tests.conftest import ROOT, make_config
from tests.phone.rows import asterisk
from tests.redis_util import REDIS_URL, redis_store
from tests.rules.sample import sample_rules

_ID = re.compile(r"\b(msg|cv|ct|tk)_[0-9a-f]{32}\b|\b(HL)-\d{6}\b")  # ticket numbers: customers' order varies
_CLOCK_KEYS = frozenset({"created_at", "updated_at", "occurred_at", "received_at", "at", "seq", "id", "number"})


@pytest.fixture(params=["sqlite", "redis"])
async def store_settings(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {}
        return
    probe = redis_store()  # skips (or fails under CI) when Redis is absent; owns the prefix's cleanup
    yield {"store": {"backend": "redis", "url": REDIS_URL, "prefix": probe.tag}}
    await probe.open()
    await probe.close()


def cdr_file() -> bytes:
    """Repeat callers whose first call is answered, then missed (a ticket), then missed again (escalated), then
    answered while the ticket is open; a withheld number; an internal call; a row repeated within the file."""
    rows: list[str] = []
    for i in range(60):
        caller = f"1380013{i % 7:04d}"
        missed = i % 3 == 1
        values: dict[str, str] = {"uniqueid": f"17092548{i:02d}.1", "src": caller, "clid": f'"C{i % 7}" <{caller}>'}
        values.update(start=f"2024-03-01 09:{i:02d}:00", answer=f"2024-03-01 09:{i:02d}:10")
        values.update(end=f"2024-03-01 09:{i:02d}:50", duration="50", billsec="40")
        if missed:
            values.update(answer="", billsec="0", disposition="NO ANSWER", end=f"2024-03-01 09:{i:02d}:30")
        rows.append(asterisk(**values))
    rows.append(asterisk(uniqueid="anon.1", src="anonymous", clid="", answer="", billsec="0", disposition="BUSY"))
    rows.append(asterisk(uniqueid="internal.1", src="201", dst="202"))
    rows.append(rows[4])  # the PBX wrote one row twice
    return ("\n".join(rows) + "\n").encode()


def canonical_json(value: Any, drop: frozenset[str] = _CLOCK_KEYS) -> Any:
    """Model values as JSON with the random ids and the clock's times taken out."""
    if isinstance(value, dict):
        return {k: canonical_json(v, drop) for k, v in sorted(value.items()) if k not in drop}
    if isinstance(value, list):
        return [canonical_json(v, drop) for v in value]
    if isinstance(value, str):
        return _ID.sub(lambda m: f"<{m.group(1) or m.group(2)}>", value)
    return value


async def contents(store: Store, external_ids: list[str], drop: frozenset[str] = _CLOCK_KEYS) -> dict[str, Any]:
    """Per customer address: the conversation, its messages in order, its tickets and its events in order."""

    def canonical(value: Any) -> Any:
        return canonical_json(value, drop)

    by_conversation: dict[str, str] = {}
    for external_id in external_ids:
        found = await store.find_message(
            channel=Channel.PHONE, inbox="tel", direction=Direction.INBOUND, external_id=external_id
        )
        if found is not None:
            conversation = await store.get_conversation(found.conversation_id)
            assert conversation is not None
            by_conversation[conversation.id] = str(conversation.address)
    per_address: dict[str, dict[str, Any]] = {}
    for conversation_id, address in by_conversation.items():
        conversation = await store.get_conversation(conversation_id)
        messages = await store.messages(conversation_id)
        per_address[address] = {
            "conversation": canonical(to_jsonable(conversation)),
            "messages": [canonical(to_jsonable(m)) for m in messages],
            "tickets": [],
            "events": [],
        }
    tickets = await store.list_tickets(TicketQuery(channel=Channel.PHONE, limit=500))
    for ticket in tickets.tickets:
        per_address[by_conversation[ticket.conversation_id]]["tickets"].append(canonical(to_jsonable(ticket)))
    events: dict[str, list[Any]] = defaultdict(list)
    for event in await store.events_after(0, limit=10_000):
        assert event.conversation_id is not None
        events[by_conversation[event.conversation_id]].append(canonical(event.to_json()))
    for address, listed in events.items():
        per_address[address]["events"] = listed
    for entry in per_address.values():
        entry["tickets"].sort(key=repr)
    return {"addresses": per_address, "unhandled": len(await store.unhandled_messages())}


async def import_row_by_row(config: Config, bot: BotSetup, data: bytes) -> ImportReport:
    """Every row through intake on its own, in file order, waiting for each one's handling."""
    inbox = config.inboxes[0]
    assert isinstance(inbox, PhoneInbox)
    parsed = await asyncio.to_thread(lambda: parse_cdr(decode(data), CdrFormat.ASTERISK_CSV, cdr_options(inbox)))
    report = ImportReport(skipped=len(parsed.skipped), bad=list(parsed.bad))
    async with offline_gateway(config, bot) as gateway:
        options = CallOptions(region=inbox.default_region, other_regions=inbox.other_regions)
        for _, record in parsed.records:
            result = await gateway.intake.receive(
                to_inbound(record, inbox="tel", options=options, received_at=utcnow())
            )
            report.duplicates += result.duplicate
            report.imported += not result.duplicate
            if result.handled is not None:
                await result.handled
    return report


async def import_batched(config: Config, bot: BotSetup, data: bytes) -> ImportReport:
    async with offline_gateway(config, bot) as gateway:
        phone = gateway.connectors["tel"]
        assert isinstance(phone, ImportsCalls)
        return await phone.import_cdr(
            data,
            CdrFormat.ASTERISK_CSV,
            gateway.intake.receive,
            log_lines=gateway.intake.receive_log_lines,
            ticket_lines=gateway.intake.receive_ticket_lines,
        )


@pytest.mark.parametrize("rules", [False, True], ids=["no-rules", "service-rules"])
async def test_batched_import_and_reimport_leave_the_store_as_row_by_row_intake_does(
    tmp_path: Path, bot_setup: BotSetup, store_settings: dict[str, Any], rules: bool
) -> None:
    """With the shipped service rules, an answered call on a ticket's conversation is not a log line any more (the
    rules see it), so the bulk path must hand it to intake; SLA due times follow the clock and agents are taken
    in turn as customers come, so those are left out of the comparison there."""
    data = cdr_file()
    inbox = {"name": "tel", "channel": "phone", "cti_enabled": False}
    if rules:
        store_settings = {**store_settings, **sample_rules()}
    drop = _CLOCK_KEYS | {"sla", "assignee", "due_at"} if rules else _CLOCK_KEYS
    external_ids = [f"17092548{i:02d}.1" for i in range(60)] + ["anon.1", "internal.1"]
    results: list[tuple[list[str], dict[str, Any]]] = []
    in_bulk = 0
    for name, run in (("one-by-one", import_row_by_row), ("batched", import_batched)):
        settings = dict(store_settings)
        if "store" in settings:  # a prefix of its own for each path, under the probe's (cleaned up with it)
            settings["store"] = {**settings["store"], "prefix": settings["store"]["prefix"] + name + ":"}
        config = await asyncio.to_thread(make_config, tmp_path / name, inboxes=[inbox], **settings)
        first = await run(config, bot_setup, data)
        again = await run(config, bot_setup, data)
        in_bulk = first.in_bulk
        async with offline_gateway(config, bot_setup) as gateway:
            stored = await contents(gateway.store, external_ids, drop)
        results.append((first.lines() + again.lines(), stored))
    (row_report, row_store), (batch_report, batch_store) = results
    assert batch_report == row_report
    assert batch_report[0] == "imported 61, skipped 2 (1 already imported, 1 not calls with a customer), bad 0"
    assert batch_report[1] == "imported 0, skipped 63 (62 already imported, 1 not calls with a customer), bad 0"
    assert batch_store == row_store, _diff(row_store, batch_store)[:8]
    assert batch_store["unhandled"] == 0
    tickets = [t for entry in batch_store["addresses"].values() for t in entry["tickets"]]
    assert len(tickets) == 7 and any(t["priority"] == "high" for t in tickets)  # repeat misses escalate
    if not rules:  # with them, which calls the rules must see alone depends on the tickets' state
        # SQLite takes every call with a customer in bulk, the 20 missed ones (and the repeated row, one of them)
        # too; Redis the others only (its missed calls go through intake alone)
        assert in_bulk == (62 if "store" not in store_settings else 62 - 21)


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


async def test_an_import_killed_midway_and_run_again_stores_every_call_once_with_its_event(tmp_path: Path) -> None:
    """``huiliu calls import`` killed (SIGKILL) while it writes: each bulk write is one transaction, so no call is
    stored without its ``message.created`` event, and no missed call without its handling (a ticket for the
    customer's first, a raised priority for the next); the second run stores exactly the calls the first did
    not, and every customer with a missed call has one ticket, opened once."""
    missed = {"answer": "", "billsec": "0", "disposition": "NO ANSWER"}
    rows = [
        asterisk(uniqueid=f"k{i}", src=f"1390013{i % 400:04d}", **(missed if i % 3 == 1 else {})) for i in range(6000)
    ]
    callers_missed = len({i % 400 for i in range(6000) if i % 3 == 1})
    cdr = tmp_path / "Master.csv"
    cdr.write_text("\n".join(rows) + "\n", encoding="utf-8")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        f"data_dir: {tmp_path / 'data'}\nbot: {{kb: {ROOT / 'kb' / 'faq.yaml'}}}\n"
        "inboxes: [{name: tel, channel: phone, cti_enabled: false}]\n",
        encoding="utf-8",
    )
    args = ["-m", "gateway.cli", "calls", "import", str(cdr), "--format", "asterisk-csv", "-c", str(config_path)]
    database = tmp_path / "data" / "huiliu.sqlite3"

    def stored() -> int:
        if not database.exists():
            return 0
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as db:
            try:
                return int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
            except sqlite3.OperationalError:  # the schema is not there yet
                return 0

    first = await asyncio.create_subprocess_exec(sys.executable, *args, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL)
    for _ in range(1200):
        if await asyncio.to_thread(stored) > 0:
            break
        await asyncio.sleep(0.05)
    first.kill()
    await first.wait()
    killed_at = await asyncio.to_thread(stored)
    assert 0 < killed_at < len(rows), "the kill should land mid-import; make the file longer if it did not"

    again = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await again.communicate()
    assert again.returncode == 0, out.decode()
    skipped = f"skipped {killed_at} ({killed_at} already imported, 0 not calls with a customer)"
    assert out.decode().splitlines()[0] == f"imported {len(rows) - killed_at}, {skipped}, bad 0"

    def check() -> None:
        with contextlib.closing(sqlite3.connect(database)) as db:
            ids = [e for (e,) in db.execute("SELECT external_id FROM messages WHERE direction = 'inbound'")]
            created = db.execute("SELECT COUNT(*) FROM events WHERE type = 'message.created'").fetchone()[0]
            unhandled = db.execute("SELECT COUNT(*) FROM messages WHERE handled = 0").fetchone()[0]
            tickets = db.execute("SELECT COUNT(*), COUNT(DISTINCT contact_id) FROM tickets").fetchone()
            opened = db.execute("SELECT COUNT(*) FROM events WHERE type = 'ticket.created'").fetchone()[0]
            unticketed = db.execute(
                "SELECT COUNT(*) FROM messages WHERE direction = 'inbound' AND ticket_id IS NULL"
                " AND external_id IN (" + ",".join(f"'k{i}'" for i in range(1, len(rows), 3)) + ")"
            ).fetchone()[0]
        assert sorted(ids) == sorted(f"k{i}" for i in range(len(rows)))
        assert created == len(rows) and unhandled == 0
        assert tuple(tickets) == (callers_missed, callers_missed) and opened == callers_missed
        assert unticketed == 0  # each missed call joined its customer's ticket

    await asyncio.to_thread(check)


_CLOCK_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")  # the clock's (UTC); CDR times are local


def _masked(text: str | None) -> str | None:
    """Stored text with the random ids and the clock's times taken out, byte for byte otherwise."""
    if text is None:
        return None
    return _CLOCK_TIME.sub("<now>", _ID.sub(lambda m: f"<{m.group(1) or m.group(2)}>", text))


def stored_text(db_path: Path) -> dict[str, Any]:
    """The rows as SQLite holds them (JSON texts as written, key order and spacing included), per customer
    address: its contact, conversation, messages (by call id), tickets and events in order."""
    db = sqlite3.connect(db_path)
    try:
        address_of = dict(db.execute("SELECT id, address FROM conversations"))
        per: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(list))
        contact_sql = "SELECT c.data FROM contacts c JOIN conversations v ON v.contact_id = c.id WHERE v.address = ?"
        for address, data in db.execute("SELECT address, data FROM conversations"):
            per[address]["conversation"] = _masked(data)
            per[address]["contact"] = _masked(db.execute(contact_sql, (address,)).fetchone()[0])
        rows = db.execute(
            "SELECT conversation_id, external_id, ticket_id, episode, handled, delivery, data FROM messages"
            " ORDER BY external_id"
        )
        for conversation_id, external_id, ticket_id, episode, handled, delivery, data in rows:
            per[address_of[conversation_id]]["messages"].append(
                (external_id, _masked(ticket_id), episode, handled, delivery, _masked(data))
            )
        for contact_id, data in db.execute("SELECT contact_id, data FROM tickets ORDER BY seq"):
            address = db.execute("SELECT address FROM conversations WHERE contact_id = ?", (contact_id,)).fetchone()
            per[address[0]]["tickets"].append(_masked(data))
        events = db.execute(
            "SELECT conversation_id, idempotency_key, type, ticket_id, occurred_at, data FROM events ORDER BY seq"
        )
        for conversation_id, key, kind, ticket_id, occurred_at, data in events:
            per[address_of[conversation_id]]["events"].append(
                (_masked(key), kind, _masked(ticket_id), _masked(occurred_at), _masked(data))
            )
        return {address: dict(entry) for address, entry in per.items()}
    finally:
        db.close()


@pytest.mark.parametrize("known", [False, True], ids=["new-callers", "a-caller-already-a-contact"])
async def test_bulk_import_writes_the_rows_and_events_row_by_row_intake_writes_byte_for_byte(
    tmp_path: Path, bot_setup: BotSetup, known: bool
) -> None:
    """The bulk paths encode a message once for its row and its message.created event, build it in its
    conversation, and open new callers' contacts and conversations in one insert each: the stored JSON texts (key
    order, spacing, escapes) are those of intake alone, for new and repeat callers, answered and missed calls (a
    ticket opened, then escalated), a withheld number, a row repeated in the file, and (``known``) a caller whose
    number a contact already has (the call lands on that contact)."""
    data = cdr_file()
    inbox = {"name": "tel", "channel": "phone", "cti_enabled": False}
    stored: list[dict[str, Any]] = []
    for name, run in (("one-by-one", import_row_by_row), ("batched", import_batched)):
        config = await asyncio.to_thread(make_config, tmp_path / name, inboxes=[inbox])
        if known:
            async with offline_gateway(config, bot_setup) as gateway:
                caller = Identity(IdentityKind.PHONE, "+8613800130003")
                await gateway.store.contact_for(caller, name="Known", now=datetime(2024, 3, 1, tzinfo=UTC))
        await run(config, bot_setup, data)
        await run(config, bot_setup, data)  # a re-import writes nothing
        (db_path,) = (tmp_path / name).rglob("*.sqlite3")
        stored.append(await asyncio.to_thread(stored_text, db_path))
    row_by_row, batched = stored
    assert batched == row_by_row, _diff(row_by_row, batched)[:8]
    messages = [m for entry in batched.values() for m in entry.get("messages", [])]
    assert len(messages) == 61 and all(m[3] == 1 for m in messages)  # every call stored once, handled
    assert sum(len(entry.get("tickets", [])) for entry in batched.values()) == 7
    assert ('"name":"Known"' in str(batched["phone:+8613800130003"]["contact"])) == known
    created = {e[4] for entry in batched.values() for e in entry["events"] if e[1] == "message.created"}
    for *_, row in messages:  # the event is the row without its raw copy, in the same compact form
        assert row is not None
        body = json.loads(row)
        assert json.dumps(body, ensure_ascii=False, separators=(",", ":")) == row
        del body["raw"]
        event = json.dumps({"message": body}, ensure_ascii=False, separators=(",", ":"))
        assert event in created


async def test_bulk_tickets_take_the_numbers_autoincrement_gives_never_a_deleted_ones(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    """The bulk path inserts each new ticket with its number known up front; like AUTOINCREMENT it numbers after
    the largest ever given (``sqlite_sequence``), so a ticket deleted since keeps its number to itself."""

    def missed(prefix: str, count: int) -> bytes:
        rows = [
            asterisk(uniqueid=f"{prefix}.{i}", src=f"13900{prefix}{i:04d}", clid="", answer="", billsec="0",
                     disposition="NO ANSWER", start=f"2024-03-01 09:{i:02d}:00", end=f"2024-03-01 09:{i:02d}:30")
            for i in range(count)
        ]  # fmt: skip
        return ("\n".join(rows) + "\n").encode()

    config = await asyncio.to_thread(
        make_config, tmp_path, inboxes=[{"name": "tel", "channel": "phone", "cti_enabled": False}]
    )
    first = await import_batched(config, bot_setup, missed("11", 3))
    assert first.in_bulk == 3
    path = tmp_path / "data" / "huiliu.sqlite3"

    def numbers() -> list[str]:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return [n for (n,) in db.execute("SELECT number FROM tickets ORDER BY seq")]

    def delete_last() -> None:
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("DELETE FROM tickets WHERE seq = (SELECT MAX(seq) FROM tickets)")

    assert await asyncio.to_thread(numbers) == ["HL-000001", "HL-000002", "HL-000003"]
    await asyncio.to_thread(delete_last)
    second = await import_batched(config, bot_setup, missed("22", 2))
    assert second.in_bulk == 2
    assert await asyncio.to_thread(numbers) == ["HL-000001", "HL-000002", "HL-000004", "HL-000005"]
