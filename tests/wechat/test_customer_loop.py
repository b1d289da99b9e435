"""The customer's loop on WeChat: handoff with the number, status in the handed-off chat, survey, rating, callback;
and a WeChat follow-up of a customer whose ticket is open elsewhere joins that ticket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connectors.wechat.parse import read_xml
from gateway.app import GATEWAY
from gateway.intake import BotSetup
from tests.conftest import Gateway, make_config, started
from tests.wechat.conftest import WechatClient, inbox, text_xml, wechat_config
from tests.wechat.fake_api import FakeWechat
from tests.wechat.test_replies import eventually, handed_off


async def _passive(client: WechatClient, text: str, openid: str, msg_id: str) -> str:
    pushed = await client.push(text_xml(text, openid=openid, msg_id=msg_id))
    assert pushed.status == 200 and pushed.text != "success", pushed.text
    return read_xml(pushed.text)["Content"]


async def _events(gw: Gateway, kind: str) -> list[dict[str, Any]]:
    _, body = await gw.api("GET", "/events", params={"limit": "1000"})
    return [e for e in body["events"] if e["type"] == kind]


async def test_handoff_number_status_survey_and_a_low_rating_reopens(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    config = wechat_config(tmp_path, fake_wechat, inbox(reply_budget_s=3))
    async with started(config, bot_setup) as gw:
        client = WechatClient(gw)
        ticket = await handed_off(gw, client, "oLoop", "1")
        _, messages = await gw.api("GET", f"/tickets/{ticket['id']}")
        handoff = next(m for m in messages["messages"] if m["author"] == "bot")
        assert ticket["number"] in handoff["text"]  # went back as the passive reply

        # Handed off, the bot says one thing still: the status, as the passive reply.
        status_text = await _passive(client, f"{ticket['number']} 进度怎么样", "oLoop", "2")
        assert ticket["number"] in status_text and "等待客服处理" in status_text

        status, _ = await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved"})
        assert status == 200
        await eventually(lambda: len(fake_wechat.sent_to("oLoop")) == 1)
        survey = fake_wechat.sent_to("oLoop")[0]["text"]["content"]
        assert ticket["number"] in survey and "1-5" in survey

        sorry = await _passive(client, "2", "oLoop", "3")
        assert "回访" in sorry
        _, after = await gw.api("GET", f"/tickets/{ticket['id']}")
        assert after["csat"]["score"] == 2 and after["csat"]["channel"] == "wechat"
        assert after["status"] == "open" and "回访" in after["tags"]
        assert len(await _events(gw, "ticket.rated")) == 1
        assert len(await _events(gw, "ticket.callback_requested")) == 1


async def test_a_wechat_follow_up_joins_the_ticket_open_on_web_chat(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    web = {"name": "web", "channel": "webchat", "allowed_origins": ["*"]}
    config = make_config(tmp_path, inboxes=[{**inbox(reply_budget_s=3), "api_base": fake_wechat.url}, web])
    async with started(config, bot_setup) as gw:
        chat = await gw.chat()
        await chat.say("转人工")
        await chat.expect("status")
        [ticket] = (await gw.api("GET", "/tickets"))[1]["tickets"]
        status, _ = await gw.api(
            "POST", f"/contacts/{ticket['contact_id']}/identities", json={"identity": "wechat:oSame"}
        )
        assert status == 201
        # The same customer, now on WeChat, asks for a human: no second ticket.
        joined = await _passive(WechatClient(gw), "我还是要找人工", "oSame", "9")
        assert ticket["number"] in joined
        await gw.server.app[GATEWAY].tasks.drain(5)
        _, page = await gw.api("GET", "/tickets")
        assert [t["id"] for t in page["tickets"]] == [ticket["id"]]
        _, full = await gw.api("GET", f"/tickets/{ticket['id']}")
        assert ("wechat", "我还是要找人工") in [(m["channel"], m["text"]) for m in full["messages"]]
        [follow_up] = [e for e in await _events(gw, "conversation.handoff") if e["data"]["reason"] == "follow_up"]
        assert follow_up["ticket_id"] == ticket["id"]
        # Resolving the ticket frees the WeChat conversation too: the bot answers there again.
        await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved"})
        answer = await _passive(WechatClient(gw), "怎么开发票", "oSame", "10")
        assert "发票" in answer


async def test_a_notice_outside_the_48_hour_window_fails_with_an_event_and_is_not_forced(
    tmp_path: Path, bot_setup: BotSetup, fake_wechat: FakeWechat
) -> None:
    async with started(wechat_config(tmp_path, fake_wechat, inbox(reply_budget_s=3)), bot_setup) as gw:
        ticket = await handed_off(gw, WechatClient(gw), "oAway", "1")
        await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "pending"})
        await eventually(lambda: len(fake_wechat.sent_to("oAway")) == 1)
        assert "补充" in fake_wechat.sent_to("oAway")[0]["text"]["content"]
        # 48 hours later (as the store records it) WeChat would refuse: the notice fails, with an event.
        store = gw.server.app[GATEWAY].store
        await store.set_checkpoint(
            "wechat:window:oa:oAway:message", (datetime.now(UTC) - timedelta(hours=49)).isoformat()
        )
        await gw.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "closed"})
        failed = [e for e in await _events(gw, "message.delivery_failed") if e["ticket_id"] == ticket["id"]]
        assert [e["data"]["reason"] for e in failed] == ["window_closed"]
        assert len(fake_wechat.sent_to("oAway")) == 1
