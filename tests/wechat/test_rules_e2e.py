"""WeChat end to end with the sample rules: a complaint goes to the complaints queue, due within the window."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from bot.setup import BotSetup
from gateway.app import GATEWAY
from tests.conftest import make_config, started
from tests.rules.sample import sample_rules
from tests.wechat.conftest import WechatClient, inbox, text_xml
from tests.wechat.fake_api import FakeWechat


async def test_wechat_complaint_ticket_has_fields_queue_assignee_and_sla(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    box = {**inbox(), "api_base": fake_wechat.url}
    config = await asyncio.to_thread(make_config, tmp_path, inboxes=[box], **sample_rules())
    async with started(config, bot_setup) as gw:
        client = WechatClient(gw)
        pushed = await client.push(text_xml("我要投诉！订单号 20261130888888 付了 ¥299 一直不发货，转人工"))
        assert pushed.status == 200
        await gw.server.app[GATEWAY].tasks.drain(10)
        status, page = await gw.api("GET", "/tickets?queue=complaints")
        assert status == 200
        [ticket] = page["tickets"]
        assert ticket["channel"] == "wechat"
        assert ticket["fields"] == {"order_number": "20261130888888", "amount": "299.00 CNY"}
        assert ticket["category"] == "complaint" and ticket["priority"] == "high"
        assert ticket["assignee"] == "zhao"  # least_open: nobody has a complaint yet, the first agent takes it
        assert ticket["routing"] == ["general", "complaints"]
        sla = ticket["sla"]
        assert sla["policy"] == "complaint"
        created = datetime.fromisoformat(ticket["created_at"])
        due = datetime.fromisoformat(sla["first_response_due_at"])
        # The first response is due within WeChat's 48-hour reply window, whatever the business calendar says.
        assert created < due <= created + timedelta(hours=48)
        assert sla["first_response_capped"] in (None, "wechat_window")
        status, by_category = await gw.api("GET", "/tickets?category=complaint&assignee=zhao")
        assert [t["number"] for t in by_category["tickets"]] == [ticket["number"]]
