"""A voicemail the bot can answer: the answer goes to the caller's written channel once, the ticket says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from connectors.phone.cdr import CdrFormat
from connectors.phone.connector import PhoneConnector
from core.model import Author, Conversation, ConversationStatus, Identity, IdentityKind, Message, TicketStatus
from gateway.app import GATEWAY
from gateway.intake import BotSetup
from tests.conftest import ChatClient, Gateway, make_config, started
from tests.phone.conftest import call_message, cti, phone_inbox, settled, store_of
from tests.phone.rows import fs_json

CALLER = "13900139000"  # the caller of the FreeSWITCH JSON rows too
E164 = "+8613900139000"
FAQ = {"enabled": True, "channels": ["wechat", "webchat"]}


@pytest.fixture
async def gw(tmp_path: Path, bot_setup: BotSetup) -> AsyncIterator[Gateway]:
    inboxes = [
        {"name": "web", "channel": "webchat", "allowed_origins": ["*"]},
        phone_inbox("tel", voicemail_faq=FAQ, cdr={"format": "freeswitch-json"}),
        phone_inbox("closing", voicemail_faq={**FAQ, "resolve": True}),
    ]
    async with started(make_config(tmp_path, inboxes=inboxes), bot_setup) as gateway:
        yield gateway


async def visitor_with_phone(gw: Gateway) -> tuple[ChatClient, Conversation]:
    """A web chat visitor who already chatted with the bot, and whose contact has the caller's number."""
    chat = await gw.chat()
    _, reply = await chat.say("怎么开发票")
    assert reply["author"] == "bot"
    visitor = chat.token.split(".")[1]
    conversation = await store_of(gw).find_conversation("web", Identity(IdentityKind.WEBCHAT_VISITOR, visitor))
    assert conversation is not None
    assert await store_of(gw).add_identity(conversation.contact_id, Identity(IdentityKind.PHONE, E164))
    return chat, conversation


async def voicemail(gw: Gateway, inbox: str, call_id: str, transcript: str, *, hangups: int = 1) -> None:
    base = {"direction": "in", "from": CALLER, "to": "4008001234", "callId": call_id}
    await cti(gw, inbox, {**base, "event": "newCall"})
    await cti(gw, inbox, {**base, "event": "answer", "user": "voicemail"})
    hangup = {**base, "event": "hangup", "cause": "normalClearing", "voicemailTranscript": transcript}
    await asyncio.gather(*(cti(gw, inbox, hangup, form=i % 2 == 1) for i in range(hangups)))
    await settled(gw)


async def bot_messages(gw: Gateway, conversation: Conversation) -> list[Message]:
    return [m for m in await store_of(gw).messages(conversation.id) if m.author is Author.BOT]


