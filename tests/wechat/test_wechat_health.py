"""WeChat API errors counted by errcode, and a failing token refresh raised as an alarm."""

from __future__ import annotations

from pathlib import Path

from bot.setup import BotSetup
from gateway.app import GATEWAY
from tests.conftest import started
from tests.test_metrics import parse, scrape, value
from tests.wechat.conftest import WechatClient, inbox, wechat_config
from tests.wechat.fake_api import INVALID_SECRET, TOKEN_EXPIRED, UNSUBSCRIBED, FakeWechat
from tests.wechat.test_replies import agent_reply, handed_off


async def test_api_errors_are_counted_by_errcode(tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat) -> None:
    async with started(wechat_config(tmp_path, fake_wechat), bot_setup) as gw:
        ticket = await handed_off(gw, WechatClient(gw), "oMetrics", "30")
        assert (await agent_reply(gw, ticket, "第一条", "a"))["delivery"] == "sent"
        fake_wechat.expire_tokens()
        assert (await agent_reply(gw, ticket, "第二条", "b"))["delivery"] == "sent"
        fake_wechat.errors["oMetrics"] = UNSUBSCRIBED
        assert (await agent_reply(gw, ticket, "第三条", "c"))["delivery"] == "failed"
        m = parse((await scrape(gw))[1])
    assert value(m, "huiliu_wechat_api_errors_total", inbox="oa", code=str(TOKEN_EXPIRED)) == 1
    assert value(m, "huiliu_wechat_api_errors_total", inbox="oa", code=str(UNSUBSCRIBED)) == 1
    assert value(m, "huiliu_wechat_token_refresh_ok", inbox="oa") == 1


async def test_a_failing_token_refresh_is_an_alarm(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    config = wechat_config(tmp_path, fake_wechat, inbox(app_secret="rotated-and-wrong"))
    async with started(config, bot_setup) as gw:
        ticket = await handed_off(gw, WechatClient(gw), "oNoToken", "31")
        assert (await agent_reply(gw, ticket, "您好", "a"))["delivery"] == "failed"
        async with gw.http.get(gw.url + "/readyz") as resp:
            body = await resp.json()
        (alarm,) = body["alarms"]
        assert alarm["name"] == "token_refresh_failing" and alarm["subject"] == "oa"
        assert str(INVALID_SECRET) in alarm["detail"] and "rotated-and-wrong" not in alarm["detail"]
        m = parse((await scrape(gw))[1])
        assert value(m, "huiliu_wechat_token_refresh_ok", inbox="oa") == 0
        assert value(m, "huiliu_wechat_api_errors_total", inbox="oa", code=str(INVALID_SECRET)) >= 1
        assert await gw.server.app[GATEWAY].health.notify(await gw.server.app[GATEWAY].health.snapshot()) == 1
