"""The audit log role: every backend records, filters, pages newest first and sweeps by age alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.store import Store
from core.store.audit import AuditEntry, AuditQuery
from tests.contract.test_store_contract import BACKENDS

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend = BACKENDS[request.param](tmp_path)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def entry(n: int, *, actor: str = "zendesk-sync", action: str = "ticket.update", **kw: object) -> AuditEntry:
    fields: dict[str, object] = {
        "id": f"au_{n}",
        "at": T0 + timedelta(minutes=n),
        "actor": actor,
        "action": action,
        "target": f"ticket:HL-{n % 3:06d}",
        "request_id": f"req-{n}",
        "before": {"status": "new"},
        "after": {"status": "open", "note": "已处理"},
        **kw,
    }
    return AuditEntry(**fields)  # type: ignore[arg-type]


async def test_an_entry_reads_back_whole_with_its_sequence(store: Store) -> None:
    first = await store.record_audit(entry(1, on_behalf_of="li"))
    second = await store.record_audit(entry(2))
    assert 0 < first.seq < second.seq
    page = await store.audit_entries(AuditQuery())
    assert page.entries == (second, first) and page.next_cursor is None
    assert page.entries[1].who == "li via zendesk-sync" and page.entries[1].after == {
        "status": "open",
        "note": "已处理",
    }


async def test_pages_walk_every_entry_once_newest_first(store: Store) -> None:
    for n in range(23):
        await store.record_audit(entry(n))
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.audit_entries(AuditQuery(limit=5, cursor=cursor))
        seen += [e.id for e in page.entries]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"au_{n}" for n in reversed(range(23))]


async def test_filters_combine(store: Store) -> None:
    for n in range(12):
        await store.record_audit(
            entry(n, actor="ops" if n % 2 else "zendesk-sync", action="faq.update" if n % 4 == 0 else "ticket.update")
        )
    await store.record_audit(entry(20, on_behalf_of="li"))

    async def ids(**kw: object) -> list[str]:
        found: list[str] = []
        cursor = None
        while True:
            page = await store.audit_entries(AuditQuery(limit=2, cursor=cursor, **kw))  # type: ignore[arg-type]
            found += [e.id for e in page.entries]
            if (cursor := page.next_cursor) is None:
                return found

    assert await ids(actor="ops") == [f"au_{n}" for n in (11, 9, 7, 5, 3, 1)]
    assert await ids(actor="li") == ["au_20"]  # the agent an integration acted for is found too
    assert await ids(action="faq.update") == ["au_8", "au_4", "au_0"]
    assert await ids(target="ticket:HL-000001", actor="zendesk-sync") == ["au_10", "au_4"]
    assert await ids(since=T0 + timedelta(minutes=3), until=T0 + timedelta(minutes=6)) == ["au_5", "au_4", "au_3"]
    assert await ids(actor="nobody") == []


async def test_a_cursor_it_did_not_issue_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await store.audit_entries(AuditQuery(cursor="not-a-cursor"))


async def test_purge_drops_only_entries_older_than_the_cut_in_batches(store: Store) -> None:
    for n in range(10):
        await store.record_audit(entry(n))
    cut = T0 + timedelta(minutes=6)
    assert await store.purge_audit(cut, limit=4) == 4
    assert await store.purge_audit(cut, limit=4) == 2
    assert await store.purge_audit(cut, limit=4) == 0
    page = await store.audit_entries(AuditQuery())
    assert [e.id for e in page.entries] == [f"au_{n}" for n in (9, 8, 7, 6)]
