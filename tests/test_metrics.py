"""/metrics: real traffic through the real app, read back as Prometheus exposition text."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bot.setup import BotSetup
from tests.conftest import API_TOKEN, Gateway, make_config, started
from tests.redis_util import REDIS_URL, redis_store

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def settled(gw: Gateway, name: str, want: float, **labels: str) -> Samples:
    """Scrape until ``name`` reaches ``want``: the ticket is announced just after the reply the chat sees."""
    async with asyncio.timeout(10):
        while True:
            status, text = await scrape(gw)
            assert status == 200
            samples = parse(text)
            if value(samples, name, **labels) >= want:
                return samples
            await asyncio.sleep(0.05)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(gw: Gateway, token: str | None = API_TOKEN) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with gw.http.get(gw.url + "/metrics", headers=headers) as resp:
        return resp.status, await resp.text()


async def test_metrics_count_messages_decisions_and_handoffs_of_real_chats(gateway: Gateway) -> None:
    chat = await gateway.chat()
    await chat.say("我想退款")  # answered
    await chat.say("今天天气怎么样")  # a miss
    await chat.say("转人工")  # asked for a human: a ticket
    await settled(gateway, "huiliu_handoffs_total", 1, reason="asked_for_human")
    # The handled stage is observed when the handling task has finished, just after the ticket is counted.
    m = await settled(gateway, "huiliu_intake_seconds_count", 3, channel="webchat", stage="handled")
    assert value(m, "huiliu_messages_total", channel="webchat", inbox="web", direction="inbound") == 3
    assert value(m, "huiliu_messages_total", channel="webchat", inbox="web", direction="outbound") == 3
    assert value(m, "huiliu_bot_decisions_total", decision="answer") == 1
    assert value(m, "huiliu_bot_decisions_total", decision="miss") == 1
    assert value(m, "huiliu_bot_decisions_total", decision="handoff") == 1
    assert value(m, "huiliu_handoffs_total", reason="asked_for_human") == 1
    assert value(m, "huiliu_tickets", status="new") == 1 and value(m, "huiliu_tickets", status="resolved") == 0
    assert value(m, "huiliu_intake_seconds_count", channel="webchat", stage="stored") == 3
    assert value(m, "huiliu_intake_seconds_count", channel="webchat", stage="handled") == 3
    assert value(m, "huiliu_store_up") == 1 and value(m, "huiliu_connector_up", inbox="web") == 1
    assert value(m, "huiliu_quarantine_size") == 0 and value(m, "huiliu_outbox_size") == 0


async def test_metrics_need_a_token(gateway: Gateway) -> None:
    assert (await scrape(gateway, token=None))[0] == 401
    assert (await scrape(gateway, token="wrong-token-123"))[0] == 401


async def test_metrics_on_a_loopback_port_need_no_token(tmp_path: Path, bot_setup: BotSetup) -> None:
    # Port 0 cannot be found again from outside: pick a free one first.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    config = make_config(tmp_path, ops={"metrics_port": port})
    async with started(config, bot_setup) as gw:
        chat = await gw.chat()
        await chat.say("我想退款")
        async with gw.http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            m = parse(await resp.text())
    assert value(m, "huiliu_bot_decisions_total", decision="answer") == 1


async def test_two_instances_on_redis_report_the_same_gauges(tmp_path: Path, bot_setup: BotSetup) -> None:
    store = redis_store()  # skips without Redis; removes the prefix's keys afterwards
    config = make_config(tmp_path, store={"backend": "redis", "url": REDIS_URL, "prefix": store.tag})
    try:
        async with started(config, bot_setup) as a, started(config, bot_setup) as b:
            chat = await a.chat()
            await chat.say("转人工")
            other = await b.chat()
            await other.say("人工客服")
            ma = await settled(a, "huiliu_handoffs_total", 1, reason="asked_for_human")
            mb = await settled(b, "huiliu_handoffs_total", 1, reason="asked_for_human")
            # Counters are each instance's own; gauges read the shared store, so they agree.
            assert value(ma, "huiliu_handoffs_total", reason="asked_for_human") == 1
            assert value(mb, "huiliu_handoffs_total", reason="asked_for_human") == 1
            assert value(ma, "huiliu_tickets", status="new") == value(mb, "huiliu_tickets", status="new") == 2
            gauges = [n for (n, _) in ma if n in ("huiliu_tickets", "huiliu_quarantine_size", "huiliu_dead_letters")]
            assert {k: v for k, v in ma.items() if k[0] in gauges} == {k: v for k, v in mb.items() if k[0] in gauges}
    finally:
        await store.open()
        await store.close()


async def test_each_operator_route_asks_for_its_scope(tmp_path: Path, bot_setup: BotSetup) -> None:
    """A monitoring agent's token reads /metrics only; a reporting tool's, the report only; the quarantine
    (raw customer input) needs admin."""
    metrics_token, reports_token = "metrics-token-0123456789", "reports-token-0123456789"
    tokens = [
        API_TOKEN,
        {"name": "prometheus", "token": metrics_token, "scopes": ["metrics"]},
        {"name": "bi", "token": reports_token, "scopes": ["reports:read"]},
    ]
    async with started(make_config(tmp_path, api={"tokens": tokens}), bot_setup) as gw:
        assert (await scrape(gw, token=metrics_token))[0] == 200
        assert (await scrape(gw, token=reports_token))[0] == 403
        assert (await gw.api("GET", "/reports/summary", token=reports_token))[0] == 200
        assert (await gw.api("GET", "/reports/summary", token=metrics_token))[0] == 403
        assert (await gw.api("GET", "/quarantine", token=reports_token))[0] == 403
        assert (await gw.api("GET", "/quarantine"))[0] == 200  # the admin token
        async with gw.http.get(gw.url + "/admin/") as resp:  # the page itself holds no data
            assert resp.status == 200 and "Content-Security-Policy" in resp.headers
