"""The operator dashboard (/admin/) in Debian's Chromium, against the real gateway with real traffic.

Screenshots of each step are saved in the test's tmp_path (``admin-*.png``), to look at after a run.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.setup import BotSetup
from core.model import Channel, QuarantinedItem
from gateway.app import GATEWAY, build_bot
from tests.conftest import API_TOKEN, ROOT, Gateway, make_config, started
from tests.wechat.conftest import inbox as wechat_inbox
from tests.wechat.conftest import text_xml

from .test_widget_browser import screenshot_on_failure

WEATHER = "今天天气怎么样"
WEATHER_ANSWER = "我们不提供天气预报，请查看手机上的天气应用。"
MARS = "可以用数字人民币吗"


@pytest.fixture
async def admin_gateway(tmp_path: Path, bot_setup: BotSetup) -> AsyncIterator[Gateway]:
    """A gateway with its own copy of the KB (the dashboard edits it), a web chat and a WeChat inbox, some
    chats (one answered, two questions the bot could not answer) and one quarantined WeChat push."""
    kb = tmp_path / "faq.yaml"
    await asyncio.to_thread(shutil.copy, ROOT / "kb" / "faq.yaml", kb)
    inboxes = [
        {"name": "web", "channel": "webchat", "allowed_origins": ["*"]},
        wechat_inbox(api_base="http://127.0.0.1:9"),
    ]
    config = make_config(tmp_path, bot={"kb": str(kb)}, inboxes=inboxes)
    bot = await asyncio.to_thread(build_bot, config)
    async with started(config, bot) as gw:
        a = await gw.chat()
        await a.say("我想退款")
        b = await gw.chat()
        await b.say(WEATHER)
        c = await gw.chat()
        await c.say(MARS)
        item = QuarantinedItem(
            id="wechat:oa:broken-then",
            channel=Channel.WECHAT,
            inbox="oa",
            reason="unreadable before the parser fix",
            raw=text_xml("怎么开发票", openid="oQuarantined", msg_id="9200").encode(),
            received_at=datetime.now(UTC),
        )
        await gw.server.app[GATEWAY].store.quarantine(item)
        yield gw


async def _shot(page: Any, tmp_path: Path, name: str) -> None:
    await page.screenshot(path=str(tmp_path / f"admin-{name}.png"), full_page=True)


async def _painted(page: Any, hl: str) -> int:
    """How many pixels of a chart's canvas are drawn (not transparent)."""
    count: int = await page.evaluate(
        """hl => { const c = document.querySelector(`[data-hl="${hl}"]`);
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""",
        hl,
    )
    return count


async def test_dashboard_shows_nothing_before_login_then_charts_with_data(
    admin_gateway: Gateway, page: Any, tmp_path: Path
) -> None:
    async with screenshot_on_failure(page, tmp_path):
        await page.goto(f"{admin_gateway.url}/admin/")
        await page.wait_for_selector('[data-hl="login"]')
        assert await page.locator('[data-hl="dashboard"]').is_hidden()
        assert await page.locator('[data-hl="stat-messages"]').text_content() == "–"
        await _shot(page, tmp_path, "1-login")

        await page.fill('[data-hl="token"]', "not-the-token")
        await page.press('[data-hl="token"]', "Enter")
        await page.wait_for_selector('[data-hl="login-error"]:visible')
        assert "令牌无效" in await page.locator('[data-hl="login-error"]').text_content()
        assert await page.locator('[data-hl="dashboard"]').is_hidden()

        await page.fill('[data-hl="token"]', API_TOKEN)
        await page.press('[data-hl="token"]', "Enter")
        await page.wait_for_selector("body[data-loaded]")
        assert await page.locator('[data-hl="stat-messages"]').text_content() == "3"
        assert await page.locator('[data-hl="stat-answered"]').text_content() == "1"
        for chart in ("chart-volume", "chart-outcomes"):
            assert int(await page.locator(f'[data-hl="{chart}"]').get_attribute("data-points")) > 0
            assert await _painted(page, chart) > 500, f"{chart} drew nothing"
        health = await page.locator('[data-hl="health"]').text_content()
        assert "inbox:web" in health and "inbox:oa" in health
        assert WEATHER in await page.locator('[data-hl="unanswered"]').text_content()
        await _shot(page, tmp_path, "2-dashboard")

        await page.click('[data-hl="lang"]')
        assert await page.locator('[data-i18n="volume"]').text_content() == "Volume by channel per day"
        await page.wait_for_selector('[data-hl="quarantine"] [data-hl="replay"]:has-text("Replay")')
        assert "No alarms" in await page.locator('[data-hl="alarms"]').text_content()
        await _shot(page, tmp_path, "3-english")