async def no_more_messages(chat: ChatClient, wait_s: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await chat.expect("message", wait_s=wait_s)


async def ticket_detail(gw: Gateway, call: Message) -> dict[str, Any]:
    conversation = await store_of(gw).get_conversation(call.conversation_id)
    assert conversation is not None and conversation.ticket_id is not None
    status, detail = await gw.api("GET", f"/tickets/{conversation.ticket_id}")
    assert status == 200
    return dict(detail)


async def test_voicemail_matching_a_faq_is_answered_once_on_web_chat_and_the_ticket_shows_it(gw: Gateway) -> None:
    chat, web = await visitor_with_phone(gw)
    await voicemail(gw, "tel", "vm1", "我想退款", hangups=2)  # the PBX delivers the hangup twice
    answer = await chat.expect("message")
    assert answer["author"] == "bot" and "申请退款" in answer["text"]
    await no_more_messages(chat)
    answers = [m for m in await bot_messages(gw, web) if m.meta.get("faq_id") == "refund"]
    assert len(answers) == 1

    call = await call_message(gw, "tel", "vm1")
    assert call is not None and call.meta["transcript"] == "我想退款"
    assert answers[0].external_id == f"voicemail:{call.id}"
    ticket = await ticket_detail(gw, call)
    assert ticket["status"] == "new", "agents still call back: the ticket stays open"
    assert ticket["handoff_reason"] == "voicemail" and "bot-answered" in ticket["tags"]
    assert [(t["query"], t["outcome"]) for t in ticket["faq_tries"]] == [("我想退款", "answer")]
    notes = [m for m in ticket["messages"] if m["author"] == "system"]
    assert len(notes) == 1
    assert notes[0]["meta"]["channel"] == "webchat" and notes[0]["meta"]["conversation_id"] == web.id
    assert "webchat" in notes[0]["text"] and "申请退款" in notes[0]["text"]
    await chat.close()


async def test_voicemail_from_a_cdr_import_is_answered_once_even_when_reimported(gw: Gateway) -> None:
    chat, web = await visitor_with_phone(gw)
    phone = gw.server.app[GATEWAY].connectors["tel"]
    assert isinstance(phone, PhoneConnector)
    row = fs_json(last_app="voicemail", voicemail_transcription="我想退款").encode()
    receive = gw.server.app[GATEWAY].intake.receive
    for _ in range(2):
        await phone.import_cdr(row, CdrFormat.FREESWITCH_JSON, receive)
        await settled(gw)
    answer = await chat.expect("message")
    assert answer["author"] == "bot" and "申请退款" in answer["text"]
    await no_more_messages(chat)
    assert len([m for m in await bot_messages(gw, web) if m.meta.get("faq_id") == "refund"]) == 1
    call = await call_message(gw, "tel", "9f1c1f4e-1111-4c6b-8a5e-000000000001")
    assert call is not None
    ticket = await ticket_detail(gw, call)
    assert [m["author"] for m in ticket["messages"]] == ["customer", "system"]
    await chat.close()


async def test_voicemail_matching_nothing_sends_nothing_and_the_ticket_is_as_before(gw: Gateway) -> None:
    chat, web = await visitor_with_phone(gw)
    before = await bot_messages(gw, web)
    await voicemail(gw, "tel", "vm2", "今天天气怎么样")
    await no_more_messages(chat)
    assert await bot_messages(gw, web) == before
    call = await call_message(gw, "tel", "vm2")
    assert call is not None
    ticket = await ticket_detail(gw, call)
    assert ticket["status"] == "new" and set(ticket["tags"]) == {"phone", "voicemail"}
    assert ticket["faq_tries"] == [] and [m["author"] for m in ticket["messages"]] == ["customer"]
    await chat.close()


async def test_voicemail_of_a_caller_without_a_written_channel_goes_on_the_ticket_only(gw: Gateway) -> None:
    await voicemail(gw, "tel", "vm3", "我想退款")
    call = await call_message(gw, "tel", "vm3")
    assert call is not None
    ticket = await ticket_detail(gw, call)
    assert ticket["faq_tries"] == [] and [m["author"] for m in ticket["messages"]] == ["customer"]
    assert "我想退款" in ticket["messages"][0]["text"]


async def test_web_chat_held_by_an_agent_gets_no_bot_answer(gw: Gateway) -> None:
    chat, web = await visitor_with_phone(gw)
    _, reply = await chat.say("转人工")
    assert reply["author"] == "bot"
    held = await store_of(gw).get_conversation(web.id)
    assert held is not None and held.status is ConversationStatus.WAITING_FOR_AGENT
    before = await bot_messages(gw, web)
    await voicemail(gw, "tel", "vm4", "我想退款")
    await no_more_messages(chat)
    assert await bot_messages(gw, web) == before
    await chat.close()


async def test_inbox_that_resolves_answered_voicemails_resolves_the_ticket_it_opened(gw: Gateway) -> None:
    chat, _ = await visitor_with_phone(gw)
    await voicemail(gw, "closing", "vm5", "我想退款")
    answer = await chat.expect("message")
    assert "申请退款" in answer["text"]
    call = await call_message(gw, "closing", "vm5")
    assert call is not None
    ticket = await ticket_detail(gw, call)
    assert ticket["status"] == str(TicketStatus.RESOLVED)
    conversation = await store_of(gw).get_conversation(call.conversation_id)
    assert conversation is not None and conversation.status is ConversationStatus.RESOLVED
    await chat.close()
