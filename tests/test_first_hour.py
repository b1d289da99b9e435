"""A new operator's first hour: the page at /chat, readable JSON, clear config errors, a page true to the config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.setup import BotSetup
from core.config import Config, ConfigError, load_config, parse_config
from tests.conftest import API_TOKEN, ROOT, Gateway, make_config, started


async def test_chat_without_a_slash_redirects_to_the_page(gateway: Gateway) -> None:
    async with gateway.http.get(gateway.url + "/chat?lang=zh", allow_redirects=False) as resp:
        assert resp.status == 301 and resp.headers["Location"] == "/chat/?lang=zh"
    async with gateway.http.get(gateway.url + "/chat") as resp:
        assert resp.status == 200 and "huiliu-chat" in await resp.text()


async def test_rest_json_keeps_chinese_readable(gateway: Gateway) -> None:
    chat = await gateway.chat()
    await chat.say("转人工")
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with gateway.http.get(gateway.url + "/api/v1/tickets/HL-000001", headers=headers) as resp:
        raw = await resp.read()
    assert resp.status == 200
    assert "转人工".encode() in raw and b"\\u" not in raw
    async with gateway.http.get(gateway.url + "/api/v1/faqs", headers=headers) as resp:
        assert "退款".encode() in await resp.read()


async def test_a_new_visitor_is_welcomed_with_their_conversation(gateway: Gateway) -> None:
    chat = await gateway.chat()
    welcome = chat.frames[0]
    assert welcome["type"] == "welcome" and welcome["conversation_id"].startswith("cv_")
    await chat.say("转人工")
    status, body = await gateway.api("GET", "/tickets")
    assert status == 200 and body["tickets"][0]["conversation_id"] == welcome["conversation_id"]
    again = await gateway.chat(token=chat.token)
    assert again.frames[0]["conversation_id"] == welcome["conversation_id"]


@pytest.fixture
def office_hours(tmp_path: Path) -> Config:
    hours = {"timezone": "Asia/Shanghai", "days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00"}
    return make_config(tmp_path, bot={"kb": str(ROOT / "kb" / "faq.yaml"), "business_hours": hours})


async def test_the_demo_page_states_the_configured_hours(office_hours: Config, bot_setup: BotSetup) -> None:
    config = office_hours
    async with started(config, bot_setup) as gw, gw.http.get(gw.url + "/chat/") as resp:
        page = await resp.text()
    assert "周一、周二、周三、周四、周五 09:00–18:00（Asia/Shanghai）/ Mon, Tue, Wed, Thu, Fri 09:00–18:00" in page
    assert "22:00" not in page and "7×24" not in page and "around the clock" not in page


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"inboxes": [{"name": "web", "channel": "webchat", "alowed_origins": []}]},
            "inboxes[0].alowed_origins: unknown key; did you mean `allowed_origins`?",
        ),
        ({"sever": {"port": 80}}, "sever: unknown key; did you mean `server`?"),
        ({"store": {"backend": "redis", "urll": "redis://x"}}, "store.urll: unknown key; did you mean `url`?"),
        ({"webhooks": [{"url": "http://h", "secrets": ["s" * 16], "timeout": 3}]}, "did you mean `timeout_s`?"),
        ({"zzz": 1}, "zzz: unknown key; known keys: api, "),
    ],
)
def test_an_unknown_key_gets_the_closest_known_one(given: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(given)
    assert message in str(caught.value)


def test_a_yaml_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("server:\n  port: 8080\n  host: [oops\nbot: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert text.startswith(f"{path}, line 4, column 4: not valid YAML:") and "<unicode string>" not in text


def test_the_sample_config_loads_as_shipped() -> None:
    root = ROOT
    config = load_config(root / "config.yaml", env={})
    assert config.server.port == 8080 and config.resolve(config.bot.kb) == root / "kb" / "faq.yaml"
    assert yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8"))["bot"]["business_hours"]
