"""``huiliu quarantine replay`` for WeChat pushes and CDR rows: kept raw when they could not be read, taken in
once they can (after a fix), with nothing stored twice."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from wechatpy.crypto import WeChatCrypto

from connectors.wechat.parse import read_xml
from core.config import load_config
from core.model import Channel, QuarantinedItem
from gateway.cli import main
from tests.conftest import ROOT, quarantine_items
from tests.phone.rows import asterisk
from tests.wechat.conftest import AES_KEY, APP_ID, TOKEN, text_xml


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    data = {
        "data_dir": str(tmp_path / "data"),
        "server": {"shutdown_grace_s": 0.5},
        "bot": {"kb": str(ROOT / "kb" / "faq.yaml")},
        "inboxes": [
            {"name": "oa", "channel": "wechat", "token": TOKEN, "app_id": APP_ID, "app_secret": "s",
             "encoding_aes_key": AES_KEY, "mode": "safe", "api_base": "http://127.0.0.1:9"},
            {"name": "tel", "channel": "phone", "token": "cti-token-0123456789"},
        ],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _item(item_id: str, channel: Channel, inbox: str, raw: bytes) -> QuarantinedItem:
    return QuarantinedItem(
        id=item_id, channel=channel, inbox=inbox, reason="unreadable then", raw=raw, received_at=datetime.now(UTC)
    )


def _encrypted(xml: str) -> bytes:
    """The HTTP body WeChat posts in safe mode, made with wechatpy's own crypto."""
    encrypt = read_xml(WeChatCrypto(TOKEN, AES_KEY, APP_ID).encrypt_message(xml, "nonce", "1700000000"))["Encrypt"]
    return f"<xml><ToUserName><![CDATA[gh_huiliu]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>".encode()


def test_replay_takes_in_wechat_pushes_and_cdr_rows_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config_file(tmp_path)
    config = load_config(path)
    items = [
        _item("wechat:oa:plain", Channel.WECHAT, "oa", text_xml("怎么开发票", openid="oQ1", msg_id="9100").encode()),
        _item("wechat:oa:enc", Channel.WECHAT, "oa", _encrypted(text_xml("我想退款", openid="oQ2", msg_id="9101"))),
        _item("wechat:oa:broken", Channel.WECHAT, "oa", b"<xml><MsgType>text</MsgType>"),
        _item("cdr:tel:Master.csv:1:7", Channel.PHONE, "tel", asterisk(disposition="NO ANSWER", answer="").encode()),
        _item("cti:tel:abc", Channel.PHONE, "tel", b'{"event": "newCall"}'),
    ]
    asyncio.run(quarantine_items(config, items))
    ids = [i.id for i in items]

    assert main(["quarantine", "replay", *ids, "-c", str(path)]) == 1  # some still fail
    out = capsys.readouterr().out
    assert "wechat:oa:plain\tok\tstored as message msg_" in out
    assert "wechat:oa:enc\tok\tstored as message msg_" in out
    assert "wechat:oa:broken\tfailed\tstill cannot be read" in out
    assert "cdr:tel:Master.csv:1:7\tok\timported 1 call(s), 0 already there" in out
    assert "cti:tel:abc\tfailed\tstill cannot be read" in out

    db = config.data_path / "huiliu.sqlite3"
    with sqlite3.connect(db) as conn:
        inbound = conn.execute(
            "SELECT channel, external_id FROM messages WHERE direction = 'inbound' ORDER BY channel, external_id"
        ).fetchall()
        replies = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()
    assert [row[0] for row in inbound] == ["phone", "wechat", "wechat"]
    assert {row[1] for row in inbound if row[0] == "wechat"} == {"9100", "9101"}
    # The bot answered both pushes; WeChat's API is not reachable offline, so the replies wait in the outbox
    # for the gateway to send them.
    assert replies == (2,)

    # A second replay of the good ones stores nothing new (and they are marked replayed already).
    assert main(["quarantine", "list", "-c", str(path)]) == 0
    listed = capsys.readouterr().out
    assert "wechat:oa:plain" not in listed and "wechat:oa:broken" in listed and "cti:tel:abc" in listed
    assert main(["quarantine", "replay", "wechat:oa:plain", "-c", str(path)]) == 0
    assert "duplicate of message msg_" in capsys.readouterr().out
