"""The summary report over a known set of conversations, driven through the real app."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.setup import BotSetup
from gateway.reports import normalize_question, percentile
from tests.conftest import API_TOKEN, Gateway, make_config, started
from tests.test_health import START, Clock
from tests.test_openapi import assert_documented


async def _ticket_number(gw: Gateway, conversation_text: str) -> str:
    async with asyncio.timeout(10):
        while True:
            _, body = await gw.api("GET", "/tickets?limit=200")
            for ticket in body["tickets"]:
                if ticket["subject"] == conversation_text:
                    return str(ticket["number"])
            await asyncio.sleep(0.05)


@pytest.fixture
async def history(tmp_path: Path, bot_setup: BotSetup) -> AsyncIterator[Gateway]:
    """Four web chats over two days: one answered, one missed twice and handed off, one asking for a human,
    one missed once the next day. Agents answer the two tickets after 5 and 15 minutes."""
    clock = Clock()
    async with started(make_config(tmp_path), bot_setup, clock=clock) as gw:
        a = await gw.chat()
        await a.say("我想退款")
        b = await gw.chat()
        await b.say("今天天气怎么样")
        await b.say("今天天气怎么样？")
        c = await gw.chat()
        await c.say("转人工")
        weather = await _ticket_number(gw, "今天天气怎么样")
        human = await _ticket_number(gw, "转人工")
        clock.now = START + timedelta(minutes=5)
        assert (await gw.api("POST", f"/tickets/{weather}/replies", json={"text": "明天晴"}))[0] == 201
        clock.now = START + timedelta(minutes=15)
        assert (await gw.api("POST", f"/tickets/{human}/replies", json={"text": "您好"}))[0] == 201
        clock.now = START + timedelta(days=1)
        d = await gw.chat()
        await d.say("今天天气如何")
        yield gw


async def test_summary_counts_the_known_conversations(history: Gateway) -> None:
    status, report = await history.api("GET", "/reports/summary?from=2026-12-01&to=2026-12-02")
    assert status == 200, report
    assert_documented("GET", "/api/v1/reports/summary", 200, report)
    assert report["messages"] == {"webchat": {"inbound": 5, "outbound": 7}}
    assert report["conversations"] == {"webchat": 4}
    assert report["bot"] == {
        "answered": 1,
        "suggested": 0,
        "missed": 2,
        "handed_off": 2,
        "conversations": 4,
        "deflected": 1,
    }
    assert report["deflection_rate"] == 0.25  # only the answered chat; a customer who left after a miss is not
    assert report["handoff_reasons"] == {"no_match": 1, "asked_for_human": 1}
    assert report["first_response_s"] == {"p50": 300.0, "p90": 900.0, "answered_tickets": 2}
    unanswered = [(u["question"], u["count"], u["examples"]) for u in report["unanswered"]]
    assert unanswered == [
        ("今天天气怎么样", 2, ["今天天气怎么样", "今天天气怎么样？"]),
        ("今天天气如何", 1, ["今天天气如何"]),
    ]
    day1, day2 = report["daily"]
    assert day1["date"] == "2026-12-01" and day2["date"] == "2026-12-02"
    assert day1["channels"]["webchat"] == {
        "messages": 4, "answer": 1, "suggest": 0, "miss": 1, "handoff": 2, "tickets": 2
    }  # fmt: skip
    assert day2["channels"]["webchat"]["messages"] == 1 and day2["channels"]["webchat"]["miss"] == 1


async def test_summary_filters_by_window_and_channel(history: Gateway) -> None:
    _, first_day = await history.api("GET", "/reports/summary?from=2026-12-01&to=2026-12-01")
    assert first_day["messages"]["webchat"]["inbound"] == 4 and len(first_day["daily"]) == 1
    _, email = await history.api("GET", "/reports/summary?from=2026-12-01&to=2026-12-02&channel=email")
    assert email["messages"] == {} and email["deflection_rate"] is None and email["unanswered"] == []
    _, other_inbox = await history.api("GET", "/reports/summary?from=2026-12-01&to=2026-12-02&inbox=nope")
    assert other_inbox["conversations"] == {}


async def test_summary_as_csv(history: Gateway) -> None:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    url = history.url + "/api/v1/reports/summary?from=2026-12-01&to=2026-12-02&format=csv"
    async with history.http.get(url, headers=headers) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        rows = list(csv.reader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
    assert rows[0] == ["date", "channel", "messages", "answer", "suggest", "miss", "handoff", "tickets"]
    assert rows[1] == ["2026-12-01", "webchat", "4", "1", "0", "1", "2", "2"]
    async with history.http.get(url + "&table=unanswered", headers=headers) as resp:
        rows = list(csv.reader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
    assert rows[1][:2] == ["今天天气怎么样", "2"]


@pytest.mark.parametrize(
    "query",
    ["from=yesterday", "from=2026-12-02&to=2026-12-01", "to=2026-12-01T08:00:00", "channel=fax", "tz=Mars/Base",
     "format=xml"],
)  # fmt: skip
async def test_bad_queries_get_a_400(gateway: Gateway, query: str) -> None:
    status, body = await gateway.api("GET", f"/reports/summary?{query}")
    assert status == 400 and body["error"]["code"] == "bad_query"


async def test_reports_need_a_token(gateway: Gateway) -> None:
    status, _ = await gateway.api("GET", "/reports/summary", token="not-a-token")
    assert status == 401


def test_near_duplicate_questions_normalize_alike() -> None:
    assert normalize_question("怎么退款？") == normalize_question("怎么 退款") == "怎么退款"
    assert normalize_question("ＨＯＷ to Refund!") == "howtorefund"


def test_percentiles_are_nearest_rank() -> None:
    values: list[Any] = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert (percentile(values, 50), percentile(values, 90)) == (3.0, 5.0)
    assert percentile([], 50) is None
