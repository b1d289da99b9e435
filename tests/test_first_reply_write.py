"""SQLite's one write for a message and the bot's reply to it (``FirstWrite.reply``, issue 23): both or neither,
the message handled, the reply with its delivery and its frame, and nothing for a repeat delivery. Redis says it
cannot (two scripts), and intake then never asks it to."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from core import events
from core.model import Author, Channel, Conversation, Delivery, DeliveryStatus, inline_delivery, outbound_message
from core.store.redis import RedisStore
from core.store.sqlite import SqliteStore
from core.store.types import FirstReply, FirstWrite, Frame
from tests.contract.test_store_contract import NOW, inbound, visitor


def _first(conversation: Conversation, external_id: str, *, framed: bool, numbers: list[int]) -> FirstWrite:
    message = inbound(conversation, external_id, "怎么开发票")
    reply = outbound_message(conversation, author=Author.BOT, text="发票…", at=NOW, external_id=f"reply:{message.id}")
    frame = Frame(address=conversation.address, body={"type": "message", "text": reply.text}) if framed else None
    delivered = Delivery(status=DeliveryStatus.QUEUED, external_id=reply.id) if framed else inline_delivery(message.id)
    return FirstWrite(
        message=message,
        events=(events.message_created(message),),
        reply=FirstReply(
            message=reply,
            events=(events.message_created(reply),),
            saving=dataclasses.replace(conversation, consecutive_misses=0, updated_at=NOW),
            delivered=delivered,
            frame=frame,
            numbered=numbers.append if framed else None,
        ),
    )


@pytest.mark.parametrize("framed", [False, True])
async def test_a_message_and_its_reply_are_one_write_and_a_repeat_writes_neither(tmp_path: Path, framed: bool) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    await store.open()
    try:
        numbers: list[int] = []
        writes: list[FirstWrite] = []

        def build(conversation: Conversation) -> FirstWrite:
            writes.append(_first(conversation, "m1", framed=framed, numbers=numbers))
            return writes[-1]

        conversation, stored = await store.receive_first(
            visitor(1), channel=Channel.WEBCHAT, inbox="web", name=None, now=NOW, build=build
        )
        assert stored is not None and stored[1]
        reply = writes[0].reply
        assert reply is not None
        assert [m.id for m in await store.messages(conversation.id)] == [stored[0].id, reply.message.id]
        assert await store.unhandled_messages() == []  # the message is handled: its answer is stored
        kept = await store.get_message(reply.message.id)
        assert kept is not None and kept.delivery == reply.delivered.status
        saved = await store.get_conversation(conversation.id)
        assert saved is not None and saved.version == conversation.version + 1
        created = [e.data["message"]["id"] for e in await store.events_after(0, limit=100)]
        assert created == [stored[0].id, reply.message.id]
        if framed:
            assert numbers == [1] and [f.seq for f in await store.frames_after(visitor(1), 0)] == [1]
        assert await store.take_outgoing(hold_s=0) == []  # delivered as it was stored: nothing in the outbox

        _, repeat = await store.receive_first(
            visitor(1), channel=Channel.WEBCHAT, inbox="web", name=None, now=NOW, build=build
        )
        assert repeat == (stored[0], False)
        assert len(await store.messages(conversation.id)) == 2  # the repeat's reply was not written
        assert numbers == ([1] if framed else [])
    finally:
        await store.close()


def test_redis_says_it_cannot_write_a_reply_with_its_message() -> None:
    assert SqliteStore.replies_in_first_write and not RedisStore.replies_in_first_write
