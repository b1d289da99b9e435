"""A real ``huiliu serve`` killed with SIGKILL in the middle of WeChat pushes, then restarted while WeChat
retries what got no answer: every push is stored once, and every customer gets one reply per message."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from connectors.wechat.signature import sign
from tests.conftest import API_TOKEN, ROOT
from tests.processes import ready, serve
from tests.test_serve import write_config
from tests.wechat.conftest import TOKEN, inbox, text_xml
from tests.wechat.fake_api import FakeWechat

QUESTIONS = ["我想退款", "怎么开发票", "运费怎么算", "可以用支付宝吗", "优惠券怎么用", "where is my order"]
PUSHES = 150
USERS = 50


def _push(n: int) -> tuple[str, str]:
    openid = f"oCrash{n % USERS:04d}"
    return openid, text_xml(QUESTIONS[n % len(QUESTIONS)], openid=openid, msg_id=str(8_100_000_000 + n))


def _signed() -> dict[str, str]:
    """A fresh timestamp and nonce for every delivery, retries included."""
    timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
    return {"timestamp": timestamp, "nonce": nonce, "signature": sign(TOKEN, timestamp, nonce)}


def _count(db: Path, direction: str) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT external_id) FROM messages WHERE channel = 'wechat' AND direction = ?",
            (direction,),
        ).fetchone()
    return int(row[0]), int(row[1])


async def test_sigkill_mid_load_loses_and_doubles_nothing(tmp_path: Path, fake_wechat: FakeWechat) -> None:
    config = write_config(
        tmp_path,
        inboxes=[inbox(api_base=fake_wechat.url)],
        bot={"kb": str(ROOT / "kb" / "faq.yaml"), "max_misses": 10**6},
    )
    db = tmp_path / "data" / "huiliu.sqlite3"
    pushes = [_push(n) for n in range(PUSHES)]
    passive: collections.Counter[str] = collections.Counter()  # openid -> replies that came back in a response
    unanswered: list[int] = []

    async def deliver(http: aiohttp.ClientSession, url: str, n: int) -> bool:
        """One delivery as WeChat makes it; False when no answer came (WeChat then retries)."""
        openid, xml = pushes[n]
        try:
            async with http.post(f"{url}/wechat/oa", params=_signed(), data=xml.encode()) as resp:
                body = await resp.text()
                if resp.status != 200:
                    return False
        except (TimeoutError, aiohttp.ClientError):
            return False
        if body != "success":
            assert f"<![CDATA[{openid}]]>" in body  # a passive reply, to this customer
            passive[openid] += 1
        return True

    proc, url = await serve(config)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        await ready(http, url)
        answered = 0
        queue = list(range(PUSHES))
        a_third_answered = asyncio.Event()

        async def worker() -> None:
            nonlocal answered
            while queue:
                n = queue.pop(0)
                if await deliver(http, url, n):
                    answered += 1
                    if answered >= PUSHES // 3:
                        a_third_answered.set()
                else:
                    unanswered.append(n)

        async def kill_mid_load() -> None:
            await a_third_answered.wait()
            proc.send_signal(signal.SIGKILL)

        await asyncio.gather(kill_mid_load(), *(worker() for _ in range(20)))
        await proc.wait()
    assert unanswered, "the kill came too late to catch pushes in flight"
    stored_before, _ = _count(db, "inbound")
    assert stored_before >= PUSHES - len(unanswered)  # every answered push was stored before its answer

    again, url = await serve(config)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            await ready(http, url)
            for _ in range(3):  # WeChat retries a push that got no answer, up to three times
                pending = list(unanswered)
                results = await asyncio.gather(*(deliver(http, url, n) for n in pending))
                unanswered[:] = [n for n, ok in zip(pending, results, strict=True) if not ok]
            assert not unanswered
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if sum(passive.values()) + len(fake_wechat.sent) >= PUSHES and _count(db, "outbound")[0] >= PUSHES:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # anything sent twice would arrive meanwhile
    finally:
        again.send_signal(signal.SIGTERM)
        await asyncio.wait_for(again.wait(), 15)

    assert _count(db, "inbound") == (PUSHES, PUSHES)  # each push stored once
    assert _count(db, "outbound") == (PUSHES, PUSHES)  # and answered once
    received = passive + collections.Counter(m["touser"] for m in fake_wechat.sent)
    expected = collections.Counter(openid for openid, _ in pushes)
    assert received == expected  # every customer got one reply per message: none lost, none twice


async def _wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        await asyncio.sleep(0.05)


async def test_an_agent_reply_whose_sender_was_killed_mid_send_is_sent_once_after_the_restart(
    tmp_path: Path, fake_wechat: FakeWechat
) -> None:
    """The agent's reply is stored and its customer-service API call is in flight when the process is killed:
    the restarted gateway finds it in the outbox and sends it exactly once, and the helpdesk repeating its
    request (it never got an answer) gets the same reply back without a second send."""
    config = write_config(
        tmp_path,
        server={"host": "127.0.0.1", "port": 8080, "shutdown_grace_s": 5, "resend_after_s": 1},
        inboxes=[inbox(api_base=fake_wechat.url)],
        bot={"kb": str(ROOT / "kb" / "faq.yaml")},
    )
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    reply = {"text": "您好，我是客服小王，马上为您处理。", "agent": "wang"}
    proc, url = await serve(config)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await ready(http, url)
            xml = text_xml("转人工", openid="oKilled", msg_id="8200000000000000001")
            async with http.post(f"{url}/wechat/oa", params=_signed(), data=xml.encode()) as resp:
                assert resp.status == 200  # the handoff reply; a ticket opens
            tickets: list[dict[str, Any]] = []
            deadline = time.monotonic() + 10
            while not tickets:
                assert time.monotonic() < deadline, "no ticket opened"
                await asyncio.sleep(0.05)
                async with http.get(f"{url}/api/v1/tickets", params={"channel": "wechat"}, headers=headers) as resp:
                    tickets = (await resp.json())["tickets"]
            replies = f"/api/v1/tickets/{tickets[0]['id']}/replies"

            fake_wechat.blackhole = True
            posting = asyncio.ensure_future(
                http.post(url + replies, json=reply, headers={**headers, "Idempotency-Key": "kill-1"})
            )
            await _wait_for(lambda: fake_wechat.held == 1, 10, "the API call in flight")
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            with contextlib.suppress(aiohttp.ClientError):
                (await posting).close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert fake_wechat.sent == []  # nothing got through

    fake_wechat.blackhole = False
    again, url = await serve(config)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await ready(http, url)
            await _wait_for(lambda: len(fake_wechat.sent) == 1, 15, "the reply sent after the restart")
            async with http.post(url + replies, json=reply, headers={**headers, "Idempotency-Key": "kill-1"}) as resp:
                body = await resp.json()
                assert resp.status == 200 and body["duplicate"] is True and body["message"]["delivery"] == "sent"
            await asyncio.sleep(2.5)  # past the resend interval twice: a second send would arrive meanwhile
    finally:
        again.send_signal(signal.SIGTERM)
        await asyncio.wait_for(again.wait(), 15)

    assert fake_wechat.sent == [{"touser": "oKilled", "msgtype": "text", "text": {"content": reply["text"]}}]
    with sqlite3.connect(tmp_path / "data" / "huiliu.sqlite3") as conn:
        states = conn.execute("SELECT delivery, COUNT(*) FROM messages WHERE direction = 'outbound' GROUP BY 1")
        assert dict(states.fetchall()) == {"sent": 2}  # the handoff reply and the agent's
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
