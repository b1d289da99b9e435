"""The bot's FAQ answer written with the push that asked it (one store write, issue 23): the same answer, the
same conversation and the same guarantees as the answer the bot's task writes after the message."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.wechat.parse import read_xml
from core.model import Channel, Identity, IdentityKind, Message, QuarantinedItem
from gateway.app import GATEWAY
from gateway.intake import BotSetup
from tests.conftest import started
from tests.test_metrics import parse, scrape, value
from tests.wechat.conftest import WechatClient, inbox, text_xml, wechat_config
from tests.wechat.fake_api import FakeWechat
from tests.wechat.test_replies import eventually, transcript

# Answers (Chinese and English), a suggestion list (a miss), an answer (the misses start again), a miss, a status
# question (read from the store), a six-digit number with no code pending (an ordinary message once the store
# says so: the second miss in a row, a handoff), then messages while a human holds the conversation.
SCRIPT = [
    "怎么开发票",
    "发票",
    "how do I reset my password",
    "今天月亮为什么是蓝色的",
    "怎么开发票",
    "量子纠缠的哲学意义",
    "我的工单进度怎么样了",
    "123456",
    "转人工",
    "怎么开发票",
]


def _said(messages: list[Message]) -> list[tuple[str, str, Any, Any]]:
    """What the customer saw and what the bot recorded, but the ticket numbers (two customers, two tickets)."""
    said = []
    for m in messages:
        outcome = m.meta.get("outcome")
        said.append((str(m.author), re.sub(r"HL-\d+", "HL-#", m.text), outcome, m.meta.get("faq_id")))
    return said


async def test_an_answer_written_with_its_push_matches_the_bot_tasks_answer_message_for_message(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    """One customer asks through pushes (their answers ride back in the responses, written with the message
    where the bot needs nothing but its index); another asks the same through ``huiliu quarantine replay``,
    whose answers the bot's task writes after the message and sends through the customer-service API. Both
    transcripts, and both conversations as the bot leaves them, are the same."""
    config = wechat_config(tmp_path, fake_wechat, inbox(reply_budget_s=3))
    async with started(config, bot_setup) as gw:
        gateway = gw.server.app[GATEWAY]
        connector = gateway.connectors["oa"]
        client = WechatClient(gw)
        for n, text in enumerate(SCRIPT):
            pushed = await client.push(text_xml(text, openid="oPush", msg_id=f"71{n:03d}"))
            assert pushed.status == 200
            raw = text_xml(text, openid="oReplay", msg_id=f"72{n:03d}").encode()
            item = QuarantinedItem(
                id=f"replay-{n}",
                channel=Channel.WECHAT,
                inbox="oa",
                reason="test",
                raw=raw,
                received_at=datetime.now(UTC),
            )
            assert await connector.replay(item, gateway.sink) is not None
            await gateway.tasks.drain(5)
        pushed_said = _said(await transcript(gw, "oa", "oPush"))
        replayed_said = _said(await transcript(gw, "oa", "oReplay"))
        assert pushed_said == replayed_said
        outcomes = [o for author, _, o, _ in pushed_said if author == "bot"]
        assert {"answer", "suggest", "miss", "status", "handoff"} <= set(outcomes)
        store = gateway.store
        conversations = [
            await store.find_conversation("oa", Identity(IdentityKind.WECHAT_OPENID, openid))
            for openid in ("oPush", "oReplay")
        ]
        assert conversations[0] is not None and conversations[1] is not None
        pushed_state, replayed_state = ((c.status, c.consecutive_misses, c.episode) for c in conversations)
        assert pushed_state == replayed_state
        assert await store.unhandled_messages() == []


async def test_a_faq_answer_is_stored_with_its_push_handled_and_sent_in_one_write(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    """The push's message is stored handled, its reply stored as sent in the response, before the response is
    written: nothing waits in the outbox, no task is left, the API is never called."""
    config = wechat_config(tmp_path, fake_wechat, inbox(reply_budget_s=3))
    async with started(config, bot_setup) as gw:
        gateway = gw.server.app[GATEWAY]
        pushed = await WechatClient(gw).push(text_xml("怎么开发票", openid="oOnce", msg_id="7300"))
        assert read_xml(pushed.text)["MsgType"] == "text"
        _, reply = await transcript(gw, "oa", "oOnce")
        assert reply.delivery == "sent" and reply.meta["outcome"] == "answer"
        assert read_xml(pushed.text)["Content"] == reply.text
        assert await gateway.store.unhandled_messages() == []
        assert (await gateway.store.gauges(since=datetime.now(UTC))).outbox_size == 0
        assert fake_wechat.send_calls == 0
        # Counted as the bot's task would count it: both messages, the decision, and handled as it was stored.
        status, text = await scrape(gw)
        assert status == 200
        samples = parse(text)
        for direction in ("inbound", "outbound"):
            assert value(samples, "huiliu_messages_total", channel="wechat", inbox="oa", direction=direction) == 1
        assert value(samples, "huiliu_bot_decisions_total", decision="answer") == 1
        assert value(samples, "huiliu_intake_seconds_count", channel="wechat", stage="handled") == 1


async def test_a_faq_answer_whose_response_could_not_be_written_goes_through_the_api_once(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WeChat hung up before the response (the connection is gone when it is written): the stored reply goes
    through the customer-service API, and WeChat's retry of the push is not answered with it a second time."""
    config = wechat_config(tmp_path, fake_wechat, inbox(reply_budget_s=3))
    async with started(config, bot_setup) as gw:
        connector = gw.server.app[GATEWAY].connectors["oa"]
        write = connector._write_passive  # type: ignore[attr-defined]

        async def hung_up(request: Any, *args: Any, **kwargs: Any) -> Any:
            request.transport.close()
            return await write(request, *args, **kwargs)

        monkeypatch.setattr(connector, "_write_passive", hung_up)
        xml = text_xml("怎么开发票", openid="oGone", msg_id="7400")
        client = WechatClient(gw)
        with pytest.raises(Exception):  # noqa: B017 - the client sees the connection drop, however aiohttp says it
            await client.push(xml)
        await eventually(lambda: len(fake_wechat.sent) == 1)
        (sent,) = fake_wechat.sent
        _, reply = await transcript(gw, "oa", "oGone")
        assert sent["touser"] == "oGone" and sent["text"]["content"] == reply.text
        monkeypatch.undo()
        retried = await client.push(xml)  # WeChat's retry: the API has delivered it
        assert (retried.status, retried.text) == (200, "success")
        await gw.server.app[GATEWAY].tasks.drain(5)
        assert len(fake_wechat.sent) == 1


