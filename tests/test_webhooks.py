"""Signed webhooks against a real receiver that is down, slow, failing and then healthy."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from core.config import Config, ConfigError, WebhookConfig
from gateway.downstream.guard import PublicOnlyResolver
from gateway.downstream.webhooks import Breaker, WebhookDispatcher, sign, verify
from gateway.intake import BotSetup
from tests.conftest import Gateway, make_config, started
from tests.processes import free_port
from tests.redis_util import REDIS_URL, redis_store

NEW_SECRET = "whsec_new_0123456789abcdef"
OLD_SECRET = "whsec_old_0123456789abcdef"


@dataclass
class Receiver:
    """A helpdesk's webhook endpoint whose behaviour the test switches: healthy, slow, failing, refusing."""

    port: int
    mode: str = "healthy"
    refuse_types: set[str] = field(default_factory=set)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        # The receiver-side check from docs/webhooks.md, written out independently of the sender's code.
        stamp = request.headers["Huiliu-Timestamp"]
        signed = stamp.encode() + b"." + body
        given = [p.strip()[3:] for p in request.headers["Huiliu-Signature"].split(",") if p.strip().startswith("v1=")]
        verified = {
            name: any(hmac.compare_digest(hmac.new(s.encode(), signed, hashlib.sha256).hexdigest(), g) for g in given)
            for name, s in (("new", NEW_SECRET), ("old", OLD_SECRET))
        }
        event = json.loads(body)
        record = {"event": event, "delivery": request.headers["Huiliu-Delivery-Id"], "verified": verified}
        self.attempts.append(record)
        if self.mode == "slow":
            await asyncio.sleep(1.0)
            return web.Response(status=200)
        if self.mode == "failing":
            return web.Response(status=500)
        if event["type"] in self.refuse_types:
            return web.json_response({"error": "unknown field"}, status=400)
        self.accepted.append(record)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.server = TestServer(app, host="127.0.0.1", port=self.port)
        await self.server.start_server()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(port=free_port())
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture(params=["sqlite", "redis"])
async def store_settings(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {}
        return
    probe = redis_store()  # skips (or fails under CI) when Redis is absent; owns the prefix's cleanup
    yield {"store": {"backend": "redis", "url": REDIS_URL, "prefix": probe.tag}}
    await probe.open()
    await probe.close()


def hook(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "crm",
        "url": url,
        "secrets": [NEW_SECRET, OLD_SECRET],
        "timeout_s": 0.3,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.2,
        "max_attempts": 1000,
        "breaker_threshold": 3,
        "breaker_cooldown_s": 0.1,
        "poll_s": 0.05,
        "allow_http": True,  # the receivers here are loopback servers: each subscription opts in explicitly
        "allow_private": True,
        **overrides,
    }


async def all_events(gw: Gateway) -> list[dict[str, Any]]:
    status, body = await gw.api("GET", "/events?limit=1000")
    assert status == 200
    events: list[dict[str, Any]] = body["events"]
    return events


async def make_traffic(gw: Gateway) -> None:
    """Three visitors, one handed off; the helpdesk then replies to and resolves the ticket."""
    for n in range(3):
        chat = await gw.chat()
        await chat.say("怎么开发票")
        if n == 1:
            await chat.say("转人工")
        await chat.close()
    status, page = await gw.api("GET", "/tickets?status=new")
    assert status == 200 and len(page["tickets"]) == 1
    ticket = page["tickets"][0]["id"]
    status, _ = await gw.api(
        "POST", f"/tickets/{ticket}/replies", json={"text": "您好"}, headers={"Idempotency-Key": "r1"}
    )
    assert status == 201
    status, _ = await gw.api("PATCH", f"/tickets/{ticket}", json={"status": "resolved"})
    assert status == 200


async def wait_for(condition: Any, timeout_s: float = 30) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_every_event_arrives_signed_in_order_through_outage_slowness_errors_and_a_restart(
    tmp_path: Path, bot_setup: BotSetup, receiver: Receiver, store_settings: dict[str, Any]
) -> None:
    config: Config = make_config(tmp_path, webhooks=[hook(receiver.url)], **store_settings)
    async with started(config, bot_setup) as gw:
        await make_traffic(gw)  # the receiver is down: nothing listens on its port
        expected = await all_events(gw)
        assert {e["type"] for e in expected} >= {"message.created", "ticket.created", "ticket.updated"}
        await asyncio.sleep(0.5)
        receiver.mode = "slow"
        await receiver.start()
        await wait_for(lambda: len(receiver.attempts) >= 2)
        receiver.mode = "failing"
        await wait_for(lambda: any(a["event"]["id"] for a in receiver.attempts[2:]))
    # The gateway restarts while the receiver is failing; the cursor was never advanced past a failure.
    async with started(config, bot_setup) as gw:
        await asyncio.sleep(0.3)
        receiver.mode = "healthy"
        await wait_for(lambda: {a["event"]["id"] for a in receiver.accepted} >= {e["id"] for e in expected})
        status, body = await gw.api("GET", "/webhooks/dead-letters")
        assert status == 200 and body == {"dead_letters": []}

    assert [a["event"] for a in _first_acceptances(receiver)] == expected  # each event exactly as in the feed
    for attempt in receiver.attempts:
        assert attempt["verified"] == {"new": True, "old": True}  # both secrets sign during a rotation
        assert attempt["delivery"] == f"crm.{attempt['event']['id']}"  # the same id on every retry
    per_conversation: dict[str, list[int]] = {}
    seen: set[int] = set()
    for a in receiver.accepted:  # in arrival order; a repeat (at-least-once) is not a new arrival
        if a["event"]["id"] not in seen:
            seen.add(a["event"]["id"])
            per_conversation.setdefault(a["event"]["conversation_id"], []).append(a["event"]["id"])
    for ids in per_conversation.values():
        assert ids == sorted(ids)  # in order per conversation, hence per ticket
    assert len(receiver.attempts) > len(receiver.accepted)  # there really were failed attempts


def _first_acceptances(receiver: Receiver) -> list[dict[str, Any]]:
    seen: set[int] = set()
    first = []
    for a in sorted(receiver.accepted, key=lambda a: int(a["event"]["id"])):
        if a["event"]["id"] not in seen:
            seen.add(a["event"]["id"])
            first.append(a)
    return first


async def test_a_refused_event_is_dead_lettered_holds_its_conversation_and_replays_in_order(
    tmp_path: Path, bot_setup: BotSetup, receiver: Receiver
) -> None:
    receiver.refuse_types = {"ticket.created"}
    await receiver.start()
    config = make_config(tmp_path, webhooks=[hook(receiver.url, events=["ticket.created", "ticket.updated"])])
    async with started(config, bot_setup) as gw:
        await make_traffic(gw)
        expected = [e for e in await all_events(gw) if e["type"].startswith("ticket.")]
        letters: list[dict[str, Any]] = []

        async def dead_letters() -> list[dict[str, Any]]:
            status, body = await gw.api("GET", "/webhooks/dead-letters?subscription=crm")
            assert status == 200
            found: list[dict[str, Any]] = body["dead_letters"]
            return found

        async with asyncio.timeout(30):
            while len(letters) < len(expected):
                letters = await dead_letters()
                await asyncio.sleep(0.05)
        # 400 is a refusal, not an outage: one attempt, no retries; the ticket's later events wait behind it.
        assert [d["event"] for d in letters] == expected
        assert letters[0]["attempts"] == 1 and letters[0]["error"] == "HTTP 400"
        assert all("held behind dead letter" in d["error"] for d in letters[1:])
        assert receiver.accepted == []

        status, body = await gw.api("POST", f"/webhooks/dead-letters/{letters[0]['id']}/replay")
        assert status == 502 and body["error"]["code"] == "delivery_failed"
        assert len(await dead_letters()) == len(expected)  # still there
        status, _ = await gw.api("POST", "/webhooks/dead-letters/crm.999999/replay")
        assert status == 404

        receiver.refuse_types.clear()  # the helpdesk fixed its receiver
        for letter in letters:
            status, body = await gw.api("POST", f"/webhooks/dead-letters/{letter['id']}/replay")
            assert status == 200 and body == {"id": letter["id"], "delivered": True, "status": 204}
        assert await dead_letters() == []
        assert [a["event"] for a in receiver.accepted] == expected
        assert [a["delivery"] for a in receiver.accepted] == [d["id"] for d in letters]
        # each replay that went through is in the audit log; the refused one changed nothing and is not
        status, audit = await gw.api("GET", "/audit", params={"action": "dead_letter.replay", "limit": "200"})
        assert status == 200
        assert [e["target"] for e in reversed(audit["entries"])] == [f"dead_letter:{d['id']}" for d in letters]
        assert all(e["actor"] == "tokens[0]" and e["after"]["delivered"] for e in audit["entries"])


async def test_the_breaker_stops_hammering_a_failing_endpoint(tmp_path: Path, receiver: Receiver) -> None:
    receiver.mode = "failing"
    await receiver.start()
    store = redis_store()
    await store.open()
    try:
        from core import events as builders
        from tests.contract.test_store_contract import inbound, new_conversation

        conversation = await new_conversation(store)
        await store.append_events([builders.message_created(inbound(conversation, "x"))])
        cfg = WebhookConfig.model_validate(
            hook(receiver.url, backoff_base_s=0.001, backoff_max_s=0.002, breaker_cooldown_s=0.5)
        )
        dispatcher = WebhookDispatcher(store, [cfg])
        async with dispatcher.running():
            await asyncio.sleep(1.2)
        # Without the breaker ~1000 tries fit in that time; with it: 3, then one probe per (doubling) cooldown.
        assert 3 <= len(receiver.attempts) <= 5
        assert dispatcher.subscriptions["crm"].breaker.state in ("open", "half_open")
    finally:
        await store.close()


async def test_two_instances_share_a_subscription_without_double_sending(
    tmp_path: Path, bot_setup: BotSetup, receiver: Receiver
) -> None:
    """Only the holder of the subscription's lease dispatches it; the other waits to take over."""
    await receiver.start()
    probe = redis_store()
    settings = {"store": {"backend": "redis", "url": REDIS_URL, "prefix": probe.tag}}
    config = make_config(tmp_path, webhooks=[hook(receiver.url)], **settings)
    try:
        async with started(config, bot_setup) as a, started(config, bot_setup) as b:
            await make_traffic(a)
            await make_traffic(b)
            expected = await all_events(a)
            await wait_for(lambda: {x["event"]["id"] for x in receiver.accepted} >= {e["id"] for e in expected})
            await asyncio.sleep(0.3)
        assert sorted(x["event"]["id"] for x in receiver.accepted) == [e["id"] for e in expected]
    finally:
        await probe.open()
        await probe.close()


def test_signatures_verify_with_either_secret_and_expire() -> None:
    body = b'{"v":1}'
    now = time.time()
    header = sign([NEW_SECRET, OLD_SECRET], str(int(now)), body)
    assert verify(NEW_SECRET, header, str(int(now)), body, now=now)
    assert verify(OLD_SECRET, header, str(int(now)), body, now=now)
    assert not verify("whsec_other_0123456789ab", header, str(int(now)), body, now=now)
    assert not verify(NEW_SECRET, header, str(int(now)), body + b" ", now=now)
    assert not verify(NEW_SECRET, header, str(int(now)), body, now=now + 301)  # a replayed old request


async def test_breaker_lets_one_probe_through_after_the_cooldown() -> None:
    breaker = Breaker(threshold=2, cooldown_s=0.1)
    breaker.failed()
    assert breaker.state == "closed"
    breaker.failed()
    assert breaker.state == "open"
    started_at = time.monotonic()
    await breaker.admit()
    assert time.monotonic() - started_at >= 0.09
    second = asyncio.ensure_future(breaker.admit())
    await asyncio.sleep(0.05)
    assert not second.done()  # one probe at a time
    breaker.succeeded()
    await asyncio.wait_for(second, 1)
    assert breaker.state == "closed"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://hooks.example.com/in", "plain http"),
        ("https://127.0.0.1:8443/in", "loopback, link-local or private"),
        ("https://169.254.169.254/latest/meta-data", "loopback, link-local or private"),
        ("https://10.1.2.3/in", "loopback, link-local or private"),
        ("https://[::1]/in", "loopback, link-local or private"),
        ("https://localhost/in", "loopback, link-local or private"),
    ],
)
def test_a_webhook_url_to_http_or_a_private_address_is_refused_unless_allowed(
    tmp_path: Path, url: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        make_config(tmp_path, webhooks=[{"url": url, "secrets": [NEW_SECRET]}])
    allowed = {"url": url, "secrets": [NEW_SECRET], "allow_http": True, "allow_private": True}
    assert make_config(tmp_path, webhooks=[allowed]).webhooks[0].url == url
    assert make_config(tmp_path, webhooks=[{"url": "https://crm.example.com/hook", "secrets": [NEW_SECRET]}])


async def test_a_webhook_name_resolving_to_a_private_address_is_refused_at_connect_time() -> None:
    """A public-looking name can point at 127.0.0.1 (or be rebound to it later): checked when it resolves."""
    guarded = PublicOnlyResolver(frozenset())
    try:
        with pytest.raises(OSError, match="not a public address"):
            await guarded.resolve("localhost", 443)
    finally:
        await guarded.close()
    allowed = PublicOnlyResolver(frozenset({"localhost"}))
    try:
        assert await allowed.resolve("localhost", 443)
    finally:
        await allowed.close()


async def test_webhook_metrics_count_deliveries_failures_and_dead_letters(
    tmp_path: Path, bot_setup: BotSetup, receiver: Receiver
) -> None:
    from tests.test_metrics import parse, scrape, value

    receiver.refuse_types = {"ticket.created"}
    await receiver.start()
    config = make_config(tmp_path, webhooks=[hook(receiver.url, events=["ticket.created", "message.created"])])
    async with started(config, bot_setup) as gw:
        chat = await gw.chat()
        await chat.say("转人工")  # the question is delivered; the ticket is refused, the reply held behind it
        await chat.close()
        async with asyncio.timeout(10):
            while True:
                m = parse((await scrape(gw))[1])
                if value(m, "huiliu_dead_letters", subscription="crm") == 2:
                    break
                await asyncio.sleep(0.05)
        assert value(m, "huiliu_webhook_deliveries_total", subscription="crm", result="delivered") == 1
        assert value(m, "huiliu_webhook_deliveries_total", subscription="crm", result="failed") == 1
        assert value(m, "huiliu_webhook_deliveries_total", subscription="crm", result="dead_lettered") == 2
        assert value(m, "huiliu_alarm", alarm="dead_letters_growing", subject="crm") == 1
