"""The FAQ admin API and KB hot reload, over the real app; complaint handoffs raise the ticket's priority."""

from __future__ import annotations

import asyncio
import pathlib
import shutil

import pytest

from bot.faq import read_kb
from bot.live import LiveIndex
from gateway.app import build_bot
from tests.conftest import ROOT, Gateway, make_config, started

NEW_ENTRY = {
    "id": "gift_card",
    "questions": ["礼品卡怎么用", "how do I use a gift card"],
    "answer": "结算时选择「礼品卡」。客服时间：{business_hours}",
    "keywords": ["礼品卡", "gift card"],
}


@pytest.fixture
async def admin(tmp_path: pathlib.Path) -> tuple[Gateway, pathlib.Path]:  # type: ignore[misc]
    kb = tmp_path / "faq.yaml"
    shutil.copy(ROOT / "kb" / "faq.yaml", kb)
    hours = {"timezone": "Asia/Shanghai", "days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00"}
    config = await asyncio.to_thread(make_config, tmp_path, bot={"kb": str(kb), "business_hours": hours})
    bot = await asyncio.to_thread(build_bot, config)
    async with started(config, bot) as gw:
        yield gw, kb


async def test_faqs_need_a_token(admin: tuple[Gateway, pathlib.Path]) -> None:
    gw, _ = admin
    status, body = await gw.api("GET", "/faqs", token="wrong-token-123")
    assert status == 401 and body["error"]["code"] == "unauthorized"


async def test_list_then_create_answers_at_once_and_persists(admin: tuple[Gateway, pathlib.Path]) -> None:
    gw, kb = admin
    status, body = await gw.api("GET", "/faqs")
    assert status == 200 and body["count"] == len(body["faqs"]) >= 20
    assert "refund" in {f["id"] for f in body["faqs"]}

    status, created = await gw.api("POST", "/faqs", json=NEW_ENTRY)
    assert status == 201 and created["id"] == "gift_card" and created["tags"] == []
    chat = await gw.chat()
    _, reply = await chat.say("礼品卡怎么使用")
    assert reply["text"].startswith("结算时选择「礼品卡」")
    assert "09:00–18:00" in reply["text"] and "{business_hours}" not in reply["text"]  # placeholder filled
    on_disk = await asyncio.to_thread(read_kb, kb)
    assert on_disk.entries[-1].answer == NEW_ENTRY["answer"]  # the file keeps the placeholder


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({**NEW_ENTRY, "id": "refund"}, 409, "already exists"),
        ({**NEW_ENTRY, "questions": ["礼品卡", "  "]}, 422, "'questions' holds an empty string"),
        ({**NEW_ENTRY, "questions": ["礼品卡", "？！"]}, 422, "question #2 is empty"),
        ({**NEW_ENTRY, "questions": []}, 422, "'questions' must be a non-empty list"),
        ({**NEW_ENTRY, "answer": ""}, 422, "'answer' must be a non-empty string"),
        ({**NEW_ENTRY, "colour": "red"}, 422, "unknown field"),
    ],
)
async def test_create_rejects_bad_entries_clearly(
    admin: tuple[Gateway, pathlib.Path], body: dict[str, object], status: int, fragment: str
) -> None:
    gw, kb = admin
    before = kb.read_bytes()
    got, error = await gw.api("POST", "/faqs", json=body)
    assert got == status and fragment in error["error"]["message"]
    assert kb.read_bytes() == before


