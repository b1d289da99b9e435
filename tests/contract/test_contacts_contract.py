"""The contacts part of the Store contract: lookups, versioned saves, tickets by contact and merges."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from core.model import DownstreamEvent, EventType, Identity, IdentityKind
from core.store import Store, VersionConflict
from core.store.base import NotFound
from core.store.redis import RedisStore
from tests.contract.test_store_contract import NOW, draft_ticket, inbound, new_conversation, store, visitor
from tests.redis_util import REDIS_URL, redis_store

__all__ = ["store"]


async def test_contact_by_identity_finds_the_owner_and_never_creates_one(store: Store) -> None:
    phone = Identity(IdentityKind.PHONE, "+8613800000001")
    assert await store.contact_by_identity(phone) is None
    assert await store.contact_by_identity(phone) is None
    created = await store.contact_for(phone, name="李", now=NOW)
    assert await store.contact_by_identity(phone) == created


async def test_a_save_naming_an_old_version_conflicts_and_changes_nothing(store: Store) -> None:
    contact = await store.contact_for(visitor(1), name=None, now=NOW)
    saved = await store.save_contact(dataclasses.replace(contact, vip=True, tags=("大客户",)), expected_version=1)
    assert saved.version == 2 and saved.vip and saved.tags == ("大客户",)
    with pytest.raises(VersionConflict):
        await store.save_contact(dataclasses.replace(contact, name="stale"), expected_version=1)
    assert await store.get_contact(contact.id) == saved
    last = await store.save_contact(dataclasses.replace(saved, name="王"))  # no version named: the last save wins
    assert last.version == 3 and (await store.get_contact(contact.id)) == last


async def test_concurrent_versioned_saves_let_exactly_one_win(store: Store) -> None:
    contact = await store.contact_for(visitor(2), name=None, now=NOW)
    results = await asyncio.gather(
        *(store.save_contact(dataclasses.replace(contact, name=f"n{i}"), expected_version=1) for i in range(6)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, VersionConflict) for r in results if isinstance(r, Exception))


async def test_tickets_of_a_contact_are_its_own_only(store: Store) -> None:
    mine = await new_conversation(store, 1)
    other = await new_conversation(store, 2)
    first, _ = await store.create_ticket(draft_ticket(mine), mine, lambda t, c: [])
    theirs, _ = await store.create_ticket(draft_ticket(other), other, lambda t, c: [])
    assert [t.id for t in await store.tickets_of(mine.contact_id)] == [first.id]
    assert [t.id for t in await store.tickets_of(other.contact_id)] == [theirs.id]
    assert await store.tickets_of("ct_nobody") == []


async def test_merge_keeps_every_conversation_and_ticket_and_leaves_a_pointer(store: Store) -> None:
    web = await new_conversation(store, 1)
    mail = await store.conversation_for(
        Identity(IdentityKind.EMAIL, "li@example.com"), channel=web.channel, inbox="mail", name="Li", now=NOW
    )
    ticket, web = await store.create_ticket(draft_ticket(web), web, lambda t, c: [])
    mail_ticket, mail = await store.create_ticket(draft_ticket(mail), mail, lambda t, c: [])
    source = await store.get_contact(web.contact_id)
    assert source is not None
    await store.save_contact(dataclasses.replace(source, vip=True, tags=("a",)))
    event = DownstreamEvent(
        type=EventType.CONTACT_MERGED, data={"from": web.contact_id}, occurred_at=NOW, idempotency_key="merge:1"
    )
    merged = await store.merge_contacts(web.contact_id, mail.contact_id, events=[event])

    assert merged.id == mail.contact_id and merged.vip and merged.tags == ("a",) and merged.name == "Li"
    assert set(merged.identities) == {visitor(1), Identity(IdentityKind.EMAIL, "li@example.com")}
    assert await store.get_contact(mail.contact_id) == merged
    assert await store.contact_by_identity(visitor(1)) == merged
    pointer = await store.get_contact(web.contact_id)
    assert pointer is not None and pointer.merged_into == merged.id and pointer.identities == ()
    assert {c.id for c in await store.conversations_of(merged.id)} == {web.id, mail.id}
    assert await store.conversations_of(web.contact_id) == []
    assert {t.id for t in await store.tickets_of(merged.id)} == {ticket.id, mail_ticket.id}
    assert await store.tickets_of(web.contact_id) == []
    moved = await store.get_conversation(web.id)
    assert moved is not None and moved.contact_id == merged.id and moved.version == web.version + 1
    moved_ticket = await store.get_ticket(ticket.number)
    assert moved_ticket is not None and moved_ticket.contact_id == merged.id
    assert moved_ticket.version == ticket.version + 1
    assert [e.type for e in await store.events_after(0)] == [EventType.CONTACT_MERGED]
    # a conversation saved from a copy read before the merge conflicts instead of undoing it
    with pytest.raises(VersionConflict):
        await store.save_conversation(web)


async def test_merge_refuses_itself_a_pointer_and_strangers(store: Store) -> None:
    a = await store.contact_for(visitor(1), name=None, now=NOW)
    b = await store.contact_for(visitor(2), name=None, now=NOW)
    with pytest.raises(ValueError):
        await store.merge_contacts(a.id, a.id)
    with pytest.raises(NotFound):
        await store.merge_contacts(a.id, "ct_missing")
    await store.merge_contacts(a.id, b.id)
    with pytest.raises(ValueError):
        await store.merge_contacts(a.id, b.id)
    assert await store.events_after(0) == []


async def test_a_follow_up_conversation_joins_a_ticket_with_its_messages(store: Store) -> None:
    first = await new_conversation(store, 1)
    ticket, _ = await store.create_ticket(draft_ticket(first), first, lambda t, c: [])
    later = await store.conversation_for(
        Identity(IdentityKind.EMAIL, "x@example.com"), channel=first.channel, inbox="mail", name=None, now=NOW
    )
    question, _ = await store.add_message(inbound(later, "again"))
    joined = await store.join_ticket(dataclasses.replace(later, ticket_id=ticket.id))
    assert joined.ticket_id == ticket.id and joined.version == later.version + 1
    assert [m.ticket_id for m in await store.messages(later.id)] == [ticket.id]
    assert [m.id for m in await store.messages(later.id, ticket_id=ticket.id)] == [question.id]
    with pytest.raises(VersionConflict):
        await store.join_ticket(dataclasses.replace(later, ticket_id=ticket.id))


async def test_redis_indexes_tickets_made_before_the_contact_index_once(tmp_path: Path) -> None:
    store = redis_store(tmp_path)
    await store.open()
    try:
        conversation = await new_conversation(store, 1)
        ticket, _ = await store.create_ticket(draft_ticket(conversation), conversation, lambda t, c: [])
        assert isinstance(store, RedisStore)
        # As an older version left it: no index by contact, no marker.
        await store.client.delete(store.key(f"tix-of:{conversation.contact_id}"), store.key("tix-of:indexed"))
        assert await store.tickets_of(conversation.contact_id) == []
        upgraded = RedisStore(REDIS_URL, prefix=store.tag)  # the new version starting on that data
        await upgraded.open()
        try:
            assert [t.id for t in await upgraded.tickets_of(conversation.contact_id)] == [ticket.id]
        finally:
            await upgraded.close()
    finally:
        await store.close()
