"""Embedded SQLite store (the default backend): the package re-exports it; store.py, schema.py, worker.py inside."""

from __future__ import annotations

from core.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
