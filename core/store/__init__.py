"""Store backends behind one domain interface."""

from __future__ import annotations

from pathlib import Path

from core.config import Config
from core.store.base import NotFound, Store, StoreError, TicketPage, TicketQuery, VersionConflict
from core.store.sqlite import SqliteStore

__all__ = ["NotFound", "Store", "StoreError", "TicketPage", "TicketQuery", "VersionConflict", "open_store"]


def open_store(config: Config) -> Store:
    """The configured backend, not yet opened."""
    path = Path(config.store.path)
    if not path.is_absolute():
        path = config.data_path / path
    return SqliteStore(path)
