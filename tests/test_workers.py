"""``huiliu serve --workers 2``: real processes on one port, on SQLite and Redis, with one process's guarantees."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from connectors.wechat.signature import sign
from tests.conftest import API_TOKEN
from tests.processes import free_port
from tests.redis_util import REDIS_URL, redis_store
from tests.test_serve import run_cli, write_config
from tests.wechat.conftest import TOKEN, text_xml
from tests.wechat.conftest import inbox as wechat_inbox
from tests.workers import alive, parent_of, pinned, serve_workers, stop, worker_pids

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
WEB = {"name": "web", "channel": "webchat", "allowed_origins": ["*"]}


@pytest.fixture(params=["sqlite", "redis"])
async def store_config(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {}
        return
    store = redis_store()  # skips without Redis; its prefix's keys go when it closes
    yield {"store": {"backend": "redis", "url": REDIS_URL, "prefix": store.tag}}
    await store.open()
    await store.close()


async def _until(ws: aiohttp.ClientWebSocketResponse, kind: str, **match: Any) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            frame: dict[str, Any] = await ws.receive_json()
            if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                return frame


async def test_every_worker_serves_the_port_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proc, url = await serve_workers(config, log=tmp_path / "serve.log")
    try:
        pids = await worker_pids(url, 2)  # /readyz answers 200 on each worker, and says which one answered
        assert all(parent_of(pid) == proc.pid for pid in pids.values())
        async with pinned(url, 1) as (http, reused):
            ws = await http.ws_connect(url.replace("http", "ws") + "/chat/ws")
            assert reused.created == 1  # the socket is on worker 1
            await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
            assert (await ws.receive_json(timeout=10))["type"] == "welcome"
            proc.send_signal(signal.SIGTERM)
            closing = await ws.receive(timeout=15)
            assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 1001  # told to go away, not cut off
            await ws.close()
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert not any(alive(pid) for pid in pids.values())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = (tmp_path / "serve.log").read_text()
    assert "2 workers serve" in log and log.count("stopping: in-flight work has 5 s") == 2
    assert "Traceback" not in log


async def test_a_worker_killed_with_sigkill_is_replaced(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proc, url = await serve_workers(config, log=tmp_path / "serve.log")
    try:
        before = await worker_pids(url, 2)
        victim = before[1]
        os.kill(victim, signal.SIGKILL)  # no clean shutdown, no goodbye on its link
        async with asyncio.timeout(60):
            while True:
                now = await worker_pids(url, 2)
                if now[1] != victim:
                    break
                await asyncio.sleep(0.2)
        assert now[0] == before[0]  # the other worker served on throughout
        assert parent_of(now[1]) == proc.pid
        # The replacement serves chats like the first did.
        async with pinned(url, 1) as (http, _):
            ws = await http.ws_connect(url.replace("http", "ws") + "/chat/ws")
            await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
            assert (await ws.receive_json(timeout=10))["type"] == "welcome"
            await ws.close()
        assert await stop(proc) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = (tmp_path / "serve.log").read_text()
    assert f"worker 2 (pid {victim}) died (killed by SIGKILL)" in log


async def test_an_agent_reply_through_one_worker_reaches_the_visitor_on_the_other(
    tmp_path: Path, store_config: dict[str, Any]
) -> None:
    config = write_config(tmp_path, inboxes=[WEB], **store_config)
    proc, url = await serve_workers(config, log=tmp_path / "serve.log")
    try:
        await worker_pids(url, 2)
        async with pinned(url, 0) as (agent, _), pinned(url, 1) as (visitor, reused):
            ws = await visitor.ws_connect(url.replace("http", "ws") + "/chat/ws")
            assert reused.created == 1  # the visitor's socket is on worker 1
            await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
            welcome = await _until(ws, "welcome")
            await ws.send_json({"type": "message", "id": "c1", "text": "转人工"})
            await _until(ws, "status", status="waiting_for_agent")
            async with agent.get(url + "/api/v1/tickets?status=new", headers=AUTH) as resp:
                (ticket,) = (await resp.json())["tickets"]
            async with agent.post(url + f"/api/v1/tickets/{ticket['id']}/typing", json={"on": True}, headers=AUTH) as r:
                assert r.status == 202 and (await r.json()) == {"delivered": True}
            assert (await _until(ws, "typing"))["on"] is True
            async with agent.post(
                url + f"/api/v1/tickets/{ticket['id']}/replies",
                json={"text": "您好，我是客服小王", "agent": "wang"},
                headers={**AUTH, "Idempotency-Key": "reply-1"},
            ) as resp:
                body = await resp.json()
                assert resp.status == 201 and body["delivery"] == "sent", body  # live, on the other worker
            reply = await _until(ws, "message", author="agent")
            assert reply["text"] == "您好，我是客服小王"
            # The agent moves the ticket: the visitor's status changes on worker 1 as well.
            async with agent.patch(
                url + f"/api/v1/tickets/{ticket['id']}", json={"status": "resolved"}, headers=AUTH
            ) as resp:
                assert resp.status == 200, await resp.text()
            await _until(ws, "status", status="resolved")
            await ws.close()
            # Reconnecting to the other worker replays the same history, in seq order.
            again = await agent.ws_connect(url.replace("http", "ws") + "/chat/ws")
            await again.send_json({"type": "hello", "token": welcome["token"], "last_seq": 0})
            frames = [await again.receive_json(timeout=10)]
            while not any(f.get("author") == "agent" for f in frames):
                frames.append(await again.receive_json(timeout=10))
            seqs = [f["seq"] for f in frames[1:]]
            assert seqs == list(range(1, len(seqs) + 1))
            await again.close()
        assert await stop(proc) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


async def test_the_same_wechat_push_sent_to_both_workers_at_once_is_stored_and_answered_once(tmp_path: Path) -> None:
    """On one SQLite file: both workers write it (WAL, a busy timeout, a store thread each), and the unique keys
    still let exactly one of two simultaneous deliveries in. Counters on /metrics are the workers' sum."""
    inbox = {**wechat_inbox(), "api_base": "http://127.0.0.1:9"}  # passive replies only: no API call expected
    config = write_config(tmp_path, inboxes=[inbox])
    proc, url = await serve_workers(config, log=tmp_path / "serve.log")
    pushes = 30
    try:
        await worker_pids(url, 2)
        async with pinned(url, 0) as (a, _), pinned(url, 1) as (b, _):

            async def push(http: aiohttp.ClientSession, xml: str) -> tuple[int, str]:
                timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
                params = {"timestamp": timestamp, "nonce": nonce, "signature": sign(TOKEN, timestamp, nonce)}
                async with http.post(f"{url}/wechat/oa", params=params, data=xml) as resp:
                    return resp.status, await resp.text()

            answered = 0
            for n in range(pushes):
                xml = text_xml("怎么开发票", openid=f"oWorker{n % 5:04d}", msg_id=str(6200000000000000000 + n))
                results = await asyncio.gather(push(a, xml), push(b, xml))
                assert [status for status, _ in results] == [200, 200]
                answered += sum("发票" in body for _, body in results)
            assert answered >= pushes  # every push got its answer on at least one of its two deliveries
            metrics: list[float] = []
            for http in (a, b):
                async with http.get(url + "/metrics", headers=AUTH) as resp:
                    text = await resp.text()
                found = re.search(
                    r'huiliu_messages_total\{channel="wechat",direction="inbound",inbox="oa"\} (\S+)', text
                )
                assert found is not None, text
                metrics.append(float(found.group(1)))
            assert metrics == [pushes, pushes]  # either worker answers for both
        assert await stop(proc) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    db = sqlite3.connect(tmp_path / "data" / "huiliu.sqlite3")
    try:
        rows = db.execute(
            "SELECT direction, json_extract(data, '$.author'), COUNT(*), COUNT(DISTINCT external_id) FROM messages"
            " WHERE channel = 'wechat' GROUP BY 1, 2"
        ).fetchall()
    finally:
        db.close()
    counts = {(direction, author): (n, distinct) for direction, author, n, distinct in rows}
    assert counts[("inbound", "customer")] == (pushes, pushes)
    assert counts[("outbound", "bot")][0] == pushes
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log and "database is locked" not in log


