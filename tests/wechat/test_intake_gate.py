"""The pushes taken in at once are bounded per process, not per inbox: two WeChat inboxes with 40 each would
together outrun a Redis pool of 50 and send a burst back to 503s waiting for connections."""

from __future__ import annotations

from pathlib import Path

from connectors.base import ACTIVE_PUSHES
from connectors.wechat.connector import WechatConnector
from gateway.intake import BotSetup
from gateway.wiring import build_gateway, intake_slots
from tests.conftest import make_config


def _wechat(name: str) -> dict[str, str]:
    return {"name": name, "channel": "wechat", "token": "t" * 8, "app_id": f"wx{name}", "app_secret": "s" * 16}


def test_inboxes_share_one_gate_sized_below_the_redis_pool(tmp_path: Path, bot_setup: BotSetup) -> None:
    redis = {"backend": "redis", "url": "redis://127.0.0.1:6379/0", "prefix": "gate-test:", "max_connections": 10}
    config = make_config(tmp_path, store=redis, inboxes=[_wechat("oa1"), _wechat("oa2")])
    gw = build_gateway(config, bot_setup)
    gates = {id(c._active) for c in gw.connectors.values() if isinstance(c, WechatConnector)}
    assert len(gates) == 1
    assert intake_slots(config) == 8 < 10


def test_default_pool_keeps_the_measured_forty(tmp_path: Path) -> None:
    redis = {"backend": "redis", "url": "redis://127.0.0.1:6379/0", "prefix": "gate-test:"}
    assert intake_slots(make_config(tmp_path, store=redis)) == ACTIVE_PUSHES == 40
    assert intake_slots(make_config(tmp_path)) == ACTIVE_PUSHES
