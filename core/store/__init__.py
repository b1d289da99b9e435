"""Store backends behind one domain interface made of small roles (roles.py); open_store picks the backend."""

from __future__ import annotations

from pathlib import Path

from core.bus import Bus
from core.config import Config, RedisStoreConfig
from core.store.base import NotFound, Store, StoreError, StoreUnavailable, TicketPage, TicketQuery, VersionConflict
from core.store.sqlite import SqliteStore

__all__ = [
    "NotFound",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TicketPage",
    "TicketQuery",
    "VersionConflict",
    "open_store",
]


def open_store(config: Config, *, bus: Bus | None = None) -> Store:
    """The configured backend, not yet opened. ``bus``: how SQLite's instances reach each other, when there are
    several (the workers of ``huiliu serve --workers N``); Redis brings its own pub/sub."""
    if isinstance(config.store, RedisStoreConfig):
        from core.store.redis import RedisPool, RedisStore  # only Redis deployments import the client

        cfg = config.store
        return RedisStore(
            cfg.url,
            prefix=cfg.prefix,
            stream_maxlen=cfg.stream_maxlen,
            event_key_ttl_s=cfg.event_key_ttl_s,
            pool=RedisPool(
                max_connections=cfg.max_connections,
                wait_s=cfg.pool_timeout_s,
                socket_timeout_s=cfg.socket_timeout_s,
                connect_timeout_s=cfg.connect_timeout_s,
            ),
            aof_timeout_ms=cfg.aof_timeout_ms if cfg.durability == "aof" else None,
        )
    path = Path(config.store.path)
    if not path.is_absolute():
        path = config.data_path / path
    return SqliteStore(path, bus=bus)