async def test_bad_json_is_400(admin: tuple[Gateway, pathlib.Path]) -> None:
    gw, _ = admin
    status, body = await gw.api("POST", "/faqs", data=b"{nope", headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"]["code"] == "bad_json"


async def test_update_and_delete(admin: tuple[Gateway, pathlib.Path]) -> None:
    gw, kb = admin
    changed = {"questions": ["退款要多久"], "answer": "三天内到账。"}
    status, body = await gw.api("PUT", "/faqs/refund", json=changed)
    assert status == 200 and body["id"] == "refund" and body["answer"] == "三天内到账。"
    chat = await gw.chat()
    _, reply = await chat.say("退款要多久")
    assert reply["text"] == "三天内到账。"
    status, body = await gw.api("PUT", "/faqs/refund", json={**changed, "id": "other"})
    assert status == 422
    status, body = await gw.api("PUT", "/faqs/nope", json=changed)
    assert status == 404

    status, _ = await gw.api("DELETE", "/faqs/refund")
    assert status == 204
    status, _ = await gw.api("DELETE", "/faqs/refund")
    assert status == 404
    on_disk = await asyncio.to_thread(read_kb, kb)
    assert "refund" not in {e.id for e in on_disk.entries}


async def test_reload_picks_up_a_hand_edit_and_keeps_the_old_kb_on_error(admin: tuple[Gateway, pathlib.Path]) -> None:
    gw, kb = admin
    text = await asyncio.to_thread(kb.read_text, encoding="utf-8")
    extra = "\n  - id: umbrella\n    questions: [可以借雨伞吗]\n    answer: 前台可借雨伞。\n"
    await asyncio.to_thread(kb.write_text, text + extra, encoding="utf-8")
    status, body = await gw.api("POST", "/faqs/reload")
    assert status == 200 and body["reloaded"] is True
    chat = await gw.chat()
    _, reply = await chat.say("可以借雨伞吗")
    assert reply["text"] == "前台可借雨伞。"

    await asyncio.to_thread(kb.write_text, "faqs: [\n", encoding="utf-8")
    status, body = await gw.api("POST", "/faqs/reload")
    assert status == 422 and "previous knowledge base stays in use" in body["error"]["message"]
    _, again = await chat.say("可以借雨伞吗")
    assert again["text"] == "前台可借雨伞。"


async def test_a_hand_edit_is_picked_up_without_a_restart_or_an_api_call(tmp_path: pathlib.Path) -> None:
    kb = tmp_path / "faq.yaml"
    shutil.copy(ROOT / "kb" / "faq.yaml", kb)
    config = await asyncio.to_thread(make_config, tmp_path, bot={"kb": str(kb), "kb_watch_s": 0.05})
    bot = await asyncio.to_thread(build_bot, config)
    assert isinstance(bot.index, LiveIndex)
    live = bot.index

    async def reloads_reach(n: int) -> None:
        for _ in range(200):
            if live.reloads >= n:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"the watcher reloaded {live.reloads} times, not {n}")

    async with started(config, bot) as gw:
        chat = await gw.chat()
        text = await asyncio.to_thread(kb.read_text, encoding="utf-8")
        extra = "\n  - id: umbrella\n    questions: [可以借雨伞吗]\n    answer: 前台可借雨伞。\n"
        await asyncio.to_thread(kb.write_text, text + extra, encoding="utf-8")
        await reloads_reach(1)
        _, reply = await chat.say("可以借雨伞吗")
        assert reply["text"] == "前台可借雨伞。"

        # A broken save is not loaded: the bot keeps answering from the last good file, and the broken file is
        # not re-read on every check.
        await asyncio.to_thread(kb.write_text, "faqs: [\n", encoding="utf-8")
        await asyncio.sleep(0.3)
        _, again = await chat.say("可以借雨伞吗")
        assert again["text"] == "前台可借雨伞。" and live.reloads == 1

        # An atomic replace (what editors and deploys do) with the fixed file is picked up.
        fixed = tmp_path / "faq.yaml.new"
        await asyncio.to_thread(fixed.write_text, text, encoding="utf-8")
        await asyncio.to_thread(fixed.replace, kb)
        await reloads_reach(2)
        _, gone = await chat.say("可以借雨伞吗")
        assert gone["text"] != "前台可借雨伞。"

        # The admin API's own write is no change to reload.
        status, _ = await gw.api("POST", "/faqs", json=NEW_ENTRY)
        assert status == 201 and live.reloads == 3
        await asyncio.sleep(0.3)
        assert live.reloads == 3


async def test_reload_drops_no_request(tmp_path: pathlib.Path) -> None:
    kb = tmp_path / "faq.yaml"
    shutil.copy(ROOT / "kb" / "faq.yaml", kb)
    live = await asyncio.to_thread(LiveIndex.load, kb)
    results: list[str] = []

    async def ask() -> None:
        for _ in range(30):
            hits = await asyncio.to_thread(live.search, "我想退款")
            results.append(hits[0].entry_id)
            await asyncio.sleep(0)

    await asyncio.gather(ask(), ask(), live.reload(), live.reload())
    assert results == ["refund"] * 60 and live.reloads == 2


async def test_complaint_hands_off_at_high_priority(admin: tuple[Gateway, pathlib.Path]) -> None:
    gw, _ = admin
    chat = await gw.chat()
    _, reply = await chat.say("我要投诉，你们发货太慢了")
    assert "人工" in reply["text"]
    status, body = await gw.api("GET", "/tickets")
    assert status == 200 and len(body["tickets"]) == 1
    ticket = body["tickets"][0]
    assert ticket["handoff_reason"] == "negative_sentiment" and ticket["priority"] == "high"