async def test_a_slow_webhook_delivery_under_way_at_sigterm_finishes_within_the_grace(tmp_path: Path) -> None:
    """SIGTERM to the supervisor reaches every worker, and each gives its work server.shutdown_grace_s."""
    arrived = asyncio.Event()
    finished: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.sleep(3)  # answered well within the 10 s grace
        finished.append(request.headers["Huiliu-Delivery-Id"])
        return web.json_response({})

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    runner = web.AppRunner(receiver)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    hook = {
        "name": "slow", "url": f"http://127.0.0.1:{hook_port}/hook", "secrets": ["webhook-secret-0123456789"],
        "poll_s": 0.2, "allow_http": True, "allow_private": True,
    }  # fmt: skip
    config = write_config(tmp_path, server={"host": "127.0.0.1", "port": 8080, "shutdown_grace_s": 10}, webhooks=[hook])
    proc, url = await serve_workers(config, log=tmp_path / "serve.log")
    try:
        await worker_pids(url, 2)
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url.replace("http", "ws") + "/chat/ws")
            await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
            await ws.receive_json(timeout=10)
            await ws.send_json({"type": "message", "id": "m1", "text": "怎么开发票"})
            await asyncio.wait_for(arrived.wait(), 20)
            proc.send_signal(signal.SIGTERM)
            began = time.monotonic()
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            took = time.monotonic() - began
            await ws.close()
        assert finished, "the delivery under way was cut off"
        assert took >= 2, f"stopped after {took:.1f}s, before the delivery in flight was answered"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await runner.cleanup()
    log = (tmp_path / "serve.log").read_text()
    assert "cancelled" not in log and "Traceback" not in log


