"""Replies inside WeChat's rules: passive within the budget, customer-service API after it, window and quota."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.wechat.api import WechatApi
from connectors.wechat.connector import unsubscribed_flag
from connectors.wechat.parse import read_xml
from core.model import Conversation, Identity, IdentityKind, Message, OutboundReply
from core.store import StoreUnavailable
from gateway.app import GATEWAY
from gateway.intake import BotSetup
from tests.conftest import Gateway, make_config, started
from tests.wechat.conftest import APP_ID, APP_SECRET, WechatClient, event_xml, inbox, text_xml, wechat_config
from tests.wechat.fake_api import QUOTA_USED, UNSUBSCRIBED, WINDOW_CLOSED, FakeWechat


def openid_of(n: int) -> str:
    return f"oUser{n:04d}"


async def eventually(check: Any, wait_s: float = 5.0) -> None:
    deadline = time.monotonic() + wait_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def transcript(gw: Gateway, box: str, openid: str) -> list[Message]:
    store = gw.server.app[GATEWAY].store
    conversation = await store.find_conversation(box, Identity(IdentityKind.WECHAT_OPENID, openid))
    assert conversation is not None
    return await store.messages(conversation.id)


async def wechat_tickets(gw: Gateway) -> list[dict[str, Any]]:
    status, body = await gw.api("GET", "/tickets", params={"channel": "wechat", "limit": "100"})
    assert status == 200
    tickets: list[dict[str, Any]] = body["tickets"]
    return tickets


async def handed_off(gw: Gateway, client: WechatClient, openid: str, msg_id: str) -> dict[str, Any]:
    """The customer asks for a human: the handoff reply goes back passively and a ticket opens."""
    pushed = await client.push(text_xml("转人工", openid=openid, msg_id=msg_id))
    assert pushed.status == 200 and read_xml(pushed.text)["MsgType"] == "text"
    await gw.server.app[GATEWAY].tasks.drain(5)  # the ticket opens right after the reply went out
    (ticket,) = [t for t in await wechat_tickets(gw) if t["inbox"] == client.inbox]
    return ticket


async def agent_reply(gw: Gateway, ticket: dict[str, Any], text: str, key: str) -> dict[str, Any]:
    status, body = await gw.api(
        "POST",
        f"/tickets/{ticket['id']}/replies",
        json={"text": text, "agent": "wang"},
        headers={"Idempotency-Key": key},
    )
    assert status in (200, 201), body
    result: dict[str, Any] = body
    return result


async def failed_events(gw: Gateway) -> list[dict[str, Any]]:
    _, body = await gw.api("GET", "/events", params={"after": "0", "limit": "1000"})
    return [e for e in body["events"] if e["type"] == "message.delivery_failed"]


async def test_bot_answer_within_budget_goes_back_as_passive_reply(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    config = wechat_config(tmp_path, fake_wechat, inbox(reply_budget_s=3))
    async with started(config, bot_setup) as gw:
        pushed = await WechatClient(gw).push(text_xml("怎么开发票", openid="oP1", msg_id="10"))
        reply = read_xml(pushed.text)
        invoice = bot_setup.index.entry("invoice")
        assert invoice is not None
        assert reply["ToUserName"] == "oP1" and reply["FromUserName"] == "gh_huiliu"
        assert reply["Content"] == invoice.answer.strip() or invoice.answer.strip() in reply["Content"]
        assert fake_wechat.send_calls == 0  # nothing went through the API
        texts = [m.text for m in await transcript(gw, "oa", "oP1")]
        assert texts[0] == "怎么开发票" and "发票" in texts[1]


async def test_a_passive_reply_is_stored_as_sent_before_it_is_written_so_a_kill_leaves_it_to_wechats_retry(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply a push's response carries is stored as sent in the write that stores it: when the response is
    written there is nothing in the outbox for a restarted gateway to send again through the customer-service
    API (which doubled replies after kills), and no delivery record left to write. Had the process died before
    the write, WeChat (no answer) retries the push, and the retry's response carries the stored reply."""
    config = wechat_config(tmp_path, fake_wechat, inbox(reply_budget_s=3))
    async with started(config, bot_setup) as gw:
        connector = gw.server.app[GATEWAY].connectors["oa"]
        store = gw.server.app[GATEWAY].store
        seen_at_write: list[tuple[str | None, int]] = []
        write = connector._write_passive  # type: ignore[attr-defined]

        async def observed(*args: Any, **kwargs: Any) -> Any:
            _, reply = await transcript(gw, "oa", "oStored")
            seen_at_write.append((reply.delivery, (await store.gauges(since=datetime.now(UTC))).outbox_size))
            return await write(*args, **kwargs)

        monkeypatch.setattr(connector, "_write_passive", observed)
        xml = text_xml("怎么开发票", openid="oStored", msg_id="13")
        pushed = await WechatClient(gw).push(xml)
        assert read_xml(pushed.text)["MsgType"] == "text"
        assert seen_at_write == [("sent", 0)]  # before the write: sent, and nothing to resend
        retried = await WechatClient(gw).push(xml)  # as if the response had been lost with the process
        assert read_xml(retried.text)["Content"] == read_xml(pushed.text)["Content"]
        await gw.server.app[GATEWAY].tasks.drain(5)
        assert fake_wechat.send_calls == 0