async def test_a_faq_answer_waits_behind_an_earlier_message_the_bot_is_still_handling(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message the bot's task is still answering (a status question reads the store) is answered before the
    same customer's next one: the next one is not answered in its own write ahead of it."""
    config = wechat_config(tmp_path, fake_wechat, inbox(reply_budget_s=0.3))
    async with started(config, bot_setup) as gw:
        intake = gw.server.app[GATEWAY].intake
        gate = asyncio.Event()
        handle = intake.handle

        async def slow_handle(message: Message, known: Any = None) -> None:
            await gate.wait()
            await handle(message, known)

        monkeypatch.setattr(intake, "handle", slow_handle)
        client = WechatClient(gw)
        first = await client.push(text_xml("我的工单进度怎么样了", openid="oOrder", msg_id="7500"))
        assert first.text == "success"  # past the budget: it goes through the API
        second = await client.push(text_xml("怎么开发票", openid="oOrder", msg_id="7501"))
        assert second.text == "success"  # behind the first, so past the budget too
        gate.set()
        await eventually(lambda: len(fake_wechat.sent) == 2)
        await gw.server.app[GATEWAY].tasks.drain(5)
        said = [(str(m.author), m.meta.get("outcome")) for m in await transcript(gw, "oa", "oOrder")]
        assert said == [("customer", None), ("customer", None), ("bot", "status"), ("bot", "answer")]
        _, _, status, answer = await transcript(gw, "oa", "oOrder")
        assert [s["text"]["content"] for s in fake_wechat.sent] == [status.text, answer.text]
