"""Web chat end to end with the sample rules: the ticket says what it is, who takes it and by when."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from bot.setup import BotSetup
from gateway.app import GATEWAY
from tests.conftest import make_config, started
from tests.rules.sample import sample_rules


async def test_webchat_ticket_carries_fields_queue_assignee_and_sla(tmp_path: Path, bot_setup: BotSetup) -> None:
    config = await asyncio.to_thread(make_config, tmp_path, **sample_rules())  # reads the timezone file
    async with started(config, bot_setup) as gw:
        chat = await gw.chat()
        await chat.say("订单号：20261201123456 的发票抬头开错了，我的电话 13800138000")
        _, handoff = await chat.say("转人工")
        assert handoff["author"] == "bot"
        status, page = await gw.api("GET", "/tickets")
        assert status == 200
        [ticket] = page["tickets"]
        assert ticket["fields"]["order_number"] == "20261201123456"
        assert ticket["fields"]["phone"] == "+8613800138000"
        assert ticket["queue"] == "billing" and ticket["category"] == "billing"
        assert ticket["assignee"] == "li"  # round robin's first turn
        assert ticket["routing"] == ["general", "invoices"]
        assert ticket["language"] == "zh" and "invoice" in ticket["tags"]
        sla = ticket["sla"]
        assert sla["policy"] == "default" and sla["breached"] == [] and not sla["paused"]
        created = datetime.fromisoformat(ticket["created_at"])
        assert datetime.fromisoformat(sla["first_response_due_at"]) > created
        assert datetime.fromisoformat(sla["resolution_due_at"]) > datetime.fromisoformat(sla["first_response_due_at"])

        # A second customer's invoice goes to the other billing agent: the store takes turns.
        other = await gw.chat()
        await other.say("invoice please, order number 20261201654321")
        await other.say("人工客服")
        status, billing = await gw.api("GET", "/tickets?queue=billing&assignee=wang")
        assert [t["fields"].get("order_number") for t in billing["tickets"]] == ["20261201654321"]

        # Pending (waiting on the customer) stops the resolution clock; the customer's answer restarts it.
        await gw.api("POST", f"/tickets/{ticket['number']}/replies", json={"text": "请提供正确抬头", "agent": "li"})
        status, paused = await gw.api("PATCH", f"/tickets/{ticket['number']}", json={"status": "pending"})
        assert paused["sla"]["paused"] and paused["sla"]["resolution_due_at"] is None
        assert paused["sla"]["first_response_due_at"] is None and paused["sla"]["first_responded_at"]
        await chat.ws.send_json({"type": "message", "id": "c9", "text": "抬头是汇流科技有限公司"})
        await chat.expect("ack")
        await gw.server.app[GATEWAY].tasks.drain(5)
        status, resumed = await gw.api("GET", f"/tickets/{ticket['number']}")
        assert resumed["status"] == "open" and not resumed["sla"]["paused"]
        assert resumed["sla"]["resolution_due_at"] is not None
        await chat.close()
        await other.close()


async def test_a_later_message_before_the_first_reply_reroutes_and_assigns(tmp_path: Path, bot_setup: BotSetup) -> None:
    config = await asyncio.to_thread(make_config, tmp_path, **sample_rules())
    async with started(config, bot_setup) as gw:
        chat = await gw.chat()
        await chat.say("转人工")
        [ticket] = (await gw.api("GET", "/tickets"))[1]["tickets"]
        assert ticket["queue"] == "general" and ticket["assignee"] is None and ticket["fields"] == {}
        await chat.ws.send_json({"type": "message", "id": "c2", "text": "发票开错了，订单号 20261201123456"})
        await chat.expect("ack")
        await gw.server.app[GATEWAY].tasks.drain(5)
        status, now = await gw.api("GET", f"/tickets/{ticket['number']}")
        assert status == 200 and now["queue"] == "billing" and now["assignee"] == "li"
        assert now["routing"] == ["general", "invoices"]
        assert now["fields"]["order_number"] == "20261201123456"
        feed = (await gw.api("GET", "/events", params={"limit": "1000"}))[1]["events"]
        [update] = [e for e in feed if e["type"] == "ticket.updated"]
        assert {"queue", "assignee", "fields", "routing"} <= set(update["data"]["changes"])
        # After an agent's reply the rules leave the ticket where it is.
        await gw.api("POST", f"/tickets/{ticket['number']}/replies", json={"text": "好的", "agent": "li"})
        await chat.ws.send_json({"type": "message", "id": "c3", "text": "我要投诉"})
        await chat.expect("ack")
        await gw.server.app[GATEWAY].tasks.drain(5)
        assert (await gw.api("GET", f"/tickets/{ticket['number']}"))[1]["queue"] == "billing"
        await chat.close()


async def test_the_category_comes_from_the_faq_entry_the_bot_answered(tmp_path: Path, bot_setup: BotSetup) -> None:
    config = await asyncio.to_thread(make_config, tmp_path, **sample_rules())
    async with started(config, bot_setup) as gw:
        chat = await gw.chat()
        _, answer = await chat.say("退款多久到账")
        assert "原路退回" in answer["text"]  # the refund entry answered
        await chat.say("转人工")
        [ticket] = (await gw.api("GET", "/tickets"))[1]["tickets"]
        assert ticket["category"] == "refund"  # kb/faq.yaml: the refund entry's category
        assert ticket["language"] == "zh"
        await chat.close()
