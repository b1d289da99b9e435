"""WeChat fixtures: a fake WeChat API, inbox configs pointing at it, and a client that signs pushes like WeChat."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from wechatpy.crypto import WeChatCrypto

from connectors.wechat.parse import read_xml
from connectors.wechat.signature import sign
from core.config import Config
from tests.conftest import SHARED, Gateway, make_config
from tests.wechat.fake_api import FakeWechat

CORPUS = SHARED / "corpora" / "wechat"
TOKEN = "huiliutoken"
APP_ID = "wx1f2e3d4c5b6a7980"
APP_SECRET = "fake-app-secret-0123456789"
AES_KEY = "Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OWFiY2RlZmdoaWo"  # 43 chars, a fresh key for tests


def manifest() -> list[dict[str, Any]]:
    path = CORPUS / "manifest_plain.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []


def inbox(name: str = "oa", **overrides: Any) -> dict[str, Any]:
    return {
        "name": name,
        "channel": "wechat",
        "token": TOKEN,
        "app_id": APP_ID,
        "app_secret": APP_SECRET,
        **overrides,
    }


def wechat_config(tmp_path: Path, fake: FakeWechat, *inboxes: dict[str, Any]) -> Config:
    boxes = [{**box, "api_base": fake.url} for box in (inboxes or (inbox(),))]
    return make_config(tmp_path, inboxes=boxes)


@pytest.fixture
async def fake_wechat() -> AsyncIterator[FakeWechat]:
    fake = await FakeWechat(app_id=APP_ID, app_secret=APP_SECRET).start()
    yield fake
    await fake.close()


def text_xml(text: str, *, openid: str = "oUser0001", msg_id: str = "6100000000000000001", extra: str = "") -> str:
    return (
        f"<xml><ToUserName><![CDATA[gh_huiliu]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId>{extra}</xml>"
    )


def event_xml(event: str, *, openid: str = "oUser0001", key: str = "", created: int | None = None) -> str:
    key_xml = f"<EventKey><![CDATA[{key}]]></EventKey>" if key else ""
    return (
        f"<xml><ToUserName><![CDATA[gh_huiliu]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{created or int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[{event}]]></Event>{key_xml}</xml>"
    )


@dataclass
class Pushed:
    status: int
    text: str


@dataclass
class WechatClient:
    """Pushes the way WeChat's servers do: signed query string, optionally encrypted body."""

    gw: Gateway
    inbox: str = "oa"
    token: str = TOKEN
    aes_key: str | None = None
    app_id: str = APP_ID

    def query(self, *, timestamp: str | None = None, nonce: str | None = None) -> dict[str, str]:
        timestamp = timestamp or str(int(time.time()))
        nonce = nonce or str(secrets.randbelow(10**9))
        return {"timestamp": timestamp, "nonce": nonce, "signature": sign(self.token, timestamp, nonce)}

    async def post(self, body: str | bytes, params: dict[str, str], **kw: Any) -> Pushed:
        url = f"{self.gw.url}/wechat/{self.inbox}"
        async with self.gw.http.post(url, params=params, data=body, **kw) as resp:
            return Pushed(resp.status, await resp.text())

    async def push(self, xml: str | bytes, *, nonce: str | None = None, timestamp: str | None = None) -> Pushed:
        params = self.query(timestamp=timestamp, nonce=nonce)
        if self.aes_key is None:
            return await self.post(xml, params)
        # Encrypted with wechatpy's own implementation, independent of ours.
        envelope = WeChatCrypto(self.token, self.aes_key, self.app_id).encrypt_message(
            xml if isinstance(xml, str) else xml.decode(), params["nonce"], params["timestamp"]
        )
        fields = read_xml(envelope)
        params |= {"encrypt_type": "aes", "msg_signature": fields["MsgSignature"]}
        encrypted = fields["Encrypt"]
        body = f"<xml><ToUserName><![CDATA[gh_huiliu]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        return await self.post(body, params)

    def open_reply(self, reply: str) -> str:
        """Decrypt an encrypted passive reply with wechatpy, checking its signature."""
        assert self.aes_key is not None
        fields = read_xml(reply)
        plain: str = WeChatCrypto(self.token, self.aes_key, self.app_id).decrypt_message(
            reply, fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"]
        )
        return plain
