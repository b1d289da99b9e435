"""The customer's loop over web chat: handoff, ticket number, status, resolve, survey, rating, callback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.setup import BotSetup
from gateway.app import GATEWAY
from gateway.survey import SurveyLinks
from tests.conftest import ChatClient, Gateway, make_config, started


async def _events(gw: Gateway, kind: str) -> list[dict[str, Any]]:
    _, body = await gw.api("GET", "/events?limit=1000")
    return [e for e in body["events"] if e["type"] == kind]


async def _handed_off(gw: Gateway) -> tuple[ChatClient, dict[str, Any]]:
    chat = await gw.chat()
    _, handoff = await chat.say("转人工")
    await chat.expect("status")
    _, page = await gw.api("GET", "/tickets")
    ticket = max(page["tickets"], key=lambda t: t["number"])
    assert ticket["number"] in handoff["text"]  # the customer learns the number at once
    return chat, ticket


async def _resolve(gw: Gateway, chat: ChatClient, ticket: dict[str, Any]) -> dict[str, Any]:
    status, _ = await gw.api("POST", f"/tickets/{ticket['id']}/replies", json={"text": "已为您处理好。", "agent": "li"})
    assert status == 201
    await chat.expect("message")
    status, _ = await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved"})
    assert status == 200
    survey = await chat.expect("message")
    assert survey["author"] == "system" and ticket["number"] in survey["text"]
    return survey


async def test_handoff_status_resolve_survey_rating(gateway: Gateway) -> None:
    chat, ticket = await _handed_off(gateway)
    _, answer = await chat.say("我的工单进度")
    assert ticket["number"] in answer["text"] and "等待客服处理" in answer["text"]

    survey = await _resolve(gateway, chat, ticket)
    assert [b["label"] for b in survey["survey"]] == ["满意", "一般", "不满意"]  # the widget's buttons
    _, thanks = await chat.say("4分 回复很快")
    assert "感谢" in thanks["text"]
    _, rated = await gateway.api("GET", f"/tickets/{ticket['id']}")
    assert rated["csat"]["score"] == 4 and rated["csat"]["comment"] == "回复很快"
    assert rated["csat"]["channel"] == "webchat" and rated["status"] == "resolved"
    [event] = await _events(gateway, "ticket.rated")
    assert event["data"]["csat"]["score"] == 4 and event["ticket_id"] == ticket["id"]
    # One survey per ticket: a second rating is not taken, and is an ordinary message (the bot answers it).
    _, after = await chat.say("5")
    assert "感谢" not in after["text"]
    assert (await gateway.api("GET", f"/tickets/{ticket['id']}"))[1]["csat"]["score"] == 4


async def test_a_low_rating_reopens_the_ticket_for_a_callback(gateway: Gateway) -> None:
    chat, ticket = await _handed_off(gateway)
    await _resolve(gateway, chat, ticket)
    _, out_of_range = await chat.say("0")
    assert "1-5" in out_of_range["text"]
    assert (await gateway.api("GET", f"/tickets/{ticket['id']}"))[1]["csat"] is None
    _, sorry = await chat.say("不满意")  # what the widget's button sends
    assert "回访" in sorry["text"]
    _, reopened = await gateway.api("GET", f"/tickets/{ticket['id']}")
    assert reopened["status"] == "open" and "回访" in reopened["tags"] and reopened["csat"]["score"] == 1
    [callback] = await _events(gateway, "ticket.callback_requested")
    assert callback["data"]["ticket_number"] == ticket["number"] and callback["data"]["tag"] == "回访"
    # The survey went once: resolving again sends none.
    status, _ = await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved"})
    assert status == 200
    _, transcript = await gateway.api("GET", f"/tickets/{ticket['id']}")
    assert sum(m["meta"].get("kind") == "survey" for m in transcript["messages"]) == 1


class _Clock:
    """A clock the test moves forward."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_a_survey_expires_and_a_late_score_is_an_ordinary_message(tmp_path: Path, bot_setup: BotSetup) -> None:
    clock = _Clock()
    config = make_config(tmp_path, customer={"survey": {"expires_s": 3600}})
    async with started(config, bot_setup, clock=clock) as gw:
        chat, ticket = await _handed_off(gw)
        await _resolve(gw, chat, ticket)
        clock.now += timedelta(hours=2)
        _, late = await chat.say("5")
        assert "感谢" not in late["text"]  # the bot's ordinary answer
        _, after = await gw.api("GET", f"/tickets/{ticket['id']}")
        assert after["csat"] is None and after["status"] == "resolved"
        assert await _events(gw, "ticket.rated") == []


async def test_an_answer_soon_after_resolution_reopens_the_ticket(tmp_path: Path, bot_setup: BotSetup) -> None:
    clock = _Clock()
    config = make_config(tmp_path, customer={"reopen_window_s": 3600})
    async with started(config, bot_setup, clock=clock) as gw:
        chat, ticket = await _handed_off(gw)
        await _resolve(gw, chat, ticket)
        await chat.ws.send_json({"type": "message", "id": "again", "text": "还是不行，退款没到账"})
        ack = await chat.expect("ack")
        # back with the agent, not the bot (said before the ack)
        assert [f["status"] for f in chat.frames if f["type"] == "status"][-2:] == ["resolved", "open"]
        _, reopened = await gw.api("GET", f"/tickets/{ticket['id']}")
        assert reopened["status"] == "open" and reopened["messages"][-1]["id"] == ack["message_id"]
        # Later than the window, the bot takes the message as before.
        await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved"})
        await chat.expect("status")
        clock.now += timedelta(hours=2)
        _, answer = await chat.say("我想退款")
        assert answer["author"] == "bot" and "退款" in answer["text"]
        assert (await gw.api("GET", f"/tickets/{ticket['id']}"))[1]["status"] == "resolved"


async def test_survey_links_are_refused_when_expired_forged_or_for_another_ticket(gateway: Gateway) -> None:
    links = SurveyLinks(gateway.server.app[GATEWAY].store, None)  # the key is the store's, shared by every instance
    now = datetime.now(UTC)
    good = await links.token("tk_a", now + timedelta(hours=1))
    assert await links.verify(good, now) == "tk_a"
    assert await links.verify(good, now + timedelta(hours=2)) is None  # expired
    ticket_id, expiry, mac = good.split(".")
    assert await links.verify(f"tk_b.{expiry}.{mac}", now) is None  # another ticket
    assert await links.verify(f"{ticket_id}.{int(expiry) + 86400}.{mac}", now) is None  # a longer life
    assert await links.verify(f"{ticket_id}.{expiry}.{mac[:-1]}x", now) is None
    for junk in ("", "a", "a.b.c", "tk.1.", "." * 400):
        assert await links.verify(junk, now) is None
