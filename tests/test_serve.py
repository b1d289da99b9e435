"""`huiliu serve` as an operator runs it: config errors stop it clearly, SIGTERM stops it gracefully."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.conftest import API_TOKEN, ROOT
from tests.processes import HUILIU, ready, serve


def write_config(tmp_path: Path, **changes: object) -> Path:
    data: dict[str, object] = {
        "data_dir": str(tmp_path / "data"),
        "server": {"host": "127.0.0.1", "port": 8080, "shutdown_grace_s": 5},
        "api": {"tokens": ["${TEST_API_TOKEN}"]},
        "bot": {"kb": str(ROOT / "kb" / "faq.yaml")},
        "inboxes": [{"name": "web", "channel": "webchat"}],
    }
    data.update(changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


async def run_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *HUILIU,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TEST_API_TOKEN": API_TOKEN},
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_invalid_config_stops_with_the_key_path(tmp_path: Path) -> None:
    path = write_config(tmp_path, server={"port": "eighty"})
    code, err = await run_cli("serve", "-c", str(path))
    assert code == 2
    assert "server.port" in err and "integer" in err


async def test_unknown_key_and_missing_secret_are_named(tmp_path: Path) -> None:
    path = write_config(tmp_path, inboxes=[{"name": "web", "channel": "webchat", "alowed_origins": []}])
    code, err = await run_cli("serve", "-c", str(path))
    assert code == 2 and "alowed_origins" in err
    path = write_config(tmp_path, api={"tokens": ["${HUILIU_TEST_UNSET_VAR}"]})
    code, err = await run_cli("serve", "-c", str(path))
    assert code == 2 and "api.tokens[0]" in err and "HUILIU_TEST_UNSET_VAR" in err


async def test_missing_kb_file_stops_with_its_path(tmp_path: Path) -> None:
    path = write_config(tmp_path, bot={"kb": str(tmp_path / "nope.yaml")})
    code, err = await run_cli("serve", "-c", str(path))
    assert code == 2 and "nope.yaml" in err


async def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    code, err = await run_cli("serve", "-c", str(tmp_path / "absent.yaml"))
    assert code == 2 and "absent.yaml" in err


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, Path]]:
    path = write_config(tmp_path)
    proc, url = await serve(path, output=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            await ready(http, url, "/healthz")
        yield proc, url, path
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_is_healthy_ready_and_stops_gracefully_on_sigterm(
    served: tuple[asyncio.subprocess.Process, str, Path],
) -> None:
    proc, url, _ = served
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/readyz") as resp:
            body = await resp.json()
            assert resp.status == 200 and body["store"] == "ok" and body["connectors"] == {"web": "running"}
        ws = await http.ws_connect(url.replace("http", "ws") + "/chat/ws")
        await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
        assert (await ws.receive_json(timeout=10))["type"] == "welcome"
        await ws.send_json({"type": "message", "id": "m1", "text": "我想退款"})
        proc.send_signal(signal.SIGTERM)
        seen = []
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            seen.append(json.loads(msg.data)["type"])
        assert ws.close_code == 1001  # told to go away, not cut off
        await ws.close()
        code = await asyncio.wait_for(proc.wait(), 15)
        assert code == 0
        assert proc.stdout is not None
        log = (await proc.stdout.read()).decode()
        assert "Traceback" not in log


async def test_a_message_sent_right_before_sigterm_is_answered_once_after_restart(
    served: tuple[asyncio.subprocess.Process, str, Path], tmp_path: Path
) -> None:
    proc, url, path = served
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url.replace("http", "ws") + "/chat/ws")
        await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
        token = (await ws.receive_json(timeout=10))["token"]
        await ws.send_json({"type": "message", "id": "last-words", "text": "怎么开发票"})
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
        await ws.close()
    again, url = await serve(path)
    try:
        async with aiohttp.ClientSession() as http:
            await ready(http, url)
            ws = await http.ws_connect(url.replace("http", "ws") + "/chat/ws")
            await ws.send_json({"type": "hello", "token": token, "last_seq": 0})
            await ws.receive_json(timeout=10)
            # Resending after a reconnect is what the widget does for an unacknowledged message.
            await ws.send_json({"type": "message", "id": "last-words", "text": "怎么开发票"})
            frames = []
            while not any(f["type"] == "ack" for f in frames) or not any(f["type"] == "message" for f in frames):
                frames.append(await ws.receive_json(timeout=10))
            await ws.send_json({"type": "ping"})
            while (await ws.receive_json(timeout=10))["type"] != "pong":
                pass
            answers = [f for f in frames if f["type"] == "message"]
            assert len(answers) == 1 and "发票" in answers[0]["text"]
            # Whether the first life stored it before going down (ack says duplicate) is a race; either
            # way the customer gets exactly one answer.
            assert len([f for f in frames if f["type"] == "ack"]) == 1
            await ws.close()
    finally:
        again.send_signal(signal.SIGTERM)
        await asyncio.wait_for(again.wait(), 15)
