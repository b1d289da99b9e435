"""Full-stack fixtures: the real app, SQLite in tmp_path, driven through its real routes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from blockbuster import BlockBuster, blockbuster_ctx

from bot.setup import BotSetup
from core.clock import Clock, utcnow
from core.config import Config, parse_config
from core.model import QuarantinedItem
from core.store import open_store
from gateway.app import build_bot, create_app
from gateway.outbound import RETRY_DELAYS_S

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
API_TOKEN = "test-token-0123456789"
REQUIRE_SERVICES = os.environ.get("HUILIU_REQUIRE_SERVICES") == "1"


def need(condition: bool, reason: str) -> None:
    """Skip when a service or file is missing, unless CI demands everything be present."""
    if condition:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"HUILIU_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test whose code blocks the event loop."""
    with blockbuster_ctx(["core", "connectors", "gateway", "normalizer", "bot"]) as bb:
        yield bb


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    data: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_grace_s": 5},
        "api": {"tokens": [API_TOKEN]},
        "bot": {"kb": str(ROOT / "kb" / "faq.yaml")},
        "inboxes": [{"name": "web", "channel": "webchat", "allowed_origins": ["*"]}],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data, base_dir=ROOT)


@pytest.fixture(scope="session")
def bot_setup() -> BotSetup:
    """The sample KB's index, built once: jieba takes about a second to start."""
    return build_bot(make_config(Path("/nonexistent")))


@dataclass
class Gateway:
    server: TestServer
    http: aiohttp.ClientSession
    config: Config

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/chat/ws"

    async def api(self, method: str, path: str, *, token: str = API_TOKEN, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        async with self.http.request(method, self.url + "/api/v1" + path, headers=headers, **kw) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, body

    async def chat(self, token: str | None = None, last_seq: int = 0) -> ChatClient:
        ws = await self.http.ws_connect(self.ws_url())
        client = ChatClient(ws)
        await client.hello(token, last_seq)
        return client


@dataclass
class ChatClient:
    """A visitor's socket, speaking the documented frame protocol."""

    ws: aiohttp.ClientWebSocketResponse
    token: str = ""
    frames: list[dict[str, Any]] = field(default_factory=list)
    _n: int = 0

    async def hello(self, token: str | None, last_seq: int) -> dict[str, Any]:
        await self.ws.send_json({"type": "hello", "token": token, "last_seq": last_seq})
        welcome = await self.expect("welcome")
        self.token = welcome["token"]
        return welcome

    async def recv(self, wait_s: float = 10) -> dict[str, Any]:
        frame: dict[str, Any] = await self.ws.receive_json(timeout=wait_s)
        self.frames.append(frame)
        return frame

    async def expect(self, kind: str, wait_s: float = 10) -> dict[str, Any]:
        """The next frame of ``kind``; frames of other kinds on the way are kept in ``frames``."""
        async with asyncio.timeout(wait_s):
            while True:
                frame = await self.recv()
                if frame["type"] == kind:
                    return frame

    def next_id(self) -> str:
        self._n += 1
        return f"c{self._n}"

    async def say(self, text: str, client_id: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Send a message; return its ack and the reply that follows."""
        await self.ws.send_json({"type": "message", "id": client_id or self.next_id(), "text": text})
        ack = await self.expect("ack")
        reply = await self.expect("message")
        return ack, reply

    async def send_raw(self, data: str) -> None:
        await self.ws.send_str(data)

    @property
    def durable(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] in ("message", "status")]

    async def close(self) -> None:
        await self.ws.close()


@pytest.fixture
async def gateway(tmp_path: Path, bot_setup: BotSetup) -> AsyncIterator[Gateway]:
    config = make_config(tmp_path)
    async with started(config, bot_setup) as gw:
        yield gw


class started:
    """Run the real app on a real loopback port."""

    def __init__(
        self,
        config: Config,
        bot: BotSetup,
        clock: Clock = utcnow,
        *,
        retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
    ) -> None:
        self.config = config
        self.server = TestServer(create_app(config, bot, clock=clock, retry_delays_s=retry_delays_s), host="127.0.0.1")
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Gateway:
        await self.server.start_server()
        self.http = aiohttp.ClientSession()
        return Gateway(self.server, self.http, self.config)

    async def __aexit__(self, *exc: object) -> None:
        assert self.http is not None
        await self.http.close()
        await self.server.close()


async def quarantine_items(config: Config, items: list[QuarantinedItem]) -> None:
    """Put items in the configured store's quarantine, as a connector would have (for the replay CLI tests)."""
    store = open_store(config)
    await store.open()
    try:
        for item in items:
            await store.quarantine(item)
    finally:
        await store.close()


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder another user can read (pytest's tmp_path lives under a root-only folder)."""
    path = Path(tempfile.mkdtemp(prefix="huiliu-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