async def test_the_worker_count_is_validated_with_its_key_path(tmp_path: Path) -> None:
    config = write_config(tmp_path, server={"host": "127.0.0.1", "port": 8080, "workers": 0})
    code, err = await run_cli("serve", "-c", str(config))
    assert code == 2 and "server.workers" in err
    config = write_config(tmp_path, server={"host": "127.0.0.1", "port": 8080, "workers": "two"})
    code, err = await run_cli("serve", "-c", str(config))
    assert code == 2 and "server.workers" in err
    code, err = await run_cli("serve", "-c", str(write_config(tmp_path)), "--workers", "0")
    assert code == 2 and "--workers" in err


async def test_a_worker_that_cannot_start_stops_the_supervisor_with_its_reason(tmp_path: Path) -> None:
    config = write_config(tmp_path, bot={"kb": str(tmp_path / "missing.yaml")})
    code, err = await run_cli("serve", "-c", str(config), "--port", str(free_port()), "--workers", "2")
    assert code == 2 and "missing.yaml" in err and "Traceback" not in err


async def test_a_busy_port_is_one_line_even_when_another_huiliu_holds_it(tmp_path: Path) -> None:
    """SO_REUSEPORT would let a second supervisor share the port silently: it must refuse, as one process does."""
    config = write_config(tmp_path)
    proc, url = await serve_workers(config)
    try:
        await worker_pids(url, 2)
        port = url.rsplit(":", 1)[1]
        code, err = await run_cli("serve", "-c", str(config), "--port", port, "--workers", "2")
        assert code == 2 and "already in use" in err
    finally:
        await stop(proc)


async def test_sla_timers_fire_once_though_every_worker_runs_the_timer_scan(tmp_path: Path) -> None:
    sla = {
        "calendar": "24x7", "holidays": "", "warn_at": 0.5, "scan_interval_s": 0.2,
        "policies": [{"name": "fast", "first_response": "3s"}],
    }  # fmt: skip
    config = write_config(tmp_path, inboxes=[WEB], sla=sla)
    proc, url = await serve_workers(config, log=tmp_path / "serve.log")
    try:
        await worker_pids(url, 2)
        for index in (0, 1, 0, 1):  # tickets opened on both workers
            async with pinned(url, index) as (http, _):
                ws = await http.ws_connect(url.replace("http", "ws") + "/chat/ws")
                await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
                await _until(ws, "welcome")
                await ws.send_json({"type": "message", "id": "c1", "text": "转人工"})
                await _until(ws, "status", status="waiting_for_agent")
                await ws.close()
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while True:
                    async with http.get(url + "/api/v1/events?limit=1000", headers=AUTH) as resp:
                        events = (await resp.json())["events"]
                    breached = [e for e in events if e["type"] == "ticket.sla_breached"]
                    if len({e["data"]["ticket"]["id"] for e in breached}) == 4:
                        break
                    await asyncio.sleep(0.2)
            await asyncio.sleep(2)  # ten more scans by each worker: a second firing would show by now
            async with http.get(url + "/api/v1/events?limit=1000", headers=AUTH) as resp:
                events = (await resp.json())["events"]
        for kind in ("ticket.sla_warning", "ticket.sla_breached"):
            fired = Counter(e["data"]["ticket"]["id"] for e in events if e["type"] == kind)
            assert len(fired) == 4 and set(fired.values()) == {1}, (kind, fired)
        assert await stop(proc) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_workers_stop_by_themselves_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    """No orphan keeps serving (and holding the port) after its supervisor is gone."""
    config = write_config(tmp_path)
    proc, url = await serve_workers(config, log=tmp_path / "serve.log")
    pids: dict[int, int] = {}
    try:
        pids = await worker_pids(url, 2)
        proc.kill()
        await proc.wait()
        for _ in range(200):
            if not any(alive(pid) for pid in pids.values()):
                break
            await asyncio.sleep(0.1)
        assert not any(alive(pid) for pid in pids.values())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pid in pids.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    log = (tmp_path / "serve.log").read_text()
    assert log.count("the supervisor is gone; stopping") == 2 and "Traceback" not in log
