"""Redis store for scale-out: the package re-exports it (store.py); its scripts and bus are to move out later."""

from __future__ import annotations

from core.store.redis.store import RedisBus, RedisPool, RedisStore, event_from_entry, key_tag

__all__ = ["RedisBus", "RedisPool", "RedisStore", "event_from_entry", "key_tag"]
