"""Embedded SQLite store: unique keys enforce idempotency, one writer thread keeps it off the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from core.bus import Bus
from core.codec import dumps, loads
from core.events import message_json, ticket_json
from core.evolve import evolve
from core.ids import ordered_hex
from core.model import (
    Admission,
    Channel,
    Checkpoint,
    Contact,
    Conversation,
    Delivery,
    DeliveryStatus,
    Direction,
    DownstreamEvent,
    EventType,
    Identity,
    Message,
    QuarantinedItem,
    Ticket,
    TicketStatus,
)
from core.store.contacts import merged_contact
from core.store.cursor import decode_cursor, encode_cursor
from core.store.sqlite.audit import AUDIT_SCHEMA, SqliteAuditLog
from core.store.sqlite.checkpoints import BACKSTOP_PAGES, Checkpointer
from core.store.sqlite.schema import SCHEMA, migrate
from core.store.sqlite.worker import SerialWorker
from core.store.types import (
    AdmissionRefused,
    Assignment,
    DeadLetter,
    DueTimer,
    FirstBuild,
    Frame,
    Gauges,
    Hits,
    LogLine,
    NotFound,
    Outgoing,
    StoredFrame,
    StoreError,
    TicketEvents,
    TicketLine,
    TicketLineStored,
    TicketPage,
    TicketQuery,
    TicketWrite,
    VersionConflict,
    fill_assignee,
    opened_conversation,
    ticket_timer,
)

T = TypeVar("T")


_ACTIVE = tuple(str(s) for s in TicketStatus if s.is_active)


def _rule_values(ticket: Ticket) -> tuple[Any, ...]:
    due = ticket.sla.earliest_due_at() if ticket.sla else None
    flag = ticket.sla.flag() if ticket.sla and ticket.status.is_active else ""
    return (ticket.queue, ticket.category, ticket.assignee, _micros(due) if due else None, flag)


def _set_ticket_timer(db: sqlite3.Connection, ticket: Ticket) -> None:
    at = ticket.sla.next_check_at() if ticket.sla is not None and ticket.status.is_active else None
    _set_timer(db, ticket_timer(ticket.id), at)


def _set_timer(db: sqlite3.Connection, key: str, at: datetime | None) -> None:
    if at is None:
        db.execute("DELETE FROM timers WHERE key = ?", (key,))
    else:
        db.execute(
            "INSERT INTO timers (key, due) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET due = excluded.due",
            (key, at.timestamp()),
        )


def _pick_agent(db: sqlite3.Connection, assign: Assignment) -> str | None:
    if not assign.agents:
        return None
    if assign.mode == "least_open":
        marks = ",".join("?" * len(_ACTIVE))
        counts = dict(
            db.execute(
                f"SELECT assignee, COUNT(*) FROM tickets WHERE queue = ? AND status IN ({marks}) GROUP BY assignee",
                (assign.queue, *_ACTIVE),
            ).fetchall()
        )
        return min(assign.agents, key=lambda a: (counts.get(a, 0), assign.agents.index(a)))
    (turn,) = db.execute(
        "INSERT INTO queue_turns (queue, turn) VALUES (?, 1) ON CONFLICT (queue) DO UPDATE SET turn = turn + 1"
        " RETURNING turn",
        (assign.queue,),
    ).fetchone()
    return assign.agents[(int(turn) - 1) % len(assign.agents)]


def _set_checkpoint(db: sqlite3.Connection, key: str, value: str, ttl_s: float | None) -> None:
    expires_at = time.time() + ttl_s if ttl_s is not None else None
    db.execute(
        "INSERT INTO checkpoints (key, value, expires_at) VALUES (?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
        (key, value, expires_at),
    )


_IN_LIST = 500  # values per ``IN (...)``: well under SQLite's limit of bound parameters


def _micros(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def _tickets_of(db: sqlite3.Connection, contact_id: str) -> list[Ticket]:
    sql = "SELECT data FROM tickets WHERE contact_id = ? ORDER BY seq"
    return [loads(Ticket, d) for (d,) in db.execute(sql, (contact_id,))]


class _TicketNumbers:
    """The ``seq`` (and so the number) of each ticket a bulk write opens, known before its insert: what SQLite
    gives the next row (one above the largest ever given, kept in ``sqlite_sequence`` for an AUTOINCREMENT table,
    or above the largest there is), read once per write, which holds the database's write lock (nobody else
    inserts meanwhile)."""

    _NEXT = (
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'tickets'), 0),"
        " COALESCE((SELECT MAX(seq) FROM tickets), 0)) + 1"
    )

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._next: int | None = None

    def take(self) -> int:
        if self._next is None:
            self._next = int(self._db.execute(self._NEXT).fetchone()[0])
        seq, self._next = self._next, self._next + 1
        return seq


class _Reads:
    """``LineReads`` on the write transaction's connection: what intake alone would read, as the earlier lines
    of the same write left it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def tickets_of(self, contact_id: str) -> list[Ticket]:
        return _tickets_of(self._db, contact_id)

    def transcript(self, conversation: Conversation) -> list[Message]:
        sql = f"SELECT {SqliteStore._MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND episode = ?"
        rows = self._db.execute(sql + " ORDER BY seq", (conversation.id, conversation.episode))
        return [SqliteStore._load_message(*row) for row in rows]

    def ticket(self, ticket_id: str) -> Ticket | None:
        row = self._db.execute("SELECT data FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
        return loads(Ticket, row[0]) if row else None


class SqliteStore(SqliteAuditLog):
    replies_in_first_write = True  # one job, one transaction: the message and its reply both, or neither

    def __init__(self, path: Path, *, bus: Bus | None = None) -> None:
        """``bus``: the messages between processes that share this file (``core.bus``); None for one process."""
        self._path = path
        self.bus = bus
        self._worker = SerialWorker("huiliu-sqlite", batch=self._group_commit)
        self._close_after_batch = False
        self._open = False
        self._depth = 0  # nested ``_tx`` of the running job (only the store thread touches it)
        self._lock_fd = -1  # the file lock of ``_writer``, opened with the connection
        self._checkpointer: Checkpointer | None = None  # WAL checkpoints off the store thread, while open

    # plumbing -------------------------------------------------------------
    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._open:
            raise StoreError("store is not open")
        return await self._worker.submit(fn)

    @contextmanager
    def _tx(self, db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """A job's transaction; inside a batch, a savepoint of the batch's one transaction; inside another
        ``_tx`` of the same job (a claim or a message written as part of a bigger write), nothing more: the outer
        one takes it all back if anything raises, and no code here catches a failure and goes on writing.
        (A savepoint and its release are two statements: nested ones were a quarter of a push's statements.)"""
        if self._depth:
            self._depth += 1
            try:
                yield db
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            if db.in_transaction:
                db.execute("SAVEPOINT job")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK TO job")
                    db.execute("RELEASE job")
                    raise
                db.execute("RELEASE job")
                return
            with self._writer():
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
        finally:
            self._depth = 0

    @contextmanager
    def _writer(self) -> Iterator[None]:
        """The file's write turn, taken before BEGIN IMMEDIATE by every SqliteStore on the file (``--workers N``
        processes, a CLI command next to a running gateway).

        SQLite lets one writer in at a time, and one that finds the file locked sleeps in its busy handler
        (1, 2, 5, 10 ... 100 ms) and polls again, so two busy workers spent their time asleep: two served fewer
        pushes than one. A writer waiting on ``flock`` is woken by the kernel the moment the other lets go.
        The busy timeout stays behind it for writers that do not take this lock."""
        fd = self._lock_fd
        if fd < 0:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks in the kernel, the GIL released
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _group_commit(self, db: sqlite3.Connection, run_all: Callable[[], None]) -> None:
        """Jobs queued together share one transaction: one commit (one WAL append) instead of one each.
        Nobody hears of success before the commit, so "stored" still means stored."""
        with self._writer():
            db.execute("BEGIN IMMEDIATE")
            try:
                run_all()
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        if self._close_after_batch:
            self._close_now(db)

    def _close(self, db: sqlite3.Connection) -> None:
        if db.in_transaction:  # queued together with other jobs: close once their batch commits
            self._close_after_batch = True
        else:
            self._close_now(db)

    def _close_now(self, db: sqlite3.Connection) -> None:
        db.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("PRAGMA foreign_keys=ON")
            # 32 MiB of page cache (the default is 2 MiB): a bulk write (2,000 CDR rows, ~6 MB with their events and
            # the indexes they touch) spilled pages to the WAL mid-transaction and read them back, a
            # third of the store thread's CPU in system calls on an import (56 -> 35 us per row).
            db.execute("PRAGMA cache_size=-32768")
            # Savepoints (one per job of a group commit) keep the pages they change in a sub-journal, which
            # SQLite spills to a temporary file past 64 KiB: two pwrite64 calls per page, and a file opened
            # and unlinked per batch (~28 of a push's 75 pwrite64 calls). In memory it is a copy.
            db.execute("PRAGMA temp_store=MEMORY")
            # Checkpoints run on a thread of their own (``checkpoints.Checkpointer``); the writer's own is a backstop.
            db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            self._lock_fd = os.open(f"{self._path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
            db.executescript(SCHEMA)
            db.executescript(AUDIT_SCHEMA)
            migrate(db)
            return db

        await self._worker.start(connect)
        self._checkpointer = Checkpointer(self._path)
        self._checkpointer.start()
        self._open = True

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self._worker.stop(self._close)
            checkpointer, self._checkpointer = self._checkpointer, None
            if checkpointer is not None:
                await asyncio.to_thread(checkpointer.stop)

    async def ping(self) -> bool:
        try:
            return await self._run(lambda db: db.execute("SELECT 1").fetchone() == (1,))
        except (StoreError, sqlite3.Error):
            return False

    async def durability(self) -> dict[str, str]:
        """WAL with synchronous=NORMAL: a commit survives a process crash; a power loss may undo the last ones."""
        return {
            "backend": "sqlite",
            "journal": "wal",
            "synchronous": "normal",
            "acknowledged_after": "commit",
            "survives": "a process crash; a power loss may lose the last commits",
        }

    # contacts ---------------------------------------------------------------
    _CONTACT_BY_IDENTITY = "SELECT c.data FROM identities i JOIN contacts c ON c.id = i.contact_id WHERE i.identity = ?"

    def _owner(self, db: sqlite3.Connection, identity: Identity) -> Contact | None:
        row = db.execute(self._CONTACT_BY_IDENTITY, (str(identity),)).fetchone()
        return loads(Contact, row[0]) if row else None

    def _contact(
        self,
        db: sqlite3.Connection,
        identity: Identity,
        name: str | None,
        now: datetime,
        aliases: Sequence[Identity] = (),
    ) -> Contact:
        """Inside a write transaction: the contact of the identity or of an alias, created if there is none (in
        one insert, with its identities: a CDR import creates thousands)."""
        contact = self._owner(db, identity)
        unowned = identity if contact is None else None  # just read: nobody has it
        if contact is None:
            contact = next((c for alias in aliases if (c := self._owner(db, alias)) is not None), None)
        new = contact is None
        if contact is None:
            contact = Contact(id=f"ct_{ordered_hex()}", name=name, identities=(), created_at=now)
        identities, flags = list(contact.identities), list(contact.flags)
        owned: list[Identity] = []
        for each in (identity, *aliases):
            if each in identities:
                continue
            if each != unowned and self._owner(db, each) is not None:
                if f"ambiguous:{each}" not in flags:
                    flags.append(f"ambiguous:{each}")  # another contact has it: flag, never merge on our own
                continue
            owned.append(each)
            identities.append(each)
        updated = dataclasses.replace(contact, identities=tuple(identities), flags=tuple(flags))
        if new:
            db.execute("INSERT INTO contacts (id, data) VALUES (?, ?)", (contact.id, dumps(updated)))
        elif updated != contact:
            db.execute("UPDATE contacts SET data = ? WHERE id = ?", (dumps(updated), contact.id))
        for each in owned:  # after the contact they refer to
            db.execute("INSERT INTO identities (identity, contact_id) VALUES (?, ?)", (str(each), contact.id))
        return updated

    async def contact_for(self, identity: Identity, *, name: str | None, now: datetime) -> Contact:
        def run(db: sqlite3.Connection) -> Contact:
            found = self._owner(db, identity)
            if found is not None:
                return found
            with self._tx(db):
                return self._contact(db, identity, name, now)

        return await self._run(run)

    async def get_contact(self, contact_id: str) -> Contact | None:
        def run(db: sqlite3.Connection) -> Contact | None:
            row = db.execute("SELECT data FROM contacts WHERE id = ?", (contact_id,)).fetchone()
            return loads(Contact, row[0]) if row else None

        return await self._run(run)

    async def save_contact(self, contact: Contact, *, expected_version: int | None = None) -> Contact:
        def run(db: sqlite3.Connection) -> Contact:
            with self._tx(db):
                row = db.execute("SELECT data FROM contacts WHERE id = ?", (contact.id,)).fetchone()
                if row is None:
                    raise NotFound(f"contact {contact.id} does not exist")
                stored = loads(Contact, row[0])
                if expected_version is not None and stored.version != expected_version:
                    raise VersionConflict(f"contact {contact.id} changed since version {expected_version}")
                kept = dataclasses.replace(contact, identities=stored.identities, version=stored.version + 1)
                db.execute("UPDATE contacts SET data = ? WHERE id = ?", (dumps(kept), contact.id))
                return kept

        return await self._run(run)

    async def contact_by_identity(self, identity: Identity) -> Contact | None:
        return await self._run(lambda db: self._owner(db, identity))

    async def tickets_of(self, contact_id: str) -> list[Ticket]:
        return await self._run(lambda db: _tickets_of(db, contact_id))

    async def merge_contacts(self, source_id: str, into_id: str, *, events: Sequence[DownstreamEvent] = ()) -> Contact:
        def load(db: sqlite3.Connection, contact_id: str) -> Contact:
            row = db.execute("SELECT data FROM contacts WHERE id = ?", (contact_id,)).fetchone()
            if row is None:
                raise NotFound(f"contact {contact_id} does not exist")
            return loads(Contact, row[0])

        def run(db: sqlite3.Connection) -> Contact:
            with self._tx(db):
                source, into = load(db, source_id), load(db, into_id)
                merged = merged_contact(source, into)
                db.execute("UPDATE identities SET contact_id = ? WHERE contact_id = ?", (into_id, source_id))
                moved_rows = db.execute("SELECT data FROM conversations WHERE contact_id = ?", (source_id,)).fetchall()
                for (data,) in moved_rows:
                    moved = loads(Conversation, data)
                    moved = dataclasses.replace(moved, contact_id=into_id, version=moved.version + 1)
                    db.execute(
                        "UPDATE conversations SET contact_id = ?, version = ?, data = ? WHERE id = ?",
                        (into_id, moved.version, dumps(moved), moved.id),
                    )
                for (data,) in db.execute("SELECT data FROM tickets WHERE contact_id = ?", (source_id,)).fetchall():
                    ticket = loads(Ticket, data)
                    ticket = dataclasses.replace(ticket, contact_id=into_id, version=ticket.version + 1)
                    db.execute(
                        "UPDATE tickets SET contact_id = ?, version = ?, data = ? WHERE id = ?",
                        (into_id, ticket.version, dumps(ticket), ticket.id),
                    )
                pointer = dataclasses.replace(source, identities=(), merged_into=into_id, version=source.version + 1)
                db.execute("UPDATE contacts SET data = ? WHERE id = ?", (dumps(pointer), source_id))
                db.execute("UPDATE contacts SET data = ? WHERE id = ?", (dumps(merged), into_id))
                self._append_events(db, events)
                return merged

        return await self._run(run)

    async def add_identity(self, contact_id: str, identity: Identity) -> bool:
        """Test support, outside the Store protocol: link a verified identity to a contact; False (and nothing
        changed) if another contact owns it. The gateway links identities only through conversation_for."""

        def run(db: sqlite3.Connection) -> bool:
            with self._tx(db):
                row = db.execute("SELECT data FROM contacts WHERE id = ?", (contact_id,)).fetchone()
                if row is None:
                    raise NotFound(f"contact {contact_id} does not exist")
                owner = self._owner(db, identity)
                if owner is not None:
                    return owner.id == contact_id
                contact = loads(Contact, row[0])
                db.execute("INSERT INTO identities (identity, contact_id) VALUES (?, ?)", (str(identity), contact_id))
                grown = dataclasses.replace(contact, identities=(*contact.identities, identity))
                db.execute("UPDATE contacts SET data = ? WHERE id = ?", (dumps(grown), contact_id))
                return True

        return await self._run(run)

    # conversations ----------------------------------------------------------
    async def conversation_for(
        self,
        address: Identity,
        *,
        channel: Channel,
        inbox: str,
        name: str | None,
        now: datetime,
        thread: str = "",
        aliases: Sequence[Identity] = (),
        admit: Admission | None = None,
    ) -> Conversation:
        def run(db: sqlite3.Connection) -> Conversation:
            # The claim rides on the conversation's read: one store job for a WeChat push's nonce and its
            # conversation, where two cost a second hand-off to this thread and back (and a second commit).
            if admit is not None and not self._lease(db, admit.key, admit.holder, admit.ttl_s):
                raise AdmissionRefused(f"{admit.key} is held for another holder")
            return self._conversation(db, address, channel, inbox, name, now, thread, tuple(aliases))

        return await self._run(run)

    async def receive_first(
        self,
        address: Identity,
        *,
        channel: Channel,
        inbox: str,
        name: str | None,
        now: datetime,
        build: FirstBuild,
        thread: str = "",
        aliases: Sequence[Identity] = (),
        admit: Admission | None = None,
    ) -> tuple[Conversation, tuple[Message, bool] | None]:
        def run(db: sqlite3.Connection) -> tuple[Conversation, tuple[Message, bool] | None]:
            with self._tx(db):  # all or nothing: a refused claim or a failing build leaves no trace
                if admit is not None and not self._lease(db, admit.key, admit.holder, admit.ttl_s):
                    raise AdmissionRefused(f"{admit.key} is held for another holder")
                conversation = self._conversation(db, address, channel, inbox, name, now, thread, tuple(aliases))
                write = build(conversation)
                if write is None:
                    return conversation, None
                reply = write.reply
                stored = self._add_message(
                    db,
                    write.message,
                    write.events,
                    handled=write.handled or reply is not None,
                    checkpoints=write.checkpoints,
                )
                if reply is not None and stored[1]:  # a repeat delivery was answered when it was new
                    _, seq = self._add_delivered(
                        db,
                        reply.message,
                        reply.events,
                        delivered=reply.delivered,
                        frame=reply.frame,
                        saving=reply.saving,
                    )
                    if seq is not None and reply.numbered is not None:
                        reply.numbered(seq)
                return conversation, stored

        return await self._run(run)

    def _conversation(
        self,
        db: sqlite3.Connection,
        address: Identity,
        channel: Channel,
        inbox: str,
        name: str | None,
        now: datetime,
        thread: str,
        aliases: tuple[Identity, ...],
    ) -> Conversation:
        key = (inbox, str(address), thread)
        sql = "SELECT data FROM conversations WHERE inbox = ? AND address = ? AND thread = ?"
        row = db.execute(sql, key).fetchone()
        if row is None:
            with self._tx(db):
                contact = self._contact(db, address, name, now, aliases)
                fresh = opened_conversation(f"cv_{ordered_hex()}", contact.id, channel, inbox, address, thread, now)
                cur = db.execute(
                    _INSERT_CONVERSATION + " ON CONFLICT (inbox, address, thread) DO NOTHING",
                    (fresh.id, *key, contact.id, dumps(fresh)),
                )
            if cur.rowcount == 1:  # ours, as written: no read back
                return fresh
            row = db.execute(sql, key).fetchone()  # another process opened it first
        return loads(Conversation, row[0])

    @staticmethod
    def _stored_conversations(
        db: sqlite3.Connection, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], Conversation]:
        """The stored conversations of ``keys`` (inbox, address, thread), one read per ``_IN_LIST`` addresses of an
        inbox: a bulk write's lines read them up front instead of one statement each."""
        found: dict[tuple[str, str, str], Conversation] = {}
        wanted = set(keys)
        by_inbox: dict[str, list[str]] = {}
        for inbox, address, _ in wanted:
            by_inbox.setdefault(inbox, []).append(address)
        for inbox, addresses in by_inbox.items():
            unique = list(dict.fromkeys(addresses))
            for start in range(0, len(unique), _IN_LIST):
                part = unique[start : start + _IN_LIST]
                sql = (
                    "SELECT address, thread, data FROM conversations"
                    f" WHERE inbox = ? AND address IN ({', '.join('?' * len(part))})"
                )
                for address, thread, data in db.execute(sql, (inbox, *part)):
                    if (key := (inbox, address, thread)) in wanted:
                        found[key] = loads(Conversation, data)
        return found

    @staticmethod
    def _open_new(
        db: sqlite3.Connection,
        lines: Sequence[LogLine | TicketLine],
        keys: Sequence[tuple[str, str, str]],
        stored: dict[tuple[str, str, str], Conversation],
    ) -> None:
        """Inside a write transaction: open, with a contact each, the conversations of ``keys`` that are not
        ``stored`` and whose address nobody owns (new callers), three inserts for all of them, and add them to
        ``stored``; each is what ``_conversation`` would open for its key's first line. A line with aliases, or
        an address another contact owns, is left to ``_conversation``."""
        first: dict[tuple[str, str, str], LogLine | TicketLine] = {}
        for line, key in zip(lines, keys, strict=True):
            if key not in stored and key not in first and not line.aliases:
                first[key] = line
        if not first:
            return
        addresses = list({key[1] for key in first})
        owned: set[str] = set()
        for start in range(0, len(addresses), _IN_LIST):
            part = addresses[start : start + _IN_LIST]
            sql = f"SELECT identity FROM identities WHERE identity IN ({', '.join('?' * len(part))})"
            owned.update(identity for (identity,) in db.execute(sql, part))
        contacts: list[tuple[str, str]] = []
        identities: list[tuple[str, str]] = []
        opened: list[tuple[Any, ...]] = []
        for key, line in first.items():
            if key[1] in owned:
                continue
            owned.add(key[1])  # a second thread of the same address joins this contact, as _contact would
            contact = Contact(id=f"ct_{ordered_hex()}", name=line.name, identities=(line.address,), created_at=line.now)
            conversation = opened_conversation(
                f"cv_{ordered_hex()}", contact.id, line.channel, line.inbox, line.address, line.thread, line.now
            )
            contacts.append((contact.id, dumps(contact)))
            identities.append((key[1], contact.id))
            opened.append((conversation.id, *key, contact.id, dumps(conversation)))
            stored[key] = conversation
        db.executemany("INSERT INTO contacts (id, data) VALUES (?, ?)", contacts)
        db.executemany("INSERT INTO identities (identity, contact_id) VALUES (?, ?)", identities)  # after contacts
        db.executemany(_INSERT_CONVERSATION, opened)

    async def find_conversation(self, inbox: str, address: Identity, thread: str = "") -> Conversation | None:
        def run(db: sqlite3.Connection) -> Conversation | None:
            row = db.execute(
                "SELECT data FROM conversations WHERE inbox = ? AND address = ? AND thread = ?",
                (inbox, str(address), thread),
            ).fetchone()
            return loads(Conversation, row[0]) if row else None

        return await self._run(run)

    async def conversations_of(self, contact_id: str) -> list[Conversation]:
        sql = "SELECT data FROM conversations WHERE contact_id = ? ORDER BY rowid"
        return await self._run(lambda db: [loads(Conversation, d) for (d,) in db.execute(sql, (contact_id,))])

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        def run(db: sqlite3.Connection) -> Conversation | None:
            row = db.execute("SELECT data FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            return loads(Conversation, row[0]) if row else None

        return await self._run(run)

    @staticmethod
    def _save_conversation(db: sqlite3.Connection, conversation: Conversation, **changes: Any) -> Conversation:
        """``conversation`` with ``changes`` (a new ticket's id: one copy, not two) saved as its next version."""
        saved = evolve(conversation, version=conversation.version + 1, **changes)
        cur = db.execute(
            "UPDATE conversations SET version = ?, data = ? WHERE id = ? AND version = ?",
            (saved.version, dumps(saved), conversation.id, conversation.version),
        )
        if cur.rowcount != 1:
            raise VersionConflict(f"conversation {conversation.id} changed since version {conversation.version}")
        return saved

    async def save_conversation(
        self, conversation: Conversation, events: Sequence[DownstreamEvent] = ()
    ) -> Conversation:
        def run(db: sqlite3.Connection) -> Conversation:
            with self._tx(db):
                saved = self._save_conversation(db, conversation)
                self._append_events(db, events)
                return saved

        return await self._run(run)

    # messages -----------------------------------------------------------------
    _MESSAGE_COLUMNS = "data, ticket_id, delivery, delivery_error"

    @staticmethod
    def _load_message(data: str, ticket_id: str | None, delivery: str | None, error: str | None) -> Message:
        message = loads(Message, data)
        status = DeliveryStatus(delivery) if delivery else None
        if message.ticket_id == ticket_id and message.delivery is status and message.delivery_error == error:
            return message  # the columns say what the JSON says: no copy (a transcript read makes one per message)
        return dataclasses.replace(message, ticket_id=ticket_id, delivery=status, delivery_error=error)

    async def add_message(
        self,
        message: Message,
        events: Sequence[DownstreamEvent] = (),
        *,
        answers: str | None = None,
        saving: Conversation | None = None,
        outgoing: Outgoing | None = None,
        handled: bool = False,
        checkpoints: Sequence[Checkpoint] = (),
        delivered: Delivery | None = None,
    ) -> tuple[Message, bool]:
        return await self._run(
            lambda db: self._add_message(
                db,
                message,
                events,
                answers=answers,
                saving=saving,
                outgoing=outgoing,
                handled=handled,
                checkpoints=checkpoints,
                delivered=delivered,
            )
        )

    def _add_message(
        self,
        db: sqlite3.Connection,
        message: Message,
        events: Sequence[DownstreamEvent],
        *,
        answers: str | None = None,
        saving: Conversation | None = None,
        outgoing: Outgoing | None = None,
        handled: bool = False,
        checkpoints: Sequence[Checkpoint] = (),
        delivered: Delivery | None = None,
    ) -> tuple[Message, bool]:
        with self._tx(db):
            if answers is not None:
                db.execute("UPDATE messages SET handled = 1 WHERE id = ?", (answers,))
            if delivered is None:
                cur = db.execute(_INSERT_MESSAGE + _NEW_ONLY, _message_row(message, handled=handled))
            else:  # with its delivery, in the insert (an UPDATE after it was a statement a reply)
                row = (*_message_row(message, handled=handled), delivered.status, delivered.reason or delivered.error)
                cur = db.execute(_INSERT_DELIVERED_MESSAGE, row)
            if cur.rowcount == 1:
                if saving is not None:  # a conflict raises, and the transaction takes the message back
                    self._save_conversation(db, saving)
                if outgoing is not None:
                    db.execute(
                        "INSERT INTO outbox (message_id, in_reply_to, due) VALUES (?, ?, ?)",
                        (message.id, outgoing.in_reply_to, time.time() + outgoing.hold_s),
                    )
                for checkpoint in checkpoints:
                    _set_checkpoint(db, checkpoint.key, checkpoint.value, checkpoint.ttl_s)
                self._append_events(db, events)
                return message, True
        row = db.execute(
            f"SELECT {self._MESSAGE_COLUMNS} FROM messages WHERE channel = ? AND inbox = ? AND direction = ?"
            " AND external_id = ?",
            (message.channel, message.inbox, message.direction, message.external_id),
        ).fetchone()
        return self._load_message(*row), False

    async def add_log_lines(self, lines: Sequence[LogLine]) -> list[tuple[Message, bool] | None]:
        """One transaction: each address's conversation read (or opened) once, the lines' earlier copies found
        with one read per ``_IN_LIST`` of them, then every new message and its events in one ``executemany``."""

        def run(db: sqlite3.Connection) -> list[tuple[Message, bool] | None]:
            results: list[tuple[Message, bool] | None] = [None] * len(lines)
            with self._tx(db):
                conversations: dict[tuple[str, str, str], Conversation | None] = {}  # None: stopped
                keys = [(line.inbox, str(line.address), line.thread) for line in lines]
                stored = self._stored_conversations(db, keys)  # log lines change no conversation: read once
                self._open_new(db, lines, keys, stored)
                built: list[tuple[int, Message, Sequence[DownstreamEvent]]] = []
                for i, (line, key) in enumerate(zip(lines, keys, strict=True)):
                    if key not in conversations:
                        conversations[key] = stored.get(key) or self._conversation(
                            db, line.address, line.channel, line.inbox, line.name, line.now, line.thread, line.aliases
                        )
                    conversation = conversations[key]
                    made = line.build(conversation) if conversation is not None else None
                    if made is None:
                        conversations[key] = None  # this line and the address's later ones go to intake alone
                        continue
                    built.append((i, *made))
                earlier = self._stored_messages(db, [m for _, m, _ in built])
                rows: list[tuple[Any, ...]] = []
                appended: list[DownstreamEvent] = []
                for i, message, message_events in built:
                    unique = (message.channel, message.inbox, message.direction, message.external_id)
                    if message.external_id is not None:
                        if unique in earlier:
                            results[i] = (earlier[unique], False)
                            continue
                        earlier[unique] = message  # the same call twice in one file: the second is a duplicate
                    results[i] = (message, True)
                    rows.append(_message_row(message, handled=True))
                    appended.extend(message_events)
                db.executemany(_INSERT_MESSAGE, rows)
                self._append_events(db, appended)
            return results

        return await self._run(run) if lines else []

    async def add_ticket_lines(self, lines: Sequence[TicketLine]) -> list[TicketLineStored | None]:
        """One transaction; each line as intake alone: its conversation, ``build``'s decision, the message, then
        its ticket write, with the statements ``conversation_for``, ``add_message``, ``create_ticket`` and
        ``update_ticket`` make, in that order (so the same ticket numbers, versions and events)."""

        def run(db: sqlite3.Connection) -> list[TicketLineStored | None]:
            results: list[TicketLineStored | None] = [None] * len(lines)
            reads = _Reads(db)
            numbers = _TicketNumbers(db)
            stopped: set[tuple[str, str, str]] = set()
            appended: list[DownstreamEvent] = []  # the lines' events, in order, in one insert
            with self._tx(db):
                keys = [(line.inbox, str(line.address), line.thread) for line in lines]
                # Read up front, each taken by its key's first line only: a line's ticket write changes its
                # conversation, so a later line of the same key reads it again.
                stored = self._stored_conversations(db, keys)
                self._open_new(db, lines, keys, stored)
                for i, (line, key) in enumerate(zip(lines, keys, strict=True)):
                    if key in stopped:
                        continue
                    conversation = stored.pop(key, None) or self._conversation(
                        db, line.address, line.channel, line.inbox, line.name, line.now, line.thread, line.aliases
                    )
                    write = line.build(conversation, reads)
                    if write is None:
                        stopped.add(key)  # this line and the address's later ones go to intake alone
                        continue
                    results[i] = self._ticket_line(db, write, appended, numbers)
                self._append_events(db, appended)
            return results

        return await self._run(run) if lines else []

    def _ticket_line(
        self, db: sqlite3.Connection, write: TicketWrite, appended: list[DownstreamEvent], numbers: _TicketNumbers
    ) -> TicketLineStored:
        message = write.message
        cur = db.execute(
            _INSERT_MESSAGE + _NEW_ONLY,
            _message_row(message, handled=True),
        )
        if cur.rowcount != 1:
            row = db.execute(
                f"SELECT {self._MESSAGE_COLUMNS} FROM messages WHERE channel = ? AND inbox = ? AND direction = ?"
                " AND external_id = ?",
                (message.channel, message.inbox, message.direction, message.external_id),
            ).fetchone()
            return TicketLineStored(message=self._load_message(*row), created=False)
        appended.extend(write.events)
        opened = None
        if write.opened is not None:
            ticket, conversation, events = write.opened
            opened = self._create_ticket(db, ticket, conversation, events, None, appended, numbers)
        elif write.changed is not None:
            self._update_ticket(db, *write.changed, None, appended)
        return TicketLineStored(message=message, created=True, opened=opened)

    def _stored_messages(
        self, db: sqlite3.Connection, messages: Sequence[Message]
    ) -> dict[tuple[Channel, str, Direction, str | None], Message]:
        """The stored messages with the unique keys of ``messages`` (which share channel, inbox and direction
        when they come from one import; any mix is read correctly, one query per distinct triple)."""
        found: dict[tuple[Channel, str, Direction, str | None], Message] = {}
        groups: dict[tuple[Channel, str, Direction], list[str]] = {}
        for m in messages:
            if m.external_id is not None:
                groups.setdefault((m.channel, m.inbox, m.direction), []).append(m.external_id)
        for (channel, inbox, direction), ids in groups.items():
            for start in range(0, len(ids), _IN_LIST):
                part = ids[start : start + _IN_LIST]
                sql = (
                    f"SELECT external_id, {self._MESSAGE_COLUMNS} FROM messages WHERE channel = ? AND inbox = ?"
                    f" AND direction = ? AND external_id IN ({', '.join('?' * len(part))})"
                )
                for external_id, *row in db.execute(sql, (channel, inbox, direction, *part)):
                    found[(channel, inbox, direction, external_id)] = self._load_message(*row)
        return found

    async def get_message(self, message_id: str) -> Message | None:
        def run(db: sqlite3.Connection) -> Message | None:
            row = db.execute(f"SELECT {self._MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
            return self._load_message(*row) if row else None

        return await self._run(run)

    async def find_message(
        self, *, channel: Channel, inbox: str, direction: Direction, external_id: str
    ) -> Message | None:
        def run(db: sqlite3.Connection) -> Message | None:
            row = db.execute(
                f"SELECT {self._MESSAGE_COLUMNS} FROM messages WHERE channel = ? AND inbox = ? AND direction = ?"
                " AND external_id = ?",
                (channel, inbox, direction, external_id),
            ).fetchone()
            return self._load_message(*row) if row else None

        return await self._run(run)

    async def stored_external_ids(
        self, *, channel: Channel, inbox: str, direction: Direction, external_ids: Sequence[str]
    ) -> set[str]:
        def run(db: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(external_ids), _IN_LIST):
                part = external_ids[start : start + _IN_LIST]
                sql = (
                    "SELECT external_id FROM messages WHERE channel = ? AND inbox = ? AND direction = ?"
                    f" AND external_id IN ({', '.join('?' * len(part))})"
                )
                found.update(e for (e,) in db.execute(sql, (channel, inbox, direction, *part)))
            return found

        return await self._run(run) if external_ids else set()

    async def record_delivery(
        self, message_id: str, delivery: Delivery, events: Sequence[DownstreamEvent] = ()
    ) -> None:
        def run(db: sqlite3.Connection) -> None:
            with self._tx(db):
                db.execute(
                    "UPDATE messages SET delivery = ?, delivery_error = ? WHERE id = ?",
                    (delivery.status, delivery.reason or delivery.error, message_id),
                )
                if delivery.status is not DeliveryStatus.RETRYABLE:
                    db.execute("DELETE FROM outbox WHERE message_id = ?", (message_id,))
                self._append_events(db, events)

        await self._run(run)

    async def requeue(self, message_id: str, in_reply_to: str | None, hold_s: float) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO outbox (message_id, in_reply_to, due) VALUES (?, ?, ?)"
                " ON CONFLICT (message_id) DO UPDATE SET due = excluded.due, in_reply_to = excluded.in_reply_to",
                (message_id, in_reply_to, time.time() + hold_s),
            )

        await self._run(run)

    async def hold_outgoing(self, message_id: str, hold_s: float) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute("UPDATE outbox SET due = ? WHERE message_id = ?", (time.time() + hold_s, message_id))

        await self._run(run)

    async def take_outgoing(self, hold_s: float, limit: int = 100) -> list[tuple[Message, str | None]]:
        def run(db: sqlite3.Connection) -> list[tuple[Message, str | None]]:
            now = time.time()
            with self._tx(db):
                rows = db.execute(
                    "SELECT m.data, m.ticket_id, m.delivery, m.delivery_error, o.in_reply_to, o.message_id"
                    " FROM outbox o JOIN messages m ON m.id = o.message_id WHERE o.due <= ? ORDER BY o.due LIMIT ?",
                    (now, limit),
                ).fetchall()
                db.executemany("UPDATE outbox SET due = ? WHERE message_id = ?", [(now + hold_s, r[5]) for r in rows])
            return [(self._load_message(*row[:4]), row[4]) for row in rows]

        return await self._run(run)

    async def messages(
        self, conversation_id: str, *, ticket_id: str | None = None, episode: int | None = None
    ) -> list[Message]:
        sql = f"SELECT {self._MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?"
        args: list[Any] = [conversation_id]
        if ticket_id is not None:
            sql += " AND ticket_id = ?"
            args.append(ticket_id)
        if episode is not None:
            sql += " AND episode = ?"
            args.append(episode)
        sql += " ORDER BY seq"
        return await self._run(lambda db: [self._load_message(*row) for row in db.execute(sql, args)])

    async def mark_handled(self, message_id: str) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute("UPDATE messages SET handled = 1 WHERE id = ?", (message_id,))

        await self._run(run)

    async def unhandled_messages(self) -> list[Message]:
        sql = f"SELECT {self._MESSAGE_COLUMNS} FROM messages WHERE handled = 0 ORDER BY seq"
        return await self._run(lambda db: [self._load_message(*row) for row in db.execute(sql)])

    # tickets ------------------------------------------------------------------
    async def create_ticket(
        self,
        ticket: Ticket,
        conversation: Conversation,
        events: TicketEvents,
        *,
        assign: Assignment | None = None,
    ) -> tuple[Ticket, Conversation]:
        def run(db: sqlite3.Connection) -> tuple[Ticket, Conversation]:
            with self._tx(db):
                return self._create_ticket(db, ticket, conversation, events, assign)

        return await self._run(run)

    def _create_ticket(
        self,
        db: sqlite3.Connection,
        ticket: Ticket,
        conversation: Conversation,
        events: TicketEvents,
        assign: Assignment | None,
        appended: list[DownstreamEvent] | None = None,
        numbers: _TicketNumbers | None = None,
    ) -> tuple[Ticket, Conversation]:
        """Inside a write transaction: ``create_ticket``'s writes (``add_ticket_lines`` makes the same, its events
        gathered in ``appended`` for one insert at the end, and its tickets' numbers known before their insert
        from ``numbers``, one statement each where a placeholder row was inserted and then updated).

        The events are made before the ticket's row, which takes the text its ticket.created event made of it
        (``events.ticket_json``): one encoding of the ticket where there were three."""
        assigned = ticket
        if assign is not None and ticket.assignee is None:
            assigned = dataclasses.replace(ticket, assignee=_pick_agent(db, assign))
        seq = numbers.take() if numbers is not None else None
        placeholder = seq is None
        if seq is None:  # its seq (and so its number) is what AUTOINCREMENT gives a NULL one
            seq = db.execute(_INSERT_TICKET, _ticket_row(None, f"pending-{ticket.id}", "", ticket, assigned)).lastrowid
        number = f"HL-{seq:06d}"
        numbered = evolve(assigned, number=number)
        saved = self._save_conversation(db, conversation, ticket_id=ticket.id)
        made = events(numbered, saved)
        data = ticket_json(numbered)
        if placeholder:
            db.execute("UPDATE tickets SET number = ?, data = ? WHERE id = ?", (number, data, ticket.id))
        else:  # the row AUTOINCREMENT would have given it, with its number and data at once
            db.execute(_INSERT_TICKET, _ticket_row(seq, number, data, ticket, assigned))
        db.execute(
            "UPDATE messages SET ticket_id = ? WHERE conversation_id = ? AND episode = ? AND ticket_id IS NULL",
            (ticket.id, conversation.id, conversation.episode),
        )
        if numbered.sla is not None:  # a new ticket without one has no timer to clear
            _set_ticket_timer(db, numbered)
        self._append_events(db, made, appended)
        return numbered, saved

    async def join_ticket(self, conversation: Conversation, events: Sequence[DownstreamEvent] = ()) -> Conversation:
        def run(db: sqlite3.Connection) -> Conversation:
            with self._tx(db):
                saved = self._save_conversation(db, conversation)
                db.execute(
                    "UPDATE messages SET ticket_id = ? WHERE conversation_id = ? AND episode = ? AND ticket_id IS NULL",
                    (conversation.ticket_id, conversation.id, conversation.episode),
                )
                self._append_events(db, events)
                return saved

        return await self._run(run)

    async def get_ticket(self, ticket_id_or_number: str) -> Ticket | None:
        def run(db: sqlite3.Connection) -> Ticket | None:
            row = db.execute(
                "SELECT data FROM tickets WHERE id = ? OR number = ?", (ticket_id_or_number, ticket_id_or_number)
            ).fetchone()
            return loads(Ticket, row[0]) if row else None

        return await self._run(run)

    async def update_ticket(
        self, ticket: Ticket, events: Sequence[DownstreamEvent] = (), *, assign: Assignment | None = None
    ) -> Ticket:
        def run(db: sqlite3.Connection) -> Ticket:
            with self._tx(db):
                return self._update_ticket(db, ticket, events, assign)

        return await self._run(run)

    def _update_ticket(
        self,
        db: sqlite3.Connection,
        ticket: Ticket,
        events: Sequence[DownstreamEvent],
        assign: Assignment | None,
        appended: list[DownstreamEvent] | None = None,
    ) -> Ticket:
        """Inside a write transaction: ``update_ticket``'s writes (``add_ticket_lines`` makes the same, its events
        gathered in ``appended``)."""
        saved = evolve(ticket, version=ticket.version + 1)
        written = events
        if assign is not None and ticket.assignee is None and assign.agents:
            saved = dataclasses.replace(saved, assignee=_pick_agent(db, assign))
            written = fill_assignee(events, saved.assignee or "")
        cur = db.execute(
            "UPDATE tickets SET status = ?, updated_us = ?, version = ?, data = ?,"
            " queue = ?, category = ?, assignee = ?, due_us = ?, sla_flag = ? WHERE id = ? AND version = ?",
            (
                saved.status,
                _micros(saved.updated_at),
                saved.version,
                ticket_json(saved),  # the ticket.updated event's encoding of it, when it names this ticket
                *_rule_values(saved),
                ticket.id,
                ticket.version,
            ),
        )
        if cur.rowcount != 1:
            if db.execute("SELECT 1 FROM tickets WHERE id = ?", (ticket.id,)).fetchone() is None:
                raise NotFound(f"ticket {ticket.id} does not exist")
            raise VersionConflict(f"ticket {ticket.id} changed since version {ticket.version}")
        _set_ticket_timer(db, saved)
        self._append_events(db, written, appended)
        return saved

    async def list_tickets(self, query: TicketQuery) -> TicketPage:
        by_due = query.sla is not None
        order = "due_us" if by_due else "updated_us"
        sql = f"SELECT seq, {order}, data FROM tickets WHERE 1 = 1"
        args: list[Any] = []
        for column, value in (
            ("status", query.status),
            ("channel", query.channel),
            ("queue", query.queue),
            ("category", query.category),
            ("assignee", query.assignee),
            ("sla_flag", query.sla),
        ):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        if by_due:
            sql += " AND due_us IS NOT NULL"
        if query.inboxes is not None:
            inboxes = sorted(query.inboxes)
            sql += f" AND json_extract(data, '$.inbox') IN ({', '.join('?' * len(inboxes)) or 'NULL'})"
            args += inboxes
        if query.updated_since is not None:
            sql += " AND updated_us >= ?"
            args.append(_micros(query.updated_since))
        if query.cursor is not None:
            after_us, after_seq = decode_cursor(query.cursor, 2)
            sql += f" AND ({order} > ? OR ({order} = ? AND seq > ?))"
            args += [after_us, after_us, after_seq]
        sql += f" ORDER BY {order}, seq LIMIT ?"
        args.append(query.limit + 1)

        def run(db: sqlite3.Connection) -> TicketPage:
            rows = db.execute(sql, args).fetchall()
            page = rows[: query.limit]
            more = len(rows) > query.limit
            cursor = encode_cursor(page[-1][1], page[-1][0]) if more and page else None
            return TicketPage(tickets=tuple(loads(Ticket, r[2]) for r in page), next_cursor=cursor)

        return await self._run(run)

    # events -------------------------------------------------------------------
    @staticmethod
    def _append_events(
        db: sqlite3.Connection, events: Sequence[DownstreamEvent], appended: list[DownstreamEvent] | None = None
    ) -> None:
        """Insert ``events`` now, or add them to ``appended``, a bulk write's events inserted at its end in order."""
        if appended is not None:
            appended.extend(events)
            return
        db.executemany(
            "INSERT INTO events (idempotency_key, type, ticket_id, conversation_id, occurred_at, data)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
            [
                (e.idempotency_key, e.type, e.ticket_id, e.conversation_id, e.occurred_at.isoformat(), dumps(e.data))
                for e in events
            ],
        )

    async def append_events(self, events: Sequence[DownstreamEvent]) -> None:
        """Test support, outside the Store protocol: events with no record change (the gateway writes events
        only together with the change they report)."""

        def run(db: sqlite3.Connection) -> None:
            with self._tx(db):
                self._append_events(db, events)

        await self._run(run)

    async def events_after(self, seq: int, limit: int = 100) -> list[DownstreamEvent]:
        def run(db: sqlite3.Connection) -> list[DownstreamEvent]:
            rows = db.execute(
                "SELECT seq, idempotency_key, type, ticket_id, conversation_id, occurred_at, data FROM events"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            )
            return [
                DownstreamEvent(
                    seq=r[0],
                    idempotency_key=r[1],
                    type=EventType(r[2]),
                    ticket_id=r[3],
                    conversation_id=r[4],
                    occurred_at=datetime.fromisoformat(r[5]),
                    data=json.loads(r[6]),
                )
                for r in rows
            ]

        return await self._run(run)

    # frames -------------------------------------------------------------------
    async def push_frame(self, address: Identity, body: dict[str, Any]) -> int:
        def run(db: sqlite3.Connection) -> int:
            with self._tx(db):
                return _append_frame(db, Frame(address=address, body=body))

        return await self._run(run)

    async def add_framed_message(
        self,
        message: Message,
        events: Sequence[DownstreamEvent],
        *,
        frame: Frame,
        delivered: Delivery,
        answers: str | None = None,
        saving: Conversation | None = None,
    ) -> tuple[Message, int | None]:
        def run(db: sqlite3.Connection) -> tuple[Message, int | None]:
            with self._tx(db):
                return self._add_delivered(
                    db, message, events, delivered=delivered, frame=frame, answers=answers, saving=saving
                )

        return await self._run(run)

    def _add_delivered(
        self,
        db: sqlite3.Connection,
        message: Message,
        events: Sequence[DownstreamEvent],
        *,
        delivered: Delivery,
        frame: Frame | None,
        answers: str | None = None,
        saving: Conversation | None = None,
    ) -> tuple[Message, int | None]:
        """Inside a write: a reply stored with its delivery and, on a channel that delivers by frames, its frame
        appended; (the stored message, the frame's seq), or (the earlier message, None) for a repeat."""
        stored, created = self._add_message(db, message, events, answers=answers, saving=saving, delivered=delivered)
        return stored, _append_frame(db, frame) if created and frame is not None else None

    async def frames_after(self, address: Identity, seq: int, limit: int = 500) -> list[StoredFrame]:
        def run(db: sqlite3.Connection) -> list[StoredFrame]:
            rows = db.execute(
                "SELECT seq, body FROM frames WHERE address = ? AND seq > ? ORDER BY seq LIMIT ?",
                (str(address), seq, limit),
            )
            return [StoredFrame(seq=s, body=json.loads(b)) for s, b in rows]

        return await self._run(run)

    async def last_frame_seq(self, address: Identity) -> int:
        def run(db: sqlite3.Connection) -> int:
            (seq,) = db.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM frames WHERE address = ?", (str(address),)
            ).fetchone()
            return int(seq)

        return await self._run(run)

    # quarantine -----------------------------------------------------------------
    async def quarantine(self, item: QuarantinedItem) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            with self._tx(db):
                cur = db.execute(
                    "INSERT INTO quarantine (id, channel, inbox, reason, raw, received_at) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (id) DO NOTHING",
                    (item.id, item.channel, item.inbox, item.reason, item.raw, item.received_at.isoformat()),
                )
                return cur.rowcount == 1

        return await self._run(run)

    _QUARANTINE_COLUMNS = "id, channel, inbox, reason, raw, received_at, replayed"

    @staticmethod
    def _load_quarantined(row: tuple[Any, ...]) -> QuarantinedItem:
        return QuarantinedItem(
            id=row[0],
            channel=Channel(row[1]),
            inbox=row[2],
            reason=row[3],
            raw=bytes(row[4]),
            received_at=datetime.fromisoformat(row[5]),
            replayed=bool(row[6]),
        )

    async def quarantined(self, *, include_replayed: bool = False, limit: int = 100) -> list[QuarantinedItem]:
        sql = f"SELECT {self._QUARANTINE_COLUMNS} FROM quarantine"
        sql += "" if include_replayed else " WHERE replayed = 0"
        sql += " ORDER BY seq LIMIT ?"
        return await self._run(lambda db: [self._load_quarantined(r) for r in db.execute(sql, (limit,))])

    async def get_quarantined(self, item_id: str) -> QuarantinedItem | None:
        def run(db: sqlite3.Connection) -> QuarantinedItem | None:
            sql = f"SELECT {self._QUARANTINE_COLUMNS} FROM quarantine WHERE id = ?"
            row = db.execute(sql, (item_id,)).fetchone()
            return self._load_quarantined(row) if row else None

        return await self._run(run)

    async def mark_replayed(self, item_id: str) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute("UPDATE quarantine SET replayed = 1 WHERE id = ?", (item_id,))

        await self._run(run)

    # webhook dead letters -------------------------------------------------------
    async def add_dead_letter(self, letter: DeadLetter) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "INSERT INTO dead_letters (id, subscription, data) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (letter.id, letter.subscription, dumps(letter)),
            )
            return cur.rowcount == 1

        return await self._run(run)

    async def dead_letters(self, *, subscription: str | None = None, limit: int = 100) -> list[DeadLetter]:
        sql = "SELECT data FROM dead_letters"
        args: list[Any] = []
        if subscription is not None:
            sql += " WHERE subscription = ?"
            args.append(subscription)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        return await self._run(lambda db: [loads(DeadLetter, d) for (d,) in db.execute(sql, args)])

    async def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        def run(db: sqlite3.Connection) -> DeadLetter | None:
            row = db.execute("SELECT data FROM dead_letters WHERE id = ?", (letter_id,)).fetchone()
            return loads(DeadLetter, row[0]) if row else None

        return await self._run(run)

    async def remove_dead_letter(self, letter_id: str) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM dead_letters WHERE id = ?", (letter_id,)).rowcount == 1

        return await self._run(run)

    # timers ---------------------------------------------------------------------
    async def set_timer(self, key: str, due_at: datetime | None) -> None:
        def run(db: sqlite3.Connection) -> None:
            with self._tx(db):
                _set_timer(db, key, due_at)

        await self._run(run)

    async def claim_due_timers(self, now: datetime, hold_s: float, limit: int = 100) -> list[DueTimer]:
        def run(db: sqlite3.Connection) -> list[DueTimer]:
            with self._tx(db):
                rows = db.execute(
                    "SELECT key, due FROM timers WHERE due <= ? ORDER BY due LIMIT ?", (now.timestamp(), limit)
                ).fetchall()
                db.executemany(
                    "UPDATE timers SET due = ? WHERE key = ?", [(now.timestamp() + hold_s, k) for k, _ in rows]
                )
            return [DueTimer(key=k, due_at=datetime.fromtimestamp(d, UTC)) for k, d in rows]

        return await self._run(run)

    # small shared state ---------------------------------------------------------
    async def claim(self, key: str, ttl_s: float) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            now = time.time()
            with self._tx(db):
                cur = db.execute(
                    "INSERT INTO claims (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
                    " SET expires_at = excluded.expires_at WHERE claims.expires_at <= ?",
                    (key, now + ttl_s, now),
                )
                return cur.rowcount == 1

        return await self._run(run)

    async def lease(self, key: str, holder: str, ttl_s: float) -> bool:
        return await self._run(lambda db: self._lease(db, key, holder, ttl_s))

    def _lease(self, db: sqlite3.Connection, key: str, holder: str, ttl_s: float) -> bool:
        now = time.time()
        with self._tx(db):
            cur = db.execute(
                "INSERT INTO claims (key, expires_at, holder) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
                " SET expires_at = excluded.expires_at, holder = excluded.holder"
                " WHERE claims.expires_at <= ? OR claims.holder = excluded.holder",
                (key, now + ttl_s, holder, now),
            )
            return cur.rowcount == 1

    async def release(self, key: str, holder: str) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM claims WHERE key = ? AND holder = ?", (key, holder))

        await self._run(run)

    async def hit(self, key: str, window_s: float) -> Hits:
        def run(db: sqlite3.Connection) -> Hits:
            now = time.time()
            with self._tx(db):
                count, ends = db.execute(
                    "INSERT INTO hits (key, count, expires_at) VALUES (?, 1, ?) ON CONFLICT (key) DO UPDATE SET"
                    " count = CASE WHEN hits.expires_at <= ? THEN 1 ELSE hits.count + 1 END,"
                    " expires_at = CASE WHEN hits.expires_at <= ? THEN excluded.expires_at ELSE hits.expires_at END"
                    " RETURNING count, expires_at",
                    (key, now + window_s, now, now),
                ).fetchone()
            return Hits(count=int(count), reset_in_s=max(0.0, float(ends) - now))

        return await self._run(run)

    async def purge_expired(self, limit: int = 1000) -> int:
        def run(db: sqlite3.Connection) -> int:
            # In slices: one sweep must not hold the write lock (and the loop's store jobs) for long.
            now = time.time()
            with self._tx(db):
                purged = db.execute(
                    "DELETE FROM claims WHERE key IN (SELECT key FROM claims WHERE expires_at <= ? LIMIT ?)",
                    (now, limit),
                ).rowcount
                if purged < limit:
                    purged += db.execute(
                        "DELETE FROM hits WHERE key IN (SELECT key FROM hits WHERE expires_at <= ? LIMIT ?)",
                        (now, limit - purged),
                    ).rowcount
                if purged < limit:
                    purged += db.execute(
                        "DELETE FROM checkpoints WHERE key IN"
                        " (SELECT key FROM checkpoints WHERE expires_at <= ? LIMIT ?)",
                        (now, limit - purged),
                    ).rowcount
            return purged

        return await self._run(run)

    async def get_secret(self, name: str, now: datetime) -> str | None:
        def run(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT value, expires_at FROM secrets WHERE name = ?", (name,)).fetchone()
            if row is None or (row[1] is not None and datetime.fromisoformat(row[1]) <= now):
                return None
            return str(row[0])

        return await self._run(run)

    async def set_secret(self, name: str, value: str, expires_at: datetime | None) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO secrets (name, value, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET value = excluded.value, expires_at = excluded.expires_at",
                (name, value, expires_at.isoformat() if expires_at else None),
            )

        await self._run(run)

    async def gauges(self, *, since: datetime) -> Gauges:
        def run(db: sqlite3.Connection) -> Gauges:
            statuses = {str(s): n for s, n in db.execute("SELECT status, count(*) FROM tickets GROUP BY status")}
            # Compared as datetimes, not as text: an offset other than UTC would sort wrong.
            quarantined = db.execute("SELECT received_at FROM quarantine WHERE replayed = 0")
            received = [datetime.fromisoformat(r) for (r,) in quarantined]
            outbox = db.execute(
                "SELECT json_extract(m.data, '$.created_at') FROM outbox o JOIN messages m ON m.id = o.message_id"
            )
            waiting = [datetime.fromisoformat(c) for (c,) in outbox]
            return Gauges(
                tickets_by_status=statuses,
                quarantine_pending=len(received),
                quarantined_since=sum(1 for at in received if at >= since),
                outbox_size=len(waiting),
                outbox_oldest=min(waiting, default=None),
            )

        return await self._run(run)

    async def get_checkpoint(self, key: str) -> str | None:
        def run(db: sqlite3.Connection) -> str | None:
            # An expired row the sweeper has not reached yet is as good as gone.
            row = db.execute(
                "SELECT value FROM checkpoints WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
                (key, time.time()),
            ).fetchone()
            return str(row[0]) if row else None

        return await self._run(run)

    async def set_checkpoint(self, key: str, value: str, *, ttl_s: float | None = None) -> None:
        await self._run(lambda db: _set_checkpoint(db, key, value, ttl_s))

    async def set_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        def run(db: sqlite3.Connection) -> None:
            with self._tx(db):
                for c in checkpoints:
                    _set_checkpoint(db, c.key, c.value, c.ttl_s)

        await self._run(run)


# A new conversation's row, opened one at a time (``_conversation``) or a batch's new callers at once (``_open_new``).
_INSERT_TICKET = (
    "INSERT INTO tickets (seq, id, number, status, channel, contact_id, updated_us, version, data,"
    " queue, category, assignee, due_us, sla_flag) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _ticket_row(seq: int | None, number: str, data: str, ticket: Ticket, assigned: Ticket) -> tuple[Any, ...]:
    """A new ticket's row for ``_INSERT_TICKET``; its rule columns (queue, assignee, ...) from ``assigned``."""
    return (
        seq,
        ticket.id,
        number,
        ticket.status,
        ticket.channel,
        ticket.contact_id,
        _micros(ticket.updated_at),
        ticket.version,
        data,
        *_rule_values(assigned),
    )


_INSERT_CONVERSATION = (
    "INSERT INTO conversations (id, inbox, address, thread, contact_id, version, data) VALUES (?, ?, ?, ?, ?, 1, ?)"
)
_INSERT_MESSAGE = (
    "INSERT INTO messages (id, conversation_id, channel, inbox, direction, external_id, ticket_id,"
    " episode, handled, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_NEW_ONLY = " ON CONFLICT (channel, inbox, direction, external_id) DO NOTHING"
# A message stored with its delivery known (a reply sent in the exchange that asked it): the row and the two
# delivery columns, one statement.
_INSERT_DELIVERED_MESSAGE = (
    "INSERT INTO messages (id, conversation_id, channel, inbox, direction, external_id, ticket_id,"
    " episode, handled, data, delivery, delivery_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" + _NEW_ONLY
)


def _append_frame(db: sqlite3.Connection, frame: Frame) -> int:
    """Inside a write transaction: the frame under the address's next number (gapless: one writer at a time)."""
    key = str(frame.address)
    (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM frames WHERE address = ?", (key,)).fetchone()
    body = json.dumps(frame.body, ensure_ascii=False)
    db.execute("INSERT INTO frames (address, seq, body) VALUES (?, ?, ?)", (key, seq, body))
    return int(seq)


def _message_row(message: Message, *, handled: bool) -> tuple[object, ...]:
    """A message's row for ``_INSERT_MESSAGE``; an outbound message is always handled (nothing waits on it)."""
    return (
        message.id,
        message.conversation_id,
        message.channel,
        message.inbox,
        message.direction,
        message.external_id,
        message.ticket_id,
        message.episode,
        0 if message.direction is Direction.INBOUND and not handled else 1,
        message_json(message),  # encoded once for the row and its message.created event
    )
