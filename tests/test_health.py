"""/readyz per component, and the health alarms as metrics and as system.alarm events."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.setup import BotSetup
from core.model import Channel, QuarantinedItem
from core.observe import mail_fetched_key
from gateway.app import GATEWAY
from gateway.health import Health
from tests.conftest import Gateway, make_config, started
from tests.test_metrics import parse, scrape, value

START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mail_inbox() -> dict[str, object]:
    return {
        "name": "mail",
        "channel": "email",
        "address": "help@example.com",
        "imap": {"host": "127.0.0.1", "port": closed_port(), "tls": "none", "backoff_max_s": 60},
        "smtp": {"host": "127.0.0.1", "port": closed_port(), "tls": "none"},
    }


async def test_readyz_reports_each_component(gateway: Gateway) -> None:
    async with gateway.http.get(gateway.url + "/readyz") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ready" and body["alarms"] == []
    assert body["components"]["store"] == {"status": "ok"}
    assert body["components"]["inbox:web"] == {"status": "running"}
    assert body["components"]["outbox"] == {"waiting": 0, "oldest_age_s": None}
    assert body["components"]["quarantine"] == {"pending": 0}


async def test_a_stale_mailbox_raises_an_alarm_and_an_event_until_it_fetches_again(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    clock = Clock()
    config = make_config(tmp_path, inboxes=[mail_inbox()], ops={"alarms": {"mail_stale_s": 600}})
    async with started(config, bot_setup, clock=clock) as gw:
        gateway = gw.server.app[GATEWAY]
        assert (await gateway.health.snapshot()).alarms == ()  # just started: not stale yet
        clock.now = START + timedelta(minutes=11)
        async with gw.http.get(gw.url + "/readyz") as resp:
            body = await resp.json()
        assert body["alarms"] == [
            {"name": "mailbox_stale", "subject": "mail", "detail": "last successful fetch: never"}
        ]
        assert body["components"]["inbox:mail"]["last_fetch"] is None
        m = parse((await scrape(gw))[1])
        assert value(m, "huiliu_alarm", alarm="mailbox_stale", subject="mail") == 1
        assert value(m, "huiliu_imap_last_fetch_timestamp_seconds", inbox="mail") == 0

        assert await gateway.health.notify(await gateway.health.snapshot()) == 1
        assert await gateway.health.notify(await gateway.health.snapshot()) == 1  # the same event: stored once
        await gateway.store.set_checkpoint(mail_fetched_key("mail"), clock.now.isoformat())
        assert await gateway.health.notify(await gateway.health.snapshot()) == 1  # resolved
        assert await gateway.health.notify(await gateway.health.snapshot()) == 0
        _, feed = await gw.api("GET", "/events?limit=1000")
        alarms = [e["data"] for e in feed["events"] if e["type"] == "system.alarm"]
        assert [(a["alarm"], a["subject"], a["state"]) for a in alarms] == [
            ("mailbox_stale", "mail", "firing"),
            ("mailbox_stale", "mail", "resolved"),
        ]
        m = parse((await scrape(gw))[1])
        assert value(m, "huiliu_imap_last_fetch_timestamp_seconds", inbox="mail") == clock.now.timestamp()
        assert value(m, "huiliu_alarm", alarm="mailbox_stale", subject="mail") == 0


async def test_quarantine_growth_raises_an_alarm(tmp_path: Path, bot_setup: BotSetup) -> None:
    clock = Clock()
    config = make_config(tmp_path, ops={"alarms": {"quarantine_growth": 3}})
    async with started(config, bot_setup, clock=clock) as gw:
        store = gw.server.app[GATEWAY].store
        for n in range(3):
            item = QuarantinedItem(
                id=f"q{n}", channel=Channel.EMAIL, inbox="mail", reason="unreadable", raw=b"x", received_at=START
            )
            await store.quarantine(item)
        async with gw.http.get(gw.url + "/readyz") as resp:
            body = await resp.json()
        assert resp.status == 200  # an alarm is not unreadiness
        assert [a["name"] for a in body["alarms"]] == ["quarantine_growing"]
        assert body["components"]["quarantine"] == {"pending": 3}


async def test_instances_on_redis_write_each_alarm_event_once(tmp_path: Path, bot_setup: BotSetup) -> None:
    from tests.redis_util import REDIS_URL, redis_store

    store = redis_store()  # skips without Redis; removes the prefix's keys afterwards
    config = make_config(
        tmp_path,
        store={"backend": "redis", "url": REDIS_URL, "prefix": store.tag},
        ops={"alarms": {"quarantine_growth": 1}},
    )
    try:
        async with started(config, bot_setup) as a, started(config, bot_setup) as b:
            item = QuarantinedItem(
                id="q",
                channel=Channel.EMAIL,
                inbox="mail",
                reason="unreadable",
                raw=b"x",
                received_at=datetime.now(UTC),
            )
            await a.server.app[GATEWAY].store.quarantine(item)
            healths = [gw.server.app[GATEWAY].health for gw in (a, b, a, b)]

            async def check(health: Health) -> None:
                await health.notify(await health.snapshot())

            await asyncio.gather(*(check(h) for h in healths))
            await b.server.app[GATEWAY].store.mark_replayed("q")
            await asyncio.gather(*(check(h) for h in healths))
            _, feed = await a.api("GET", "/events?limit=1000")
            alarms = [(e["data"]["alarm"], e["data"]["state"]) for e in feed["events"] if e["type"] == "system.alarm"]
            assert alarms == [("quarantine_growing", "firing"), ("quarantine_growing", "resolved")]
    finally:
        await store.open()
        await store.close()


async def test_an_open_breaker_is_seen_by_every_instance(tmp_path: Path, bot_setup: BotSetup) -> None:
    from tests.test_webhooks import hook

    port = closed_port()
    config = make_config(tmp_path, webhooks=[hook(f"http://127.0.0.1:{port}/hook", breaker_cooldown_s=30)])
    async with started(config, bot_setup) as gw:
        chat = await gw.chat()
        await chat.say("转人工")
        await chat.close()
        async with asyncio.timeout(15):
            while True:
                m = parse((await scrape(gw))[1])
                if value(m, "huiliu_webhook_breaker_open", subscription="crm") == 1:
                    break
                await asyncio.sleep(0.05)
        assert value(m, "huiliu_alarm", alarm="webhook_breaker_open", subject="crm") == 1
        async with gw.http.get(gw.url + "/readyz") as resp:
            body = await resp.json()
        assert body["components"]["webhook:crm"] == {"status": "open"}
