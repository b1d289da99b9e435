"""The audit log on SQLite: one table, newest first by its row number, swept by time."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from core.codec import dumps, loads
from core.store.audit import AuditEntry, AuditPage, AuditQuery
from core.store.cursor import decode_cursor, encode_cursor

T = TypeVar("T")

AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_us INTEGER NOT NULL,
    actor TEXT NOT NULL,
    on_behalf_of TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at_us);
CREATE INDEX IF NOT EXISTS audit_by_target ON audit (target, seq);
"""


def _micros(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


class SqliteAuditLog:
    """Mixed into the SQLite store, whose ``_run`` runs a job on its one writer thread."""

    _run: Callable[[Callable[[sqlite3.Connection], Any]], Any]

    async def record_audit(self, entry: AuditEntry) -> AuditEntry:
        def run(db: sqlite3.Connection) -> AuditEntry:
            cur = db.execute(
                "INSERT INTO audit (at_us, actor, on_behalf_of, action, target, data) VALUES (?, ?, ?, ?, ?, ?)",
                (_micros(entry.at), entry.actor, entry.on_behalf_of, entry.action, entry.target, dumps(entry)),
            )
            assert cur.lastrowid is not None
            return dataclasses.replace(entry, seq=cur.lastrowid)

        saved: AuditEntry = await self._run(run)
        return saved

    async def audit_entries(self, query: AuditQuery) -> AuditPage:
        sql = "SELECT seq, data FROM audit WHERE 1 = 1"
        args: list[Any] = []
        if query.cursor is not None:
            (before_seq,) = decode_cursor(query.cursor, 1)
            sql += " AND seq < ?"
            args.append(before_seq)
        if query.actor is not None:
            sql += " AND (actor = ? OR on_behalf_of = ?)"
            args += [query.actor, query.actor]
        if query.action is not None:
            sql += " AND action = ?"
            args.append(query.action)
        if query.target is not None:
            sql += " AND target = ?"
            args.append(query.target)
        if query.since is not None:
            sql += " AND at_us >= ?"
            args.append(_micros(query.since))
        if query.until is not None:
            sql += " AND at_us < ?"
            args.append(_micros(query.until))
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(query.limit + 1)

        def run(db: sqlite3.Connection) -> AuditPage:
            rows = db.execute(sql, args).fetchall()
            page = [dataclasses.replace(loads(AuditEntry, data), seq=seq) for seq, data in rows[: query.limit]]
            more = len(rows) > query.limit and page
            return AuditPage(entries=tuple(page), next_cursor=encode_cursor(page[-1].seq) if more else None)

        found: AuditPage = await self._run(run)
        return found

    async def purge_audit(self, before: datetime, limit: int = 1000) -> int:
        def run(db: sqlite3.Connection) -> int:
            return db.execute(
                "DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE at_us < ? ORDER BY at_us LIMIT ?)",
                (_micros(before), limit),
            ).rowcount

        purged: int = await self._run(run)
        return purged
