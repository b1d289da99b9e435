"""Intake: exactly once under repeats, and nothing lost when the process dies between storing and answering."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from core.model import Author, Channel, Identity, IdentityKind, InboundMessage
from core.store.sqlite import SqliteStore
from gateway.app import GATEWAY
from gateway.intake import MAX_FAQ_TRIES, BotSetup
from tests.conftest import Gateway, make_config, started
from tests.contract.test_store_contract import inbound as stored_inbound


def inbound(visitor: str, external_id: str, text: str) -> InboundMessage:
    now = datetime.now(UTC)
    return InboundMessage(
        channel=Channel.WEBCHAT,
        inbox="web",
        external_id=external_id,
        sender=Identity(IdentityKind.WEBCHAT_VISITOR, visitor),
        text=text,
        received_at=now,
    )


async def _settle(gw: Gateway) -> None:
    tasks = gw.server.app[GATEWAY].tasks
    await tasks.drain(10)


async def test_same_message_delivered_concurrently_gives_one_message_and_one_bot_reply(gateway: Gateway) -> None:
    intake = gateway.server.app[GATEWAY].intake
    store = gateway.server.app[GATEWAY].store
    visitor = "ab" * 16
    results = await asyncio.gather(*(intake.receive(inbound(visitor, f"{visitor}:m1", "我想退款")) for _ in range(5)))
    assert [r.duplicate for r in results].count(False) == 1
    assert len({r.message.id for r in results}) == 1
    await _settle(gateway)
    messages = await store.messages(results[0].message.conversation_id)
    assert [m.author for m in messages] == [Author.CUSTOMER, Author.BOT]


async def test_two_sockets_of_one_visitor_sending_the_same_id_store_it_once(gateway: Gateway) -> None:
    first = await gateway.chat()
    second = await gateway.chat(token=first.token)
    frame = {"type": "message", "id": "dup-1", "text": "how do I reset my password"}
    await asyncio.gather(first.ws.send_json(frame), second.ws.send_json(frame))
    acks = [await first.expect("ack"), await second.expect("ack")]
    assert sorted(a["duplicate"] for a in acks) == [False, True]
    assert acks[0]["message_id"] == acks[1]["message_id"]
    reply = await first.expect("message")
    assert reply["author"] == "bot"
    await _settle(gateway)
    store = gateway.server.app[GATEWAY].store
    stored = await store.get_message(acks[0]["message_id"])
    assert stored is not None
    assert [m.author for m in await store.messages(stored.conversation_id)] == [Author.CUSTOMER, Author.BOT]


async def test_message_stored_before_a_crash_is_answered_after_restart(tmp_path: Path, bot_setup: BotSetup) -> None:
    config = make_config(tmp_path)
    # The first life stores a message and dies before the bot answers it.
    async with started(config, bot_setup) as gw:
        chat = await gw.chat()
        token, visitor = chat.token, chat.token.split(".")[1]
        await chat.close()
    store = SqliteStore(config.data_path / "huiliu.sqlite3")
    await store.open()
    try:
        now = datetime.now(UTC)
        address = Identity(IdentityKind.WEBCHAT_VISITOR, visitor)
        conversation = await store.conversation_for(address, channel=Channel.WEBCHAT, inbox="web", name=None, now=now)
        await store.add_message(stored_inbound(conversation, f"{visitor}:lost", "怎么开发票"))
        assert len(await store.unhandled_messages()) == 1
    finally:
        await store.close()

    # The second life finds it, answers it once, and the visitor gets the answer on resume.
    async with started(config, bot_setup) as gw:
        await gw.server.app[GATEWAY].tasks.drain(10)
        assert await gw.server.app[GATEWAY].store.unhandled_messages() == []
        chat = await gw.chat(token=token, last_seq=0)
        answer = await chat.expect("message")
        assert answer["author"] == "bot" and "发票" in answer["text"]


async def test_a_long_bot_chat_keeps_only_the_latest_tries_on_the_conversation(gateway: Gateway) -> None:
    chat = await gateway.chat()
    for n in range(MAX_FAQ_TRIES + 5):
        await chat.say("我想退款" if n % 2 else "怎么开发票")
    _, last = await chat.say("转人工")
    await chat.expect("status")
    status, body = await gateway.api("GET", "/tickets")
    ticket = body["tickets"][0]
    assert len(ticket["faq_tries"]) == MAX_FAQ_TRIES
    assert ticket["faq_tries"][-1]["query"] == "转人工"
    assert last["author"] == "bot"
