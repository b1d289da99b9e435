"""The audit log on Redis: entries in a sorted set by sequence, a second by time for the retention sweep."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from core.codec import dumps, loads
from core.store.audit import AuditEntry, AuditPage, AuditQuery
from core.store.cursor import decode_cursor, encode_cursor

# KEYS: 1 entries (score seq, member the entry), 2 by time (score µs, member seq), 3 counter. ARGV: 1 data, 2 µs
_RECORD = """
local seq = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[1], seq, ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], seq)
return seq
"""

# KEYS: 1 entries, 2 by time. ARGV: 1 before (µs, exclusive), 2 limit
_PURGE = """
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, seq in ipairs(old) do
  redis.call('ZREMRANGEBYSCORE', KEYS[1], seq, seq)
end
if #old > 0 then redis.call('ZREM', KEYS[2], unpack(old)) end
return #old
"""


def _micros(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def _matches(entry: AuditEntry, query: AuditQuery) -> bool:
    return (
        (query.actor is None or query.actor in (entry.actor, entry.on_behalf_of))
        and (query.action is None or entry.action == query.action)
        and (query.target is None or entry.target == query.target)
        and (query.since is None or entry.at >= query.since)
        and (query.until is None or entry.at < query.until)
    )


class RedisAuditLog:
    """Mixed into the Redis store, which gives the client and the deployment's key names."""

    @property
    def client(self) -> Any:
        raise NotImplementedError

    def key(self, name: str) -> str:
        raise NotImplementedError

    def _audit_keys(self) -> list[str]:
        return [self.key("audit"), self.key("audit:at"), self.key("audit:seq")]

    async def record_audit(self, entry: AuditEntry) -> AuditEntry:
        script = self.client.register_script(_RECORD)
        seq = await script(keys=self._audit_keys(), args=[dumps(entry), str(_micros(entry.at))])
        return dataclasses.replace(entry, seq=int(seq))

    async def audit_entries(self, query: AuditQuery) -> AuditPage:
        top: str = "+inf"
        if query.cursor is not None:
            (before_seq,) = decode_cursor(query.cursor, 1)
            top = f"({before_seq}"
        found: list[AuditEntry] = []
        batch = max(query.limit + 1, 100)
        while len(found) <= query.limit:
            rows: list[tuple[str, float]] = await self.client.zrevrangebyscore(
                self.key("audit"), top, "-inf", start=0, num=batch, withscores=True
            )
            for data, score in rows:
                entry = dataclasses.replace(loads(AuditEntry, data), seq=int(score))
                if _matches(entry, query):
                    found.append(entry)
            if len(rows) < batch:
                break
            top = f"({int(rows[-1][1])}"
        page = found[: query.limit]
        more = len(found) > query.limit and page
        return AuditPage(entries=tuple(page), next_cursor=encode_cursor(page[-1].seq) if more else None)

    async def purge_audit(self, before: datetime, limit: int = 1000) -> int:
        script = self.client.register_script(_PURGE)
        keys = self._audit_keys()[:2]
        return int(await script(keys=keys, args=[str(_micros(before)), str(limit)]))
