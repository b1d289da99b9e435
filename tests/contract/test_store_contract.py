"""The Store contract: every backend must pass these, with the same guarantees."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core import events
from core.model import (
    Admission,
    Author,
    Channel,
    Checkpoint,
    Conversation,
    ConversationStatus,
    Delivery,
    DeliveryStatus,
    Direction,
    EventType,
    Identity,
    IdentityKind,
    Message,
    MessageKind,
    Priority,
    QuarantinedItem,
    Ticket,
    TicketStatus,
)
from core.store import Store, TicketQuery, VersionConflict
from core.store.base import DeadLetter, Outgoing
from core.store.sqlite import SqliteStore
from core.store.types import AdmissionRefused, FirstWrite, Frame
from tests.redis_util import redis_store

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)

BACKENDS: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda tmp: SqliteStore(tmp / "store.sqlite3"),
    "redis": redis_store,  # the real Redis, a fresh key prefix per test, removed afterwards
}


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend = BACKENDS[request.param](tmp_path)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def visitor(n: int = 1) -> Identity:
    return Identity(IdentityKind.WEBCHAT_VISITOR, f"{n:032x}")


async def new_conversation(store: Store, n: int = 1) -> Conversation:
    return await store.conversation_for(visitor(n), channel=Channel.WEBCHAT, inbox="web", name=None, now=NOW)


def inbound(conversation: Conversation, external_id: str | None, text: str = "hi") -> Message:
    return Message(
        id=f"msg_{uuid.uuid4().hex}",
        conversation_id=conversation.id,
        channel=conversation.channel,
        inbox=conversation.inbox,
        direction=Direction.INBOUND,
        author=Author.CUSTOMER,
        kind=MessageKind.TEXT,
        text=text,
        created_at=NOW,
        external_id=external_id,
        episode=conversation.episode,
    )


def draft_ticket(conversation: Conversation, at: datetime = NOW) -> Ticket:
    return Ticket(
        id=f"tk_{uuid.uuid4().hex}",
        number="",
        conversation_id=conversation.id,
        contact_id=conversation.contact_id,
        subject="help",
        status=TicketStatus.NEW,
        priority=Priority.NORMAL,
        channel=conversation.channel,
        inbox=conversation.inbox,
        created_at=at,
        updated_at=at,
    )


async def test_same_identity_is_one_contact_even_when_asked_concurrently(store: Store) -> None:
    found = await asyncio.gather(*(store.contact_for(visitor(), name="Li", now=NOW) for _ in range(10)))
    assert len({c.id for c in found}) == 1
    conversations = await asyncio.gather(
        *(
            store.conversation_for(visitor(), channel=Channel.WEBCHAT, inbox="web", name=None, now=NOW)
            for _ in range(10)
        )
    )
    assert len({c.id for c in conversations}) == 1
    assert conversations[0].contact_id == found[0].id


async def test_find_conversation_never_creates_one(store: Store) -> None:
    assert await store.find_conversation("web", visitor(3)) is None
    created = await new_conversation(store, 3)
    assert await store.find_conversation("web", visitor(3)) == created
    assert await store.find_conversation("other-inbox", visitor(3)) is None


async def test_a_new_address_gets_its_contact_and_conversation_together(store: Store) -> None:
    conversations = await asyncio.gather(
        *(
            store.conversation_for(visitor(7), channel=Channel.WEBCHAT, inbox="web", name="王", now=NOW)
            for _ in range(8)
        )
    )
    assert len({c.id for c in conversations}) == 1
    contact = await store.get_contact(conversations[0].contact_id)
    assert contact is not None and contact.identities == (visitor(7),) and contact.name == "王"
    assert (await store.contact_for(visitor(7), name=None, now=NOW)).id == contact.id


async def test_same_external_id_twice_concurrently_is_one_message(store: Store) -> None:
    conversation = await new_conversation(store)
    attempts = [inbound(conversation, "ext-1") for _ in range(5)]
    results = await asyncio.gather(*(store.add_message(m, [events.message_created(m)]) for m in attempts))
    created = [stored for stored, was_new in results if was_new]
    assert len(created) == 1
    assert {stored.id for stored, _ in results} == {created[0].id}
    assert len(await store.messages(conversation.id)) == 1
    feed = await store.events_after(0)
    assert [e.type for e in feed] == [EventType.MESSAGE_CREATED]


async def test_messages_without_external_id_are_all_kept(store: Store) -> None:
    conversation = await new_conversation(store)
    for _ in range(3):
        _, created = await store.add_message(inbound(conversation, None))
        assert created
    assert len(await store.messages(conversation.id)) == 3


async def test_same_external_id_on_another_inbox_is_another_message(store: Store) -> None:
    conversation = await new_conversation(store)
    other = dataclasses.replace(conversation, inbox="web2")
    _, first = await store.add_message(inbound(conversation, "ext-1"))
    _, second = await store.add_message(inbound(other, "ext-1"))
    assert first and second


async def test_conversation_save_checks_the_version(store: Store) -> None:
    conversation = await new_conversation(store)
    saved = await store.save_conversation(dataclasses.replace(conversation, consecutive_misses=1))
    assert saved.version == conversation.version + 1
    with pytest.raises(VersionConflict):
        await store.save_conversation(dataclasses.replace(conversation, consecutive_misses=5))
    fresh = await store.get_conversation(conversation.id)
    assert fresh == saved


async def test_concurrent_saves_of_one_version_let_exactly_one_win(store: Store) -> None:
    conversation = await new_conversation(store)
    outcomes = await asyncio.gather(
        *(store.save_conversation(dataclasses.replace(conversation, consecutive_misses=i)) for i in range(6)),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, VersionConflict) for o in outcomes if isinstance(o, BaseException))


async def test_ticket_is_numbered_and_written_with_its_events_and_transcript(store: Store) -> None:
    conversation = await new_conversation(store)
    await store.add_message(inbound(conversation, "a", "第一句"))
    await store.add_message(inbound(conversation, "b", "第二句"))
    waiting = conversation.moved_to(ConversationStatus.WAITING_FOR_AGENT)
    first, saved = await store.create_ticket(
        draft_ticket(conversation), waiting, lambda t, c: [events.ticket_created(t)]
    )
    assert first.number == "HL-000001"
    assert saved.ticket_id == first.id and saved.status is ConversationStatus.WAITING_FOR_AGENT
    transcript = await store.messages(conversation.id, ticket_id=first.id)
    assert [m.text for m in transcript] == ["第一句", "第二句"]
    feed = await store.events_after(0)
    assert feed[-1].type is EventType.TICKET_CREATED and feed[-1].data["ticket"]["number"] == "HL-000001"
    assert await store.get_ticket("HL-000001") == first
    assert await store.get_ticket(first.id) == first

    other = await new_conversation(store, 2)
    second, _ = await store.create_ticket(draft_ticket(other), other, lambda t, c: [])
    assert second.number == "HL-000002"


async def test_ticket_creation_is_all_or_nothing(store: Store) -> None:
    conversation = await new_conversation(store)
    stale = dataclasses.replace(conversation, version=conversation.version - 1)
    with pytest.raises(VersionConflict):
        await store.create_ticket(draft_ticket(conversation), stale, lambda t, c: [events.ticket_created(t)])
    assert (await store.list_tickets(TicketQuery())).tickets == ()
    assert await store.events_after(0) == []


async def test_ticket_update_checks_the_version(store: Store) -> None:
    conversation = await new_conversation(store)
    ticket, _ = await store.create_ticket(draft_ticket(conversation), conversation, lambda t, c: [])
    updated = await store.update_ticket(dataclasses.replace(ticket, status=TicketStatus.OPEN))
    assert updated.version == ticket.version + 1
    with pytest.raises(VersionConflict):
        await store.update_ticket(dataclasses.replace(ticket, status=TicketStatus.CLOSED))


async def test_ticket_pages_return_every_ticket_once_in_update_order(store: Store) -> None:
    for n in range(7):
        conversation = await new_conversation(store, n)
        await store.create_ticket(
            draft_ticket(conversation, NOW + timedelta(seconds=n % 3)), conversation, lambda t, c: []
        )
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_tickets(TicketQuery(limit=3, cursor=cursor))
        seen += [t.id for t in page.tickets]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 7
    everything = (await store.list_tickets(TicketQuery(limit=100))).tickets
    assert [t.id for t in everything] == seen
    assert [t.updated_at for t in everything] == sorted(t.updated_at for t in everything)
    later = await store.list_tickets(TicketQuery(updated_since=NOW + timedelta(seconds=2)))
    assert {t.updated_at for t in later.tickets} == {NOW + timedelta(seconds=2)}


async def test_ticket_pages_can_be_limited_to_some_inboxes(store: Store) -> None:
    for n in range(9):
        inbox = ("web", "web-vip", "shop")[n % 3]
        conversation = await store.conversation_for(
            visitor(n), channel=Channel.WEBCHAT, inbox=inbox, name=None, now=NOW
        )
        await store.create_ticket(draft_ticket(conversation, NOW + timedelta(seconds=n)), conversation, lambda t, c: [])
    seen: list[Ticket] = []
    cursor = None
    while True:
        page = await store.list_tickets(TicketQuery(limit=2, cursor=cursor, inboxes=frozenset({"web", "shop"})))
        seen += page.tickets
        if (cursor := page.next_cursor) is None:
            break
    assert [t.inbox for t in seen] == ["web", "shop"] * 3
    assert (await store.list_tickets(TicketQuery(inboxes=frozenset()))).tickets == ()


async def test_events_are_paged_in_order_and_written_once(store: Store) -> None:
    conversation = await new_conversation(store)
    message = inbound(conversation, "x")
    await store.append_events([events.message_created(message)])
    await store.append_events([events.message_created(message)])  # same idempotency key
    for n in range(4):
        await store.append_events([events.message_created(inbound(conversation, f"m{n}"))])
    feed = await store.events_after(0, limit=3)
    assert len(feed) == 3
    rest = await store.events_after(feed[-1].seq or 0)
    ids = [e.seq for e in feed + rest]
    assert len(ids) == 5 and ids == sorted(ids)


async def test_frames_are_numbered_without_gaps_even_when_pushed_concurrently(store: Store) -> None:
    address = visitor()
    seqs = await asyncio.gather(*(store.push_frame(address, {"n": n}) for n in range(20)))
    assert sorted(seqs) == list(range(1, 21))
    assert await store.last_frame_seq(address) == 20
    after = await store.frames_after(address, 15)
    assert [f.seq for f in after] == [16, 17, 18, 19, 20]
    assert await store.frames_after(visitor(2), 0) == []


async def test_an_admission_rides_on_the_conversation_read_and_refuses_another_holder(store: Store) -> None:
    """A WeChat push's nonce is claimed in intake's first store call: the byte-identical retry (same holder) is
    admitted again, the same nonce with another body is refused before anything is written."""
    first = Admission(key="wechat:nonce:oa:1:n1", holder="body-a", ttl_s=60)
    conversation = await store.conversation_for(
        visitor(7), channel=Channel.WEBCHAT, inbox="web", name=None, now=NOW, admit=first
    )
    again = await store.conversation_for(
        visitor(7), channel=Channel.WEBCHAT, inbox="web", name=None, now=NOW, admit=first
    )
    assert again.id == conversation.id
    forged = dataclasses.replace(first, holder="body-b")
    with pytest.raises(AdmissionRefused):
        await store.conversation_for(visitor(8), channel=Channel.WEBCHAT, inbox="web", name=None, now=NOW, admit=forged)
    assert await store.find_conversation("web", visitor(8)) is None  # nothing created for the refused one
    assert not await store.lease(first.key, "body-b", 60)  # still held for the first body


async def test_receive_first_writes_what_conversation_for_then_add_message_would(store: Store) -> None:
    """Intake's common path in one call: the claim, the conversation (opened with its contact when new) and the
    message with its checkpoints and events; a repeat writes nothing; ``build`` giving None writes no message."""
    claim = Admission(key="wechat:nonce:oa:2:n2", holder="body-a", ttl_s=60)
    opening = Checkpoint(key="wechat:window:oa:u9:message", value="first", ttl_s=3600)
    seen: list[Conversation] = []

    def build(conversation: Conversation, external_id: str = "m9") -> FirstWrite | None:
        seen.append(conversation)
        message = inbound(conversation, external_id)
        return FirstWrite(message=message, events=(events.message_created(message),), checkpoints=(opening,))

    since = len(await store.events_after(0, limit=1000))
    conversation, stored = await store.receive_first(
        visitor(9), channel=Channel.WEBCHAT, inbox="web", name="李", now=NOW, build=build, admit=claim
    )
    assert stored is not None and stored[1] and seen == [conversation]
    assert conversation == await store.find_conversation("web", visitor(9))
    contact = await store.get_contact(conversation.contact_id)
    assert contact is not None and contact.name == "李" and contact.identities == (visitor(9),)
    assert await store.get_message(stored[0].id) == stored[0]
    assert await store.get_checkpoint(opening.key) == "first"
    assert [e.type for e in (await store.events_after(0, limit=1000))[since:]] == [EventType.MESSAGE_CREATED]
    assert [m.id for m in await store.unhandled_messages()] == [stored[0].id]

    again, repeat = await store.receive_first(
        visitor(9), channel=Channel.WEBCHAT, inbox="web", name=None, now=NOW, build=build, admit=claim
    )
    assert again == conversation and repeat == (stored[0], False)  # the stored one, nothing new written

    def declined(conversation: Conversation) -> FirstWrite | None:
        return None

    kept, nothing = await store.receive_first(
        visitor(9), channel=Channel.WEBCHAT, inbox="web", name=None, now=NOW, build=declined
    )
    assert kept == conversation and nothing is None
    assert [m.id for m in await store.messages(conversation.id)] == [stored[0].id]


async def test_receive_first_refused_writes_nothing(store: Store) -> None:
    held = Admission(key="wechat:nonce:oa:3:n3", holder="body-a", ttl_s=60)
    assert await store.lease(held.key, held.holder, 60)
    forged = dataclasses.replace(held, holder="body-b")

    def build(conversation: Conversation) -> FirstWrite | None:
        message = inbound(conversation, "m10")
        return FirstWrite(message=message, events=(events.message_created(message),))

    with pytest.raises(AdmissionRefused):
        await store.receive_first(
            visitor(10), channel=Channel.WEBCHAT, inbox="web", name=None, now=NOW, build=build, admit=forged
        )
    assert await store.find_conversation("web", visitor(10)) is None
    assert await store.unhandled_messages() == []


async def test_claim_is_granted_once_until_it_expires(store: Store) -> None:
    results = await asyncio.gather(*(store.claim("nonce:abc", 60) for _ in range(8)))
    assert results.count(True) == 1
    assert await store.claim("nonce:short", 0.05)
    await asyncio.sleep(0.1)
    assert await store.claim("nonce:short", 0.05)


async def test_hits_count_every_concurrent_caller_within_one_window(store: Store) -> None:
    counts = await asyncio.gather(*(store.hit("webchat:new:203.0.113.9", 60) for _ in range(8)))
    assert sorted(h.count for h in counts) == list(range(1, 9))  # atomic: no two callers saw the same count
    assert all(0 < h.reset_in_s <= 60 for h in counts)
    assert (await store.hit("webchat:new:198.51.100.1", 60)).count == 1  # keys are counted apart


async def test_a_hit_window_starts_over_once_it_ends(store: Store) -> None:
    first = await store.hit("tickets:v1", 0.05)
    assert (first.count, (await store.hit("tickets:v1", 0.05)).count) == (1, 2)
    await asyncio.sleep(0.1)
    assert (await store.hit("tickets:v1", 0.05)).count == 1
    await asyncio.sleep(0.1)
    await store.purge_expired()  # an ended window is swept (SQLite) or expired (Redis); the next starts at 1
    assert (await store.hit("tickets:v1", 60)).count == 1


async def test_sweeping_drops_only_expired_claims(store: Store) -> None:
    assert await store.claim("nonce:live", 60)
    assert await store.lease("lease:live", "me", 60)
    assert await store.claim("nonce:gone", 0.05)
    await asyncio.sleep(0.1)
    assert await store.purge_expired() in (0, 1)  # Redis expired it on its own
    assert not await store.claim("nonce:live", 60)
    assert not await store.lease("lease:live", "someone else", 60)
    assert await store.claim("nonce:gone", 60)


async def test_sqlite_sweeps_expired_claims_in_batches(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    await store.open()
    try:
        for n in range(25):
            assert await store.claim(f"nonce:{n}", 0.01)
        assert await store.claim("nonce:live", 60)
        await asyncio.sleep(0.05)
        assert await store.purge_expired(limit=10) == 10
        assert await store.purge_expired(limit=10) == 10
        assert await store.purge_expired(limit=10) == 5
        assert await store.purge_expired(limit=10) == 0
        assert not await store.claim("nonce:live", 60)
    finally:
        await store.close()


async def test_secrets_expire_and_checkpoints_persist(store: Store) -> None:
    await store.set_secret("token", "abc", NOW + timedelta(minutes=5))
    assert await store.get_secret("token", NOW) == "abc"
    assert await store.get_secret("token", NOW + timedelta(minutes=6)) is None
    assert await store.get_checkpoint("imap:inbox") is None
    await store.set_checkpoint("imap:inbox", "42")
    await store.set_checkpoint("imap:inbox", "43")
    assert await store.get_checkpoint("imap:inbox") == "43"


async def test_a_new_message_sets_its_checkpoints_in_the_same_write_and_a_repeat_sets_none(store: Store) -> None:
    """A WeChat push's reply window opening is stored with the push's message: one write, never by a repeat."""
    conversation = await new_conversation(store)
    opening = Checkpoint(key="wechat:window:oa:u1:message", value="first", ttl_s=3600)
    _, created = await store.add_message(inbound(conversation, "m1"), checkpoints=[opening])
    assert created
    assert await store.get_checkpoint(opening.key) == "first"
    again = Checkpoint(key=opening.key, value="repeat", ttl_s=3600)
    _, created = await store.add_message(inbound(conversation, "m1"), checkpoints=[again])
    assert not created
    assert await store.get_checkpoint(opening.key) == "first"


async def test_checkpoint_with_a_ttl_is_gone_once_it_expires(store: Store) -> None:
    # Half a second to read it back: at 50 ms a loaded machine sometimes let it expire before the first read.
    await store.set_checkpoint("phone:call:c1:newCall", "state", ttl_s=0.5)
    assert await store.get_checkpoint("phone:call:c1:newCall") == "state"
    await asyncio.sleep(0.6)
    assert await store.get_checkpoint("phone:call:c1:newCall") is None
    assert await store.purge_expired() in (0, 1)  # Redis expired it on its own
    assert await store.get_checkpoint("phone:call:c1:newCall") is None
    await store.set_checkpoint("phone:call:c1:newCall", "again", ttl_s=60)  # a new write starts afresh
    assert await store.get_checkpoint("phone:call:c1:newCall") == "again"


async def test_checkpoint_without_a_ttl_is_kept_and_survives_the_sweep(store: Store) -> None:
    await store.set_checkpoint("imap:inbox", "42")
    await store.set_checkpoint("window:u1", "soon", ttl_s=0.05)
    await store.set_checkpoint("window:u1", "kept")  # overwritten without a TTL: the expiry goes too
    await asyncio.sleep(0.1)
    assert await store.purge_expired() == 0
    assert await store.get_checkpoint("imap:inbox") == "42"
    assert await store.get_checkpoint("window:u1") == "kept"


async def test_checkpoints_written_together_behave_as_each_written_alone(store: Store) -> None:
    await store.set_checkpoint("window:u2", "old", ttl_s=0.05)
    await store.set_checkpoints(
        [Checkpoint(key="window:u2", value="kept"), Checkpoint(key="passive:m1", value="1.5", ttl_s=0.05)]
    )
    assert await store.get_checkpoint("passive:m1") == "1.5"
    await asyncio.sleep(0.1)
    assert await store.get_checkpoint("passive:m1") is None  # its own TTL
    assert await store.get_checkpoint("window:u2") == "kept"  # overwritten without one: the expiry went too


async def test_sqlite_sweep_deletes_expired_checkpoints_with_the_claims(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    await store.open()
    try:
        for n in range(6):
            await store.set_checkpoint(f"call:{n}", "x", ttl_s=0.01)
            assert await store.claim(f"nonce:{n}", 0.01)
        await store.set_checkpoint("call:live", "x", ttl_s=60)
        await store.set_checkpoint("imap:inbox", "42")
        await asyncio.sleep(0.05)
        assert await store.purge_expired(limit=4) == 4  # claims first, in the same batch budget
        assert await store.purge_expired(limit=4) == 4  # the last two claims, then two checkpoints
        assert await store.purge_expired(limit=4) == 4
        assert await store.purge_expired(limit=4) == 0
    finally:
        await store.close()
    left = await asyncio.to_thread(_rows, tmp_path / "s.sqlite3", "SELECT key FROM checkpoints ORDER BY key")
    assert left == [("call:live",), ("imap:inbox",)]


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


async def test_sqlite_database_from_before_checkpoint_ttls_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"

    def old_database() -> None:  # the checkpoints table as earlier versions created it
        db = sqlite3.connect(path)
        db.executescript(
            "CREATE TABLE checkpoints (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
            "INSERT INTO checkpoints VALUES ('email:support:folder:INBOX', '{\"uidvalidity\": 1, \"last_uid\": 7}');"
        )
        db.commit()
        db.close()

    await asyncio.to_thread(old_database)
    for _ in range(2):  # the migration runs on every open and is a no-op the second time
        store = SqliteStore(path)
        await store.open()
        try:
            assert await store.get_checkpoint("email:support:folder:INBOX") == '{"uidvalidity": 1, "last_uid": 7}'
            await store.set_checkpoint("phone:call:c9:hangup", "x", ttl_s=0.01)
            await asyncio.sleep(0.05)
            assert await store.get_checkpoint("phone:call:c9:hangup") is None
            assert await store.purge_expired() == 1
        finally:
            await store.close()
    columns = await asyncio.to_thread(_rows, path, "SELECT name FROM pragma_table_info('checkpoints')")
    assert ("expires_at",) in columns


async def test_unhandled_inbound_messages_can_be_found_after_a_crash(store: Store) -> None:
    conversation = await new_conversation(store)
    first, _ = await store.add_message(inbound(conversation, "a"))
    second, _ = await store.add_message(inbound(conversation, "b"))
    await store.mark_handled(first.id)
    assert [m.id for m in await store.unhandled_messages()] == [second.id]
    reply = dataclasses.replace(
        inbound(conversation, "reply:b"), direction=Direction.OUTBOUND, author=Author.BOT, id="msg_reply"
    )
    await store.add_message(reply, answers=second.id)
    assert await store.unhandled_messages() == []


async def test_a_reply_and_the_conversation_it_updates_are_one_write(store: Store) -> None:
    conversation = await new_conversation(store)
    question, _ = await store.add_message(inbound(conversation, "q"))

    def reply(n: int) -> Message:
        return dataclasses.replace(
            inbound(conversation, f"reply:q{n}"), direction=Direction.OUTBOUND, author=Author.BOT, id=f"msg_r{n}"
        )

    updated = dataclasses.replace(conversation, consecutive_misses=1)
    stored, created = await store.add_message(reply(1), answers=question.id, saving=updated)
    assert created and stored.id == "msg_r1"
    saved = await store.get_conversation(conversation.id)
    assert saved == dataclasses.replace(updated, version=conversation.version + 1)
    assert await store.unhandled_messages() == []

    # A stale conversation: neither the reply nor the conversation is written.
    stale = dataclasses.replace(conversation, consecutive_misses=7)
    with pytest.raises(VersionConflict):
        await store.add_message(reply(2), events=[events.message_created(reply(2))], saving=stale)
    assert await store.get_conversation(conversation.id) == saved
    assert [m.id for m in await store.messages(conversation.id)] == [question.id, "msg_r1"]
    assert await store.events_after(0) == []

    # A duplicate reply (handling ran twice) writes nothing, not even a stale conversation.
    earlier, created = await store.add_message(dataclasses.replace(reply(1), id="msg_again"), saving=stale)
    assert not created and earlier.id == "msg_r1"
    assert await store.get_conversation(conversation.id) == saved


async def test_sqlite_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    first = SqliteStore(path)
    await first.open()
    conversation = await new_conversation(first)
    await first.add_message(inbound(conversation, "kept"))
    await first.close()
    second = SqliteStore(path)
    await second.open()
    try:
        _, created = await second.add_message(inbound(conversation, "kept"))
        assert not created
    finally:
        await second.close()


async def test_threads_are_separate_conversations_of_one_contact(store: Store) -> None:
    address = Identity(IdentityKind.EMAIL, "li@example.com")
    first = await store.conversation_for(
        address, channel=Channel.EMAIL, inbox="mail", name="Li", now=NOW, thread="<a@x>"
    )
    second = await store.conversation_for(
        address, channel=Channel.EMAIL, inbox="mail", name="Li", now=NOW, thread="<b@x>"
    )
    again = await store.conversation_for(
        address, channel=Channel.EMAIL, inbox="mail", name="Li", now=NOW, thread="<a@x>"
    )
    assert first.id == again.id != second.id
    assert first.contact_id == second.contact_id
    assert first.thread == "<a@x>"
    assert {c.id for c in await store.conversations_of(first.contact_id)} == {first.id, second.id}
    assert await store.find_conversation("mail", address, "<b@x>") == second


async def test_an_alias_joins_the_contact_that_owns_it(store: Store) -> None:
    union = Identity(IdentityKind.WECHAT_UNIONID, "union-1")
    first = await store.conversation_for(
        Identity(IdentityKind.WECHAT_OPENID, "openid-a"),
        channel=Channel.WECHAT,
        inbox="oa1",
        name=None,
        now=NOW,
        aliases=[union],
    )
    second = await store.conversation_for(
        Identity(IdentityKind.WECHAT_OPENID, "openid-b"),
        channel=Channel.WECHAT,
        inbox="oa2",
        name=None,
        now=NOW,
        aliases=[union],
    )
    assert first.contact_id == second.contact_id
    contact = await store.get_contact(first.contact_id)
    assert contact is not None and set(contact.identities) == {
        union,
        Identity(IdentityKind.WECHAT_OPENID, "openid-a"),
        Identity(IdentityKind.WECHAT_OPENID, "openid-b"),
    }


async def test_an_identity_claimed_by_two_contacts_is_flagged_not_merged(store: Store) -> None:
    phone = Identity(IdentityKind.PHONE, "+8613800000000")
    email = Identity(IdentityKind.EMAIL, "x@example.com")
    owner = await store.contact_for(phone, name=None, now=NOW)
    mailer = await store.contact_for(email, name=None, now=NOW)
    other = await store.conversation_for(
        email, channel=Channel.EMAIL, inbox="mail", name=None, now=NOW, aliases=[phone]
    )
    assert other.contact_id == mailer.id != owner.id
    flagged = await store.get_contact(mailer.id)
    assert flagged is not None and f"ambiguous:{phone}" in flagged.flags
    assert phone not in flagged.identities


async def test_add_identity_links_only_a_free_identity(store: Store) -> None:
    phone = Identity(IdentityKind.PHONE, "+8613911112222")
    wechat = await store.contact_for(Identity(IdentityKind.WECHAT_OPENID, "o-1"), name=None, now=NOW)
    assert await store.add_identity(wechat.id, phone)
    assert (await store.contact_for(phone, name=None, now=NOW)).id == wechat.id
    stranger = await store.contact_for(Identity(IdentityKind.EMAIL, "s@example.com"), name=None, now=NOW)
    assert not await store.add_identity(stranger.id, phone)


async def test_contact_flags_and_name_are_saved_but_identities_kept(store: Store) -> None:
    contact = await store.contact_for(visitor(9), name=None, now=NOW)
    await store.save_contact(dataclasses.replace(contact, name="张三", flags=("unsubscribed:wechat",), identities=()))
    saved = await store.get_contact(contact.id)
    assert saved is not None and saved.name == "张三" and saved.flags == ("unsubscribed:wechat",)
    assert saved.identities == contact.identities


async def test_delivery_is_recorded_with_its_events(store: Store) -> None:
    conversation = await new_conversation(store)
    sent = dataclasses.replace(inbound(conversation, "out-1"), direction=Direction.OUTBOUND, author=Author.AGENT)
    await store.add_message(sent)
    failure = Delivery(status=DeliveryStatus.FAILED, error="45015 response out of time limit", reason="window_closed")
    await store.record_delivery(sent.id, failure, [events.message_created(sent)])
    stored = await store.get_message(sent.id)
    assert stored is not None and stored.delivery is DeliveryStatus.FAILED and stored.delivery_error == "window_closed"
    assert len(await store.events_after(0)) == 1
    found = await store.find_message(
        channel=conversation.channel, inbox=conversation.inbox, direction=Direction.OUTBOUND, external_id="out-1"
    )
    assert found == stored


async def test_stored_external_ids_names_exactly_the_stored_ones_of_that_inbox_and_direction(store: Store) -> None:
    conversation = await new_conversation(store)
    await store.add_message(inbound(conversation, "a"))
    await store.add_message(inbound(conversation, "来电-2"))
    sent = dataclasses.replace(inbound(conversation, "c"), direction=Direction.OUTBOUND, author=Author.AGENT)
    await store.add_message(sent)
    wanted = ["a", "b", "c", "来电-2", *(f"x{i}" for i in range(1200))]  # more than one read's worth
    found = await store.stored_external_ids(
        channel=Channel.WEBCHAT, inbox="web", direction=Direction.INBOUND, external_ids=wanted
    )
    assert found == {"a", "来电-2"}
    other_inbox = await store.stored_external_ids(
        channel=Channel.WEBCHAT, inbox="other", direction=Direction.INBOUND, external_ids=wanted
    )
    assert other_inbox == set()
    assert (
        await store.stored_external_ids(
            channel=Channel.WEBCHAT, inbox="web", direction=Direction.INBOUND, external_ids=[]
        )
        == set()
    )


async def test_an_unsent_reply_waits_in_the_outbox_until_its_delivery_is_final(store: Store) -> None:
    conversation = await new_conversation(store)
    question, _ = await store.add_message(inbound(conversation, "q"))

    def outbound(key: str) -> Message:
        return dataclasses.replace(
            inbound(conversation, key), direction=Direction.OUTBOUND, author=Author.BOT, id=f"msg_{key}"
        )

    held, _ = await store.add_message(outbound("held"), outgoing=Outgoing(in_reply_to=question.id, hold_s=60))
    orphan, _ = await store.add_message(outbound("orphan"), outgoing=Outgoing(in_reply_to=question.id, hold_s=0))
    retried, _ = await store.add_message(outbound("retried"), outgoing=Outgoing(in_reply_to=None, hold_s=0))
    _, again = await store.add_message(outbound("orphan"), outgoing=Outgoing(in_reply_to=None, hold_s=0))
    assert not again
    await store.add_message(outbound("transcript-only"))  # stored, never to be sent (a passive welcome)
    await store.record_delivery(retried.id, Delivery(status=DeliveryStatus.RETRYABLE, error="451 try later"))
    # Whose sender died (the hold ran out): the orphan and the one still retrying, each once, with what it answers.
    taken = await store.take_outgoing(hold_s=60)
    assert sorted((m.id, answers) for m, answers in taken) == [(orphan.id, question.id), (retried.id, None)]
    assert dict((m.id, m) for m, _ in taken)[orphan.id] == orphan
    assert await store.take_outgoing(hold_s=60) == []  # the taker holds them now: another instance gets none
    await store.hold_outgoing(held.id, 0)
    await store.record_delivery(orphan.id, Delivery(status=DeliveryStatus.SENT))
    await store.record_delivery(retried.id, Delivery(status=DeliveryStatus.FAILED, error="550", reason="rejected"))
    await store.hold_outgoing(retried.id, 0)  # a final delivery took it out; a late hold puts nothing back
    assert [(m.id, answers) for m, answers in await store.take_outgoing(hold_s=0)] == [(held.id, question.id)]
    await store.record_delivery(held.id, Delivery(status=DeliveryStatus.QUEUED))
    assert await store.take_outgoing(hold_s=0) == []


async def test_a_framed_reply_is_stored_delivered_and_numbered_in_one_write(store: Store) -> None:
    """``add_framed_message``: the reply, its delivery and its frame at once (web chat), numbered after the frames
    already pushed, with nothing left in the outbox and the answered message marked handled. A repeat writes no
    second frame and no second event."""
    conversation = await new_conversation(store)
    question, _ = await store.add_message(inbound(conversation, "q"))
    assert await store.push_frame(conversation.address, {"type": "status"}) == 1
    reply = dataclasses.replace(
        inbound(conversation, "reply:q"), direction=Direction.OUTBOUND, author=Author.BOT, id="msg_reply"
    )
    frame = Frame(address=conversation.address, body={"type": "message", "message_id": reply.id})
    sent = Delivery(status=DeliveryStatus.SENT, external_id=reply.id)
    stored, seq = await store.add_framed_message(
        reply, [events.message_created(reply)], frame=frame, delivered=sent, answers=question.id
    )
    assert seq == 2 and stored == reply
    assert [(f.seq, f.body) for f in await store.frames_after(conversation.address, 1)] == [(2, frame.body)]
    kept = await store.get_message(reply.id)
    assert kept is not None and kept.delivery is DeliveryStatus.SENT
    assert await store.unhandled_messages() == []
    assert await store.take_outgoing(hold_s=0) == []
    again, none = await store.add_framed_message(
        dataclasses.replace(reply, id="msg_other"), [], frame=frame, delivered=sent, answers=question.id
    )
    assert none is None and again.id == reply.id
    assert await store.last_frame_seq(conversation.address) == 2
    assert [e.type for e in await store.events_after(0)] == [EventType.MESSAGE_CREATED]  # the reply's, once


async def test_quarantine_keeps_raw_input_once_until_replayed(store: Store) -> None:
    item = QuarantinedItem(
        id="q-1", channel=Channel.EMAIL, inbox="mail", reason="no MIME boundary", raw=b"\xff\xfebroken", received_at=NOW
    )
    assert await store.quarantine(item)
    assert not await store.quarantine(item)
    assert await store.quarantined() == [item]
    assert await store.get_quarantined("q-1") == item
    await store.mark_replayed("q-1")
    assert await store.quarantined() == []
    replayed = await store.get_quarantined("q-1")
    assert replayed is not None and replayed.replayed and replayed.raw == b"\xff\xfebroken"


async def test_a_lease_is_held_by_one_holder_renewed_by_it_and_taken_over_after_expiry(store: Store) -> None:
    results = await asyncio.gather(*(store.lease("imap:mail", f"i{n}", 60) for n in range(6)))
    assert results.count(True) == 1
    holder = f"i{results.index(True)}"
    assert await store.lease("imap:mail", holder, 60)  # renewing is fine
    other = "i9"
    assert not await store.lease("imap:mail", other, 60)
    await store.release("imap:mail", other)  # not the holder: nothing happens
    assert not await store.lease("imap:mail", other, 60)
    await store.release("imap:mail", holder)
    assert await store.lease("imap:mail", other, 0.05)
    await asyncio.sleep(0.1)
    assert await store.lease("imap:mail", holder, 60)  # the other's lease ran out


async def test_dead_letters_are_kept_once_listed_oldest_first_and_removed_once(store: Store) -> None:
    conversation = await new_conversation(store)
    await store.append_events([events.message_created(inbound(conversation, "dl"))])
    (event,) = await store.events_after(0)
    letters = [
        DeadLetter(id=f"dl-{n}", subscription=sub, event=event, attempts=3, error="HTTP 500", failed_at=NOW)
        for n, sub in enumerate(["crm", "erp", "crm"])
    ]
    for letter in letters:
        assert await store.add_dead_letter(letter)
    assert not await store.add_dead_letter(letters[0])
    assert await store.dead_letters() == letters
    assert await store.dead_letters(subscription="crm") == [letters[0], letters[2]]
    assert await store.dead_letters(limit=1) == [letters[0]]
    assert await store.get_dead_letter("dl-1") == letters[1]
    removed = await asyncio.gather(*(store.remove_dead_letter("dl-1") for _ in range(4)))
    assert removed.count(True) == 1
    assert await store.get_dead_letter("dl-1") is None
    assert [d.id for d in await store.dead_letters()] == ["dl-0", "dl-2"]


async def test_gauges_count_tickets_quarantine_and_outbox_as_stored(store: Store) -> None:
    empty = await store.gauges(since=NOW)
    assert empty.tickets_by_status == {} and empty.quarantine_pending == 0 and empty.outbox_size == 0
    assert empty.outbox_oldest is None
    first = await new_conversation(store, 1)
    await store.create_ticket(draft_ticket(first), first, lambda t, c: [])
    second = await new_conversation(store, 2)
    ticket, _ = await store.create_ticket(draft_ticket(second), second, lambda t, c: [])
    await store.update_ticket(dataclasses.replace(ticket, status=TicketStatus.RESOLVED))
    for n, at in enumerate((NOW - timedelta(hours=2), NOW, NOW + timedelta(minutes=1))):
        await store.quarantine(
            QuarantinedItem(id=f"q-{n}", channel=Channel.EMAIL, inbox="mail", reason="bad", raw=b"x", received_at=at)
        )
    await store.mark_replayed("q-2")
    reply = dataclasses.replace(inbound(first, "r1"), direction=Direction.OUTBOUND, author=Author.BOT)
    reply = dataclasses.replace(reply, created_at=NOW - timedelta(minutes=5))
    await store.add_message(reply, outgoing=Outgoing(in_reply_to=None, hold_s=60))
    later = dataclasses.replace(reply, id="msg_later", external_id="r2", created_at=NOW)
    await store.add_message(later, outgoing=Outgoing(in_reply_to=None, hold_s=60))

    gauges = await store.gauges(since=NOW - timedelta(minutes=30))
    assert gauges.tickets_by_status == {"new": 1, "resolved": 1}
    assert (gauges.quarantine_pending, gauges.quarantined_since) == (2, 1)
    assert gauges.outbox_size == 2 and gauges.outbox_oldest == NOW - timedelta(minutes=5)


@pytest.mark.parametrize("raw", ["<xml>short</xml>", "x" * 20_000])
async def test_a_message_written_with_its_created_event_reads_back_as_it_was(store: Store, raw: str) -> None:
    """The row's JSON is taken from the encoding its message.created event made (small raws) or made afresh
    (large ones): either way the message and its event read back as written."""
    conversation = await new_conversation(store)
    message = dataclasses.replace(inbound(conversation, "m-raw"), raw=raw, meta={"k": "v", "n": 1})
    stored, created = await store.add_message(message, [events.message_created(message)])
    assert created and stored == message
    assert await store.get_message(message.id) == message
    (event,) = [e for e in await store.events_after(0) if e.idempotency_key == f"message.created:{message.id}"]
    assert "raw" not in event.data["message"] and event.data["message"]["meta"] == {"k": "v", "n": 1}
