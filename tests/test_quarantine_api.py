"""/api/v1/quarantine: the operator sees unreadable input and replays it through the running gateway."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bot.setup import BotSetup
from core.model import Channel, QuarantinedItem
from gateway.app import GATEWAY
from tests.conftest import make_config, started
from tests.test_openapi import assert_documented
from tests.wechat.conftest import inbox as wechat_inbox
from tests.wechat.conftest import text_xml


def _item(item_id: str, raw: bytes) -> QuarantinedItem:
    return QuarantinedItem(
        id=item_id, channel=Channel.WECHAT, inbox="oa", reason="unreadable", raw=raw, received_at=datetime.now(UTC)
    )


async def test_list_show_and_replay_once(tmp_path: Path, bot_setup: BotSetup) -> None:
    config = make_config(tmp_path, inboxes=[wechat_inbox(api_base="http://127.0.0.1:9")])
    async with started(config, bot_setup) as gw:
        store = gw.server.app[GATEWAY].store
        await store.quarantine(_item("good", text_xml("我想退款", openid="oQ9", msg_id="9300").encode()))
        await store.quarantine(_item("broken", b"<xml><MsgType>text</MsgType>"))

        status, listing = await gw.api("GET", "/quarantine")
        assert status == 200 and [i["id"] for i in listing["items"]] == ["good", "broken"]
        assert_documented("GET", "/api/v1/quarantine", 200, listing)
        status, shown = await gw.api("GET", "/quarantine/good")
        assert status == 200 and "我想退款" in shown["preview"]
        assert_documented("GET", "/api/v1/quarantine/{item}", 200, shown)

        status, replayed = await gw.api("POST", "/quarantine/good/replay")
        assert status == 200 and replayed["detail"].startswith("stored as message")
        assert_documented("POST", "/api/v1/quarantine/{item}/replay", 200, replayed)
        status, again = await gw.api("POST", "/quarantine/good/replay")
        assert status == 409
        assert_documented("POST", "/api/v1/quarantine/{item}/replay", 409, again)
        status, still = await gw.api("POST", "/quarantine/broken/replay")
        assert status == 422 and still["error"]["code"] == "still_unreadable"
        status, _ = await gw.api("POST", "/quarantine/nope/replay")
        assert status == 404

        _, listing = await gw.api("GET", "/quarantine")
        assert [i["id"] for i in listing["items"]] == ["broken"]
        _, audit = await gw.api("GET", "/audit?action=quarantine.replay")
        assert [e["target"] for e in audit["entries"]] == ["quarantine:good"]
        assert (await gw.api("GET", "/quarantine?limit=0"))[0] == 400
        assert (await gw.api("GET", "/quarantine", token="nope-nope-nope"))[0] == 401