async def test_replay_a_quarantined_push_from_the_dashboard(admin_gateway: Gateway, page: Any, tmp_path: Path) -> None:
    async with screenshot_on_failure(page, tmp_path):
        await _login(page, admin_gateway)
        quarantine = page.locator('[data-hl="quarantine"]')
        assert "unreadable before the parser fix" in await quarantine.text_content()
        await quarantine.locator('[data-hl="replay"]').click()
        await page.wait_for_selector('[data-hl="toast"]:has-text("已重放")')
        await page.wait_for_function(
            """() => !document.querySelector('[data-hl="quarantine"]').textContent.includes('parser fix')"""
        )
        await _shot(page, tmp_path, "4-replayed")
    store = admin_gateway.server.app[GATEWAY].store
    item = await store.get_quarantined("wechat:oa:broken-then")
    assert item is not None and item.replayed
    _, feed = await admin_gateway.api("GET", "/events?limit=1000")
    texts = [e["data"]["message"]["text"] for e in feed["events"] if e["type"] == "message.created"]
    assert "怎么开发票" in texts  # the push is now a message


async def test_unanswered_questions_become_kb_answers(admin_gateway: Gateway, page: Any, tmp_path: Path) -> None:
    async with screenshot_on_failure(page, tmp_path):
        await _login(page, admin_gateway)
        rows = page.locator('[data-hl="unanswered"] tbody tr')
        weather = rows.filter(has_text=WEATHER)
        await weather.locator('[data-hl="new-entry"]').click()
        assert await page.locator('[data-hl="editor-questions"]').input_value() == WEATHER
        await page.fill('[data-hl="editor-id"]', "weather")
        await page.fill('[data-hl="editor-answer"]', WEATHER_ANSWER)
        await _shot(page, tmp_path, "5-new-entry")
        await page.click('[data-hl="editor-save"]')
        await page.wait_for_selector('[data-hl="toast"]:has-text("已保存")')

        mars = rows.filter(has_text=MARS)
        await mars.locator('[data-hl="pick-entry"]').select_option("payment_methods")
        await page.fill('[data-hl="kb-search"]', "数字人民币")  # the list shows it once the save is through
        await mars.locator('[data-hl="add-phrasing"]').click()
        await page.wait_for_selector('[data-hl="kb"] tbody tr:has-text("payment_methods")')
        await _shot(page, tmp_path, "6-kb")

    chat = await admin_gateway.chat()
    _, weather_reply = await chat.say(WEATHER)
    _, reply = await chat.say(MARS)
    await chat.close()
    assert weather_reply["author"] == "bot" and weather_reply["text"] == WEATHER_ANSWER
    _, faqs = await admin_gateway.api("GET", "/faqs")
    shipping = next(f for f in faqs["faqs"] if f["id"] == "payment_methods")
    assert MARS in shipping["questions"]
    assert reply["text"].startswith(shipping["answer"][:20])


async def _login(page: Any, gw: Gateway) -> None:
    await page.goto(f"{gw.url}/admin/")
    await page.fill('[data-hl="token"]', API_TOKEN)
    await page.press('[data-hl="token"]', "Enter")
    await page.wait_for_selector("body[data-loaded]")