async def test_a_passive_reply_resent_after_a_kill_waits_out_wechats_retries_and_is_not_sent_twice(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    """Killed after the passive reply went out but before its delivery was recorded, the restarted gateway
    resends the reply from the outbox. WeChat retries an unanswered push within ~15 s: until then the resend
    waits; with no retry by then the customer has the reply, and the customer-service API is not called (it
    doubled 2/2000 replies on SQLite, up to 12/2000 on Redis). Gateways now store such a reply as sent before
    the write (the test above); a reply left in the outbox with this mark by an earlier version (a rolling
    upgrade) is still resent this way."""
    config = wechat_config(tmp_path, fake_wechat, inbox(reply_budget_s=3))
    async with started(config, bot_setup) as gw:
        pushed = await WechatClient(gw).push(text_xml("怎么开发票", openid="oKill", msg_id="12"))
        assert read_xml(pushed.text)["MsgType"] == "text"
        gateway = gw.server.app[GATEWAY]
        store = gateway.store
        push, reply = await transcript(gw, "oa", "oKill")
        await store.set_checkpoint(f"wechat:passive:oa:{push.id}", repr(time.time()))  # as an earlier version
        conversation = await store.get_conversation(reply.conversation_id)
        assert conversation is not None
        resend = gateway.connectors["oa"].send
        # As the restarted process finds it: the write began just now, the delivery was never recorded.
        outbound = OutboundReply(
            message=reply, address=conversation.address, conversation=conversation, in_reply_to=push.id
        )
        waiting = await resend(outbound)
        assert waiting.status == "retryable" and "retries" in (waiting.error or "")
        await store.set_checkpoint(f"wechat:passive:oa:{push.id}", repr(time.time() - 30))  # the window passed
        delivered = await resend(outbound)
        assert delivered.status == "sent" and delivered.external_id == f"passive:{push.id}"
        assert fake_wechat.send_calls == 0  # the customer got it once, in the push's response


async def test_slow_bot_answers_success_at_once_then_through_customer_service_api(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer that needs the store (a status question: the customer's tickets are read) and comes after the
    reply budget goes through the customer-service API. A FAQ answer needs no wait: it is written with the push
    (tests/wechat/test_answer_at_once.py)."""
    config = wechat_config(tmp_path, fake_wechat, inbox(reply_budget_s=0.2))
    async with started(config, bot_setup) as gw:
        intake = gw.server.app[GATEWAY].intake
        gate = asyncio.Event()
        handle = intake.handle

        async def slow_handle(message: Message, known: Conversation | None = None) -> None:
            await gate.wait()  # the bot takes longer than the budget
            await handle(message, known)

        monkeypatch.setattr(intake, "handle", slow_handle)
        started_at = time.monotonic()
        pushed = await WechatClient(gw).push(text_xml("我的工单进度怎么样了", openid="oSlow", msg_id="11"))
        assert (pushed.status, pushed.text) == (200, "success")
        assert time.monotonic() - started_at < 2
        gate.set()
        await eventually(lambda: len(fake_wechat.sent) == 1)
        (sent,) = fake_wechat.sent
        _, reply = await transcript(gw, "oa", "oSlow")
        assert reply.meta["outcome"] == "status"
        assert sent["touser"] == "oSlow" and sent["msgtype"] == "text" and sent["text"]["content"] == reply.text
        # A later delivery of the same push gets "received" only: the reply already went by the API.
        again = await WechatClient(gw).push(text_xml("我的工单进度怎么样了", openid="oSlow", msg_id="11"))
        assert (again.status, again.text) == (200, "success") and len(fake_wechat.sent) == 1


async def test_three_concurrent_deliveries_make_one_message_one_reply_one_ticket(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    config = wechat_config(tmp_path, fake_wechat, inbox(reply_budget_s=3))
    async with started(config, bot_setup) as gw:
        client = WechatClient(gw)
        xml = text_xml("转人工", openid="oRetry", msg_id="6200000000000000001")
        results = await asyncio.gather(*(client.push(xml) for _ in range(3)))  # fresh nonce each, as WeChat retries
        assert [r.status for r in results] == [200, 200, 200]
        passive = [r for r in results if r.text != "success"]
        assert len(passive) == 1 and read_xml(passive[0].text)["ToUserName"] == "oRetry"
        await gw.server.app[GATEWAY].tasks.drain(5)
        messages = await transcript(gw, "oa", "oRetry")
        assert [(m.direction, m.author) for m in messages] == [("inbound", "customer"), ("outbound", "bot")]
        assert len(await wechat_tickets(gw)) == 1
        assert fake_wechat.send_calls == 0


async def test_subscribe_sends_the_welcome_and_unsubscribe_marks_the_contact(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    config = wechat_config(tmp_path, fake_wechat, inbox(welcome="欢迎关注汇流！/ Welcome!"))
    async with started(config, bot_setup) as gw:
        client = WechatClient(gw)
        xml = event_xml("subscribe", openid="oSub", key="qrscene_42", created=1700000000)
        first = await client.push(xml)
        assert read_xml(first.text)["Content"] == "欢迎关注汇流！/ Welcome!"
        # WeChat retries only a push it got no answer to: the retry carries the same welcome, nothing new is
        # stored, and nothing goes through the customer-service API.
        for _ in range(2):
            assert read_xml((await client.push(xml)).text)["Content"] == "欢迎关注汇流！/ Welcome!"
        assert fake_wechat.send_calls == 0
        messages = await transcript(gw, "oa", "oSub")
        assert [(m.kind, m.author) for m in messages] == [("event", "customer"), ("text", "bot")]
        assert messages[0].meta["scene"] == "42"
        store = gw.server.app[GATEWAY].store
        identity = Identity(IdentityKind.WECHAT_OPENID, "oSub")
        assert (await client.push(event_xml("unsubscribe", openid="oSub", created=1700000100))).text == "success"
        contact = await store.contact_for(identity, name=None, now=datetime.now(UTC))
        assert unsubscribed_flag("oa") in contact.flags
        await client.push(event_xml("subscribe", openid="oSub", created=1700000200))
        contact = await store.contact_for(identity, name=None, now=datetime.now(UTC))
        assert unsubscribed_flag("oa") not in contact.flags


async def test_menu_click_is_answered_with_its_faq_entry(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    config = wechat_config(
        tmp_path, fake_wechat, inbox(reply_budget_s=3, menu_faq={"MENU_INVOICE": "invoice", "MENU_GONE": "nope"})
    )
    async with started(config, bot_setup) as gw:
        client = WechatClient(gw)
        pushed = await client.push(event_xml("CLICK", openid="oClick", key="MENU_INVOICE"))
        invoice = bot_setup.index.entry("invoice")
        assert invoice is not None and invoice.answer.strip() in read_xml(pushed.text)["Content"]
        # A key mapped to an entry that does not exist is still stored, as a plain click.
        gone = await client.push(event_xml("CLICK", openid="oClick2", key="MENU_GONE"))
        assert gone.text == "success"
        (message,) = await transcript(gw, "oa", "oClick2")
        assert message.kind == "event" and "MENU_GONE" in message.text


async def test_same_unionid_on_two_official_accounts_is_one_contact(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    config = wechat_config(tmp_path, fake_wechat, inbox("oa"), inbox("oa2"))
    async with started(config, bot_setup) as gw:
        union = "<UnionId><![CDATA[oUnion77]]></UnionId>"
        await WechatClient(gw).push(text_xml("你好", openid="oFromA", msg_id="1", extra=union))
        await WechatClient(gw, inbox="oa2").push(text_xml("你好", openid="oFromB", msg_id="1", extra=union))
        store = gw.server.app[GATEWAY].store
        a = await store.find_conversation("oa", Identity(IdentityKind.WECHAT_OPENID, "oFromA"))
        b = await store.find_conversation("oa2", Identity(IdentityKind.WECHAT_OPENID, "oFromB"))
        assert a is not None and b is not None and a.id != b.id
        assert a.contact_id == b.contact_id


async def test_agent_reply_goes_out_through_customer_service_api_with_delivery_recorded(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    async with started(wechat_config(tmp_path, fake_wechat), bot_setup) as gw:
        ticket = await handed_off(gw, WechatClient(gw), "oAgent", "20")
        body = await agent_reply(gw, ticket, "您好，我是客服小王。", "k1")
        assert body["delivery"] == "sent" and body["message"]["delivery"] == "sent"
        assert fake_wechat.sent == [
            {"touser": "oAgent", "msgtype": "text", "text": {"content": "您好，我是客服小王。"}}
        ]
        again = await agent_reply(gw, ticket, "您好，我是客服小王。", "k1")
        assert again["duplicate"] is True and len(fake_wechat.sent) == 1


async def test_a_send_slower_than_resend_after_s_is_not_taken_from_the_outbox_and_sent_again(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    """The outbox hold lapses after ``resend_after_s`` while the first send still waits for WeChat: the periodic
    resend (every quarter of it) took the message again and sent it a second time from the same process."""
    config = make_config(tmp_path, server={"resend_after_s": 1}, inboxes=[{**inbox(), "api_base": fake_wechat.url}])
    async with started(config, bot_setup) as gw:
        ticket = await handed_off(gw, WechatClient(gw), "oSlow", "30")
        fake_wechat.send_delay_s = 2.5  # two and a half holds, ten resend sweeps
        body = await agent_reply(gw, ticket, "您好，马上为您处理。", "slow-1")
        assert body["delivery"] == "sent"
        await asyncio.sleep(1.5)  # sweeps after the send: nothing left in the outbox to take
        assert fake_wechat.send_calls == 1 and len(fake_wechat.sent_to("oSlow")) == 1, fake_wechat.sent


async def test_token_expiring_mid_send_is_refreshed_once_and_the_send_retried(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    async with started(wechat_config(tmp_path, fake_wechat), bot_setup) as gw:
        ticket = await handed_off(gw, WechatClient(gw), "oTok", "21")
        assert (await agent_reply(gw, ticket, "第一条", "a"))["delivery"] == "sent"
        assert fake_wechat.token_fetches == 1
        fake_wechat.expire_tokens()  # our stored token still looks valid; WeChat says 42001
        assert (await agent_reply(gw, ticket, "第二条", "b"))["delivery"] == "sent"
        assert fake_wechat.token_fetches == 2
        assert [m["text"]["content"] for m in fake_wechat.sent] == ["第一条", "第二条"]
        assert fake_wechat.send_calls == 3  # first, the 42001, the retry


@pytest.mark.parametrize(
    ("errcode", "reason"),
    [(WINDOW_CLOSED, "window_closed"), (QUOTA_USED, "quota_exhausted"), (UNSUBSCRIBED, "unsubscribed")],
)
async def test_window_quota_and_unsubscribed_errors_fail_the_delivery_with_an_event(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat, errcode: int, reason: str
) -> None:
    async with started(wechat_config(tmp_path, fake_wechat), bot_setup) as gw:
        ticket = await handed_off(gw, WechatClient(gw), "oLate", "22")
        fake_wechat.errors["oLate"] = errcode
        body = await agent_reply(gw, ticket, "还在吗？", "x")
        assert body["delivery"] == "failed"
        assert body["message"]["delivery_error"] == reason
        (event,) = await failed_events(gw)
        assert event["ticket_id"] == ticket["id"] and event["data"]["reason"] == reason
        assert event["data"]["message_id"] == body["message"]["id"]
        await asyncio.sleep(0.3)
        assert fake_wechat.send_calls == 1  # never retried blindly


async def test_tracked_quota_and_window_refuse_before_calling_wechat(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    async with started(wechat_config(tmp_path, fake_wechat), bot_setup) as gw:
        ticket = await handed_off(gw, WechatClient(gw), "oQuota", "23")
        for n in range(5):  # 5 messages after a user message
            assert (await agent_reply(gw, ticket, f"回复 {n}", f"q{n}"))["delivery"] == "sent"
        sixth = await agent_reply(gw, ticket, "第六条", "q5")
        assert sixth["delivery"] == "failed" and sixth["message"]["delivery_error"] == "quota_exhausted"
        assert fake_wechat.send_calls == 5
        # The customer writes again: a fresh allowance.
        await WechatClient(gw).push(text_xml("还有问题", openid="oQuota", msg_id="24"))
        assert (await agent_reply(gw, ticket, "请讲", "q6"))["delivery"] == "sent"
        # 48 hours later (as the store records it) the window is closed.
        store = gw.server.app[GATEWAY].store
        old = (datetime.now(UTC) - timedelta(hours=49)).isoformat()
        await store.set_checkpoint("wechat:window:oa:oQuota:message", old)
        late = await agent_reply(gw, ticket, "过期了", "q7")
        assert late["message"]["delivery_error"] == "window_closed"
        assert fake_wechat.send_calls == 6


async def test_access_token_is_fetched_once_for_concurrent_callers_and_instances(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    import aiohttp

    fake_wechat.token_delay_s = 0.2
    async with started(wechat_config(tmp_path, fake_wechat), bot_setup) as gw, aiohttp.ClientSession() as http:
        store = gw.server.app[GATEWAY].store

        def instance() -> WechatApi:  # as a second gateway process sharing the store would build it
            return WechatApi(http=http, store=store, base=fake_wechat.url, app_id=APP_ID, app_secret=APP_SECRET)

        first, second = instance(), instance()
        tokens = await asyncio.gather(*(api.access_token() for api in (first, second) for _ in range(10)))
        assert len(set(tokens)) == 1 and fake_wechat.token_fetches == 1
        # A token error seen by many callers at once still makes one refresh.
        stale = tokens[0]
        fake_wechat.expire_tokens()
        refreshed = await asyncio.gather(*(api._refresh(stale=stale) for api in (first, second) for _ in range(5)))
        assert len(set(refreshed)) == 1 and refreshed[0] != stale
        assert fake_wechat.token_fetches == 2


async def test_a_retry_while_the_first_push_is_taken_in_leaves_the_welcome_to_the_first(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    config = wechat_config(tmp_path, fake_wechat, inbox(welcome="欢迎关注汇流！/ Welcome!"))
    async with started(config, bot_setup) as gw:
        client = WechatClient(gw)
        outbound = gw.server.app[GATEWAY].outbound
        stored, release = asyncio.Event(), asyncio.Event()
        record = outbound.record_greeting

        async def slow_greeting(*args: Any, **kwargs: Any) -> Message:
            greeting = await record(*args, **kwargs)  # stored: a retry now finds it
            stored.set()
            await release.wait()
            return greeting

        outbound.record_greeting = slow_greeting  # type: ignore[method-assign]
        xml = event_xml("subscribe", openid="oRace", created=1700000000)
        first = asyncio.create_task(client.push(xml))
        await asyncio.wait_for(stored.wait(), 5)
        # The first delivery will carry the welcome: the retry must not answer with it too.
        assert (await client.push(xml)).text == "success"
        release.set()
        assert read_xml((await first).text)["Content"] == "欢迎关注汇流！/ Welcome!"


async def test_a_push_whose_reply_failed_to_store_asks_for_a_retry_instead_of_success(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply was being stored as this response's (as sent) and the store failed: it may or may not be
    stored, so "success" could lose it. The push gets 503 and WeChat's retry answers. (A reply the bot's task
    writes after the message: a status question's. A FAQ answer is written with its message, both or neither.)"""
    config = wechat_config(tmp_path, fake_wechat, inbox(reply_budget_s=3))
    async with started(config, bot_setup) as gw:
        store = gw.server.app[GATEWAY].store
        add_message = store.add_message

        async def fails_for_the_reply(message: Message, *args: Any, **kwargs: Any) -> Any:
            if message.direction == "outbound" and kwargs.get("delivered") is not None:
                raise StoreUnavailable("Redis is unreachable")
            return await add_message(message, *args, **kwargs)

        monkeypatch.setattr(store, "add_message", fails_for_the_reply)
        pushed = await WechatClient(gw).push(text_xml("我的工单进度怎么样了", openid="oFail", msg_id="14"))
        assert pushed.status == 503 and "retry" in pushed.text
        assert [m.direction for m in await transcript(gw, "oa", "oFail")] == ["inbound"]  # taken in, not answered
