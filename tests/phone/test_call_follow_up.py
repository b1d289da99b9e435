"""A missed call from a customer whose ticket is open on another channel joins that ticket."""

from __future__ import annotations

from pathlib import Path

from gateway.intake import BotSetup
from tests.conftest import make_config, started
from tests.phone.conftest import call_message, cti, phone_inbox, settled
from tests.phone.test_cti_webhook import CALLER, E164, hangup, new_call


async def test_a_missed_call_joins_the_open_web_chat_ticket_and_raises_no_second_one(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    web = {"name": "web", "channel": "webchat", "allowed_origins": ["*"]}
    async with started(make_config(tmp_path, inboxes=[phone_inbox("tel", settle_s=0.3), web]), bot_setup) as gw:
        chat = await gw.chat()
        await chat.say("转人工")
        await chat.expect("status")
        [ticket] = (await gw.api("GET", "/tickets"))[1]["tickets"]
        linked = await gw.api(
            "POST", f"/contacts/{ticket['contact_id']}/identities", json={"identity": f"phone:{E164}"}
        )
        assert linked[0] == 201
        await cti(gw, "tel", new_call("f1", caller=CALLER))
        await cti(gw, "tel", hangup("f1", "noAnswer", caller=CALLER))
        await settled(gw)
        message = await call_message(gw, "tel", "f1")
        assert message is not None and message.ticket_id == ticket["id"]
        assert [t["id"] for t in (await gw.api("GET", "/tickets"))[1]["tickets"]] == [ticket["id"]]
        _, full = await gw.api("GET", f"/tickets/{ticket['id']}")
        assert any(m["channel"] == "phone" for m in full["messages"])
