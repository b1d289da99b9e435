"""Status questions over web chat: recognised before the FAQ, answered from the customer's own tickets only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.setup import BotSetup
from bot.status import StatusQuestion, status_question
from gateway.app import GATEWAY
from tests.conftest import ChatClient, Gateway, make_config, started
from tests.rules.sample import sample_rules


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("我的工单进度", None),
        ("我的工单处理到哪了", None),
        ("投诉有结果了吗", None),
        ("我上周投诉的问题有结果了吗", None),
        ("where is my ticket?", None),
        ("Any update on my complaint", None),
        ("HL-000123 到哪了", "HL-000123"),
        ("HL-000123 进度怎么样", "HL-000123"),
        ("hl 42?", "HL-000042"),
    ],
)
def test_status_questions_are_recognised(text: str, number: str | None) -> None:
    assert status_question(text) == StatusQuestion(number=number)


@pytest.mark.parametrize(
    "text", ["我的订单到哪了", "怎么开发票", "我要投诉", "HL-000123 我要退款", "what is my order status"]
)
def test_other_questions_are_not_status_questions(text: str) -> None:
    assert status_question(text) is None


@pytest.mark.parametrize("text", ["HL-abc 进度", "HL-1234567890 到哪了"])
def test_a_malformed_number_is_recognised_as_such(text: str) -> None:
    found = status_question(text)
    assert found is not None and found.malformed


async def _handed_off(gw: Gateway) -> tuple[ChatClient, str, str]:
    chat = await gw.chat()
    _, handoff = await chat.say("转人工")
    await chat.expect("status")
    _, body = await gw.api("GET", "/tickets")
    number = body["tickets"][0]["number"]
    return chat, number, handoff["text"]


async def test_the_handoff_tells_the_ticket_number_and_a_status_question_gets_it_back(gateway: Gateway) -> None:
    chat, number, handoff = await _handed_off(gateway)
    assert number in handoff
    _, answer = await chat.say("我的工单处理到哪了")  # the order-status FAQ answered this before
    assert answer["author"] == "bot" and number in answer["text"] and "等待客服处理" in answer["text"]
    assert "最后更新" in answer["text"]
    _, by_number = await chat.say(f"{number} 进度怎么样")
    assert number in by_number["text"]
    # The agent sees the question and the answer on the ticket.
    _, ticket = await gateway.api("GET", f"/tickets/{number}")
    texts = [(m["author"], m["text"]) for m in ticket["messages"]]
    assert ("customer", "我的工单处理到哪了") in texts and ("bot", answer["text"]) in texts
    assert [t["status"] for t in (await gateway.api("GET", "/tickets"))[1]["tickets"]] == ["new"]


async def test_a_complaint_about_an_earlier_complaint_asks_for_status_and_opens_nothing(gateway: Gateway) -> None:
    chat = await gateway.chat()
    _, answer = await chat.say("我上周投诉的问题有结果了吗")
    assert answer["author"] == "bot" and "没有工单" in answer["text"]
    await asyncio.sleep(0.2)
    assert (await gateway.api("GET", "/tickets"))[1]["tickets"] == []


async def test_another_customers_ticket_number_is_not_found_and_shows_nothing(gateway: Gateway) -> None:
    _, number, _ = await _handed_off(gateway)
    stranger = await gateway.chat()
    _, answer = await stranger.say(f"{number} 到哪了")
    assert f"未找到工单 {number}" in answer["text"]
    assert "等待" not in answer["text"] and "最后更新" not in answer["text"]
    _, broken = await stranger.say("HL-abc 进度")
    assert "未找到工单 HL-abc" in broken["text"]
    _, missing = await stranger.say("HL-999999 进度")
    assert "未找到工单 HL-999999" in missing["text"]
    assert len((await gateway.api("GET", "/tickets"))[1]["tickets"]) == 1


async def test_the_answer_names_the_queue_routing_chose(tmp_path: Path, bot_setup: BotSetup) -> None:
    config = await asyncio.to_thread(make_config, tmp_path, **sample_rules())
    async with started(config, bot_setup) as gw:
        chat = await gw.chat()
        await chat.say("转人工")
        await chat.ws.send_json({"type": "message", "id": "x1", "text": "发票开错了，订单号 20261201123456"})
        await chat.expect("ack")
        await gw.server.app[GATEWAY].tasks.drain(5)
        [ticket] = (await gw.api("GET", "/tickets"))[1]["tickets"]
        assert ticket["queue"]
        _, answer = await chat.say("我的工单进度")
        assert f"队列 Queue：{ticket['queue']}" in answer["text"]
