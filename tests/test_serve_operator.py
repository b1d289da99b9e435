"""What an operator sees from `huiliu serve`: one-line bind errors, a start-up summary, access logs, a graceful stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from core.config import parse_config
from gateway.app import periodically
from gateway.serving import startup_summary
from tests.conftest import API_TOKEN
from tests.processes import HUILIU, free_port, ready, run_as_non_root, serve, user_tmp
from tests.test_serve import run_cli, write_config


async def test_a_port_in_use_is_one_line_naming_the_address(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = await run_cli("serve", "-c", str(write_config(tmp_path)), "--port", str(port))
    assert code == 2
    assert err.strip() == (
        f"huiliu: cannot listen on 127.0.0.1:{port}: the address is already in use "
        "(is another huiliu running? choose another with --port)"
    )


async def test_a_privileged_port_as_a_normal_user_is_one_line(open_dir: Path) -> None:
    config = write_config(open_dir)
    run_as = run_as_non_root()
    if (
        not run_as
        and int(await asyncio.to_thread(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text)) <= 1
    ):
        pytest.skip("this machine lets anyone bind any port")
    proc = await asyncio.create_subprocess_exec(
        *run_as, *HUILIU, "serve", "-c", str(config), "--port", "1",
        cwd="/", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TEST_API_TOKEN": API_TOKEN, "TMPDIR": str(user_tmp(open_dir))},
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert err.decode().strip() == (
        "huiliu: cannot listen on 127.0.0.1:1: permission denied "
        "(ports below 1024 need root or CAP_NET_BIND_SERVICE; use --port)"
    )


async def test_version_is_printed() -> None:
    proc = await asyncio.create_subprocess_exec(*HUILIU, "--version", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and out.decode().startswith("huiliu 0.")


def test_start_up_summary_names_the_store_without_its_password(tmp_path: Path) -> None:
    config = parse_config(
        {
            "store": {"backend": "redis", "url": "redis://:s3cret-pass@redis.internal:6379/0", "prefix": "hl:"},
            "inboxes": [
                {"name": "web", "channel": "webchat", "path": "/support"},
                {"name": "hotline", "channel": "phone", "token": "cti-token-0123"},
            ],
        },
        base_dir=tmp_path,
    )
    text = startup_summary(config, "http://0.0.0.0:8080", 7, "uvloop")
    assert "redis redis://***@redis.internal:6379/0 prefix hl:" in text and "s3cret" not in text
    assert "inbox web (webchat): http://0.0.0.0:8080/support/" in text
    assert "inbox hotline (phone): http://0.0.0.0:8080/cti/hotline" in text and "cti-token" not in text
    assert "(7 entries)" in text


async def test_start_up_summary_access_log_and_json_request_ids(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        *HUILIU, "--log-format", "json", "serve", "-c", str(config), "--port", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TEST_API_TOKEN": API_TOKEN},
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            await ready(http, url, "/healthz")
            async with http.get(url + "/api/v1/tickets?token=leak-me", headers={"X-Request-Id": "trace-42"}) as resp:
                assert resp.status == 401 and resp.headers["X-Request-Id"] == "trace-42"
            async with http.get(url + "/healthz") as resp:
                made = resp.headers["X-Request-Id"]
                assert len(made) == 32
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
    assert proc.stderr is not None
    lines = [json.loads(line) for line in (await proc.stderr.read()).decode().splitlines() if line.startswith("{")]
    summary = next(line for line in lines if "listening on" in line["message"])
    assert summary["level"] == "INFO"
    text = summary["message"]
    assert f"listening on {url}" in text and "huiliu 0." in text
    assert "event loop: uvloop" in text  # installed with huiliu, so "auto" takes it
    assert f"store: sqlite {tmp_path / 'data' / 'huiliu.sqlite3'}" in text
    assert "(25 entries)" in text
    assert f"inbox web (webchat): {url}/chat/" in text
    access = [line for line in lines if line["logger"] == "huiliu.access"]
    denied = next(line for line in access if line["path"] == "/api/v1/tickets")
    assert denied["status"] == 401 and denied["request_id"] == "trace-42" and denied["method"] == "GET"
    assert any(line["request_id"] == made for line in access)
    assert not any("leak-me" in json.dumps(line) for line in lines)  # query strings (tokens) are not logged


WEBHOOK_SECRET = "webhook-secret-0123456789"


async def test_sigterm_lets_a_slow_webhook_delivery_finish_and_it_is_not_sent_again(tmp_path: Path) -> None:
    deliveries: list[str] = []
    first_arrived = asyncio.Event()
    finished: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        delivery = request.headers["Huiliu-Delivery-Id"]
        deliveries.append(delivery)
        if len(deliveries) == 1:
            first_arrived.set()
            await asyncio.sleep(3)  # slower than shutdown used to allow, well within the grace period
        finished.append(delivery)
        return web.json_response({})

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    runner = web.AppRunner(receiver)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    config = write_config(
        tmp_path,
        server={"host": "127.0.0.1", "port": 8080, "shutdown_grace_s": 10},
        webhooks=[
            {
                "name": "slow",
                "url": f"http://127.0.0.1:{hook_port}/hook",
                "secrets": [WEBHOOK_SECRET],
                "poll_s": 0.2,
                "allow_http": True,  # the receiver is a plain-http test server on loopback
                "allow_private": True,
            }
        ],
    )
    try:
        proc, url = await serve(config, output=asyncio.subprocess.PIPE)
        async with aiohttp.ClientSession() as http:
            await ready(http, url)
            ws = await http.ws_connect(url.replace("http", "ws") + "/chat/ws")
            await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
            await ws.receive_json(timeout=10)
            await ws.send_json({"type": "message", "id": "m1", "text": "怎么开发票"})
            await asyncio.wait_for(first_arrived.wait(), 20)
            first = deliveries[0]
            proc.send_signal(signal.SIGTERM)
            began = time.monotonic()
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            took = time.monotonic() - began
            await ws.close()
        assert first in finished
        assert took >= 2, f"stopped after {took:.1f}s, before the delivery in flight was answered"
        assert proc.stdout is not None
        output = (await proc.stdout.read()).decode()
        assert "cancelled" not in output and "Traceback" not in output

        # After a restart the rest of the conversation's events go out; the one answered during shutdown does not.
        before = len(deliveries)
        again, url = await serve(config)
        try:
            async with aiohttp.ClientSession() as http:
                await ready(http, url)
            for _ in range(50):
                if len(deliveries) > before:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1)
        finally:
            again.send_signal(signal.SIGTERM)
            await asyncio.wait_for(again.wait(), 20)
        assert deliveries.count(first) == 1, deliveries
    finally:
        await runner.cleanup()


async def test_an_unreachable_store_at_start_is_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = write_config(tmp_path, store={"backend": "redis", "url": f"redis://127.0.0.1:{port}/0", "prefix": "x:"})
    code, err = await run_cli("serve", "-c", str(config), "--port", str(free_port()))
    assert code == 2 and "Traceback" not in err
    said = [line for line in err.splitlines() if line.startswith("huiliu: ")]  # log lines may come before it
    assert len(said) == 1 and said[0].startswith("huiliu: cannot start: ") and f"127.0.0.1:{port}" in said[0]


async def test_a_periodic_job_under_way_at_shutdown_finishes_within_the_grace() -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def job() -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.set()

    async with periodically(0.01, job, name="test", grace_s=5):
        await asyncio.wait_for(started.wait(), 5)
    assert finished.is_set()
    async with periodically(3600, job, name="idle", grace_s=5):
        pass  # waiting for the next run: stops at once
