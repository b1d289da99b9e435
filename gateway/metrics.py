"""Prometheus metrics: counters of what this process did, gauges read from the store at scrape time."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from connectors.base import InboundSink, IntakeResult
from core.model import Author, Channel, InboundMessage, Message, Ticket, TicketStatus
from gateway.access import Handler
from gateway.health import Health, Snapshot

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DECISIONS = frozenset({"answer", "suggest", "miss", "handoff"})
M = TypeVar("M", Counter, Histogram)


class Metrics:
    """The process's counters in a registry of its own (two apps in one process never share numbers).

    Counters are per process, as Prometheus expects: sum them across instances. What describes shared state
    (tickets, quarantine, outbox, dead letters, mailbox and token health, alarms) is read from the store at
    each scrape instead, so every instance reports the same value.

    The workers of ``huiliu serve --workers N`` share one port, so a scrape reaches any one of them: there the
    supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` (read by prometheus_client at import), every worker's counters
    live in files in that folder, and each scrape sums them all (``MultiProcessCollector``). A restarted
    worker's counts stay in the sum, so the counters never go back.
    """

    def __init__(self) -> None:
        self._multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter(
            "huiliu_messages", "Messages stored, by channel, inbox and direction", ["channel", "inbox", "direction"],
            registry=r,
        )  # fmt: skip
        self.decisions = Counter("huiliu_bot_decisions", "The bot's decisions on customer messages", ["decision"],
                                 registry=r)  # fmt: skip
        self.handoffs = Counter("huiliu_handoffs", "Tickets opened, by the reason they exist", ["reason"], registry=r)
        self.webhooks = Counter(
            "huiliu_webhook_deliveries", "Webhook POSTs by subscription and result (delivered, failed, dead_lettered)",
            ["subscription", "result"], registry=r,
        )  # fmt: skip
        self.api_errors = Counter(
            "huiliu_wechat_api_errors", "WeChat API calls that failed, by inbox and errcode", ["inbox", "code"],
            registry=r,
        )  # fmt: skip
        self.channel_api_errors = Counter(
            "huiliu_channel_api_errors", "Channel API calls that failed, by channel, inbox and code",
            ["channel", "inbox", "code"], registry=r,
        )  # fmt: skip
        self.intake_seconds = Histogram(
            "huiliu_intake_seconds", "From a connector handing a message over to it being stored (stage=stored) "
            "and to the bot's answer or the ticket (stage=handled)", ["channel", "stage"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._children: dict[tuple[object, tuple[str, ...]], object] = {}

    def _labelled(self, metric: M, *values: str) -> M:
        """``metric.labels(*values)``, looked up once per label set: ``labels`` validates and locks on every call,
        and a web chat message counts two messages and times one intake (issue 23: ~4% of its server CPU)."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child  # type: ignore[return-value]  # stored under its own metric's key: the same type

    # core.observe.Observer ----------------------------------------------------------------------
    def message_stored(self, message: Message) -> None:
        self._labelled(self.messages, str(message.channel), message.inbox, str(message.direction)).inc()
        if message.author is Author.BOT:
            outcome = message.meta.get("outcome")
            if outcome in _DECISIONS:
                self._labelled(self.decisions, str(outcome)).inc()

    def ticket_opened(self, ticket: Ticket) -> None:
        self.handoffs.labels(str(ticket.handoff_reason or "none")).inc()

    def webhook_attempt(self, subscription: str, result: str) -> None:
        self.webhooks.labels(subscription, result).inc()

    def api_error(self, channel: Channel, inbox: str, code: str) -> None:
        if channel is Channel.WECHAT:
            self.api_errors.labels(inbox, code).inc()
        else:
            self.channel_api_errors.labels(str(channel), inbox, code).inc()

    # intake -----------------------------------------------------------------------------------------
    def timed(self, sink: InboundSink) -> InboundSink:
        """The intake sink as connectors call it, timed and counted (inbound messages have one way in)."""

        async def receive(inbound: InboundMessage) -> IntakeResult:
            start = time.perf_counter()
            result = await sink(inbound)
            if result.duplicate:
                return result
            channel = str(inbound.channel)
            self._labelled(self.intake_seconds, channel, "stored").observe(time.perf_counter() - start)
            self.message_stored(result.message)
            if result.handled is not None:
                histogram = self._labelled(self.intake_seconds, channel, "handled")
                result.handled.add_done_callback(lambda _: histogram.observe(time.perf_counter() - start))
            elif result.reply is not None:  # answered in the message's own write: handled as it was stored
                self._labelled(self.intake_seconds, channel, "handled").observe(time.perf_counter() - start)
            return result

        return receive

    # exposition -------------------------------------------------------------------------------------
    def exposition(self, snapshot: Snapshot) -> bytes:
        shared = CollectorRegistry(auto_describe=False)
        shared.register(_SnapshotCollector(snapshot))
        return generate_latest(self._counters()) + generate_latest(shared)

    def _counters(self) -> CollectorRegistry:
        if self._multiprocess_dir is None:
            return self.registry
        every_worker = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(every_worker, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
        return every_worker

    def handler(self, health: Health) -> Handler:
        async def metrics(request: web.Request) -> web.StreamResponse:
            snapshot = await health.snapshot()
            if self._multiprocess_dir is None:
                body = self.exposition(snapshot)
            else:  # the workers' files are read: off the event loop
                body = await asyncio.to_thread(self.exposition, snapshot)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

        return metrics


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self._s = snapshot

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        s = self._s
        up = GaugeMetricFamily("huiliu_store_up", "1 when the store answers")
        up.add_metric([], 1.0 if s.store_ok else 0.0)
        yield up
        connectors = GaugeMetricFamily("huiliu_connector_up", "1 while an inbox's connector runs", labels=["inbox"])
        for inbox, state in s.connectors.items():
            connectors.add_metric([inbox], 1.0 if state == "running" else 0.0)
        yield connectors
        g = s.gauges
        if g is not None:
            tickets = GaugeMetricFamily("huiliu_tickets", "Tickets in the store by status", labels=["status"])
            for status in TicketStatus:
                tickets.add_metric([str(status)], float(g.tickets_by_status.get(str(status), 0)))
            yield tickets
            yield GaugeMetricFamily("huiliu_quarantine_size", "Quarantined input not yet replayed",
                                    value=g.quarantine_pending)  # fmt: skip
            yield GaugeMetricFamily("huiliu_outbox_size", "Outbound messages whose delivery is not final yet",
                                    value=g.outbox_size)  # fmt: skip
            age = 0.0 if g.outbox_oldest is None else max(0.0, (s.at - g.outbox_oldest).total_seconds())
            yield GaugeMetricFamily("huiliu_outbox_oldest_age_seconds", "Age of the oldest message in the outbox",
                                    value=age)  # fmt: skip
        dead = GaugeMetricFamily("huiliu_dead_letters", "Webhook dead letters by subscription", labels=["subscription"])
        for subscription, count in sorted(s.dead_letters.items()):
            dead.add_metric([subscription], float(count))
        yield dead
        fetched = GaugeMetricFamily(
            "huiliu_imap_last_fetch_timestamp_seconds", "Unix time of a mailbox's last successful fetch (0: never)",
            labels=["inbox"],
        )  # fmt: skip
        for inbox, at in sorted(s.mail_fetched.items()):
            fetched.add_metric([inbox], at.timestamp() if at else 0.0)
        yield fetched
        token = GaugeMetricFamily(
            "huiliu_wechat_token_refresh_ok", "1 when an inbox's last access-token refresh worked", labels=["inbox"]
        )
        for inbox, refresh in sorted(s.token_refresh.items()):
            token.add_metric([inbox], 1.0 if refresh is None or refresh.ok else 0.0)
        yield token
        breaker = GaugeMetricFamily(
            "huiliu_webhook_breaker_open", "1 while a subscription's circuit breaker is open",
            labels=["subscription"],
        )  # fmt: skip
        for subscription, state in sorted(s.breakers.items()):
            breaker.add_metric([subscription], 1.0 if state == "open" else 0.0)
        yield breaker
        alarm = GaugeMetricFamily("huiliu_alarm", "1 for each firing health alarm", labels=["alarm", "subject"])
        for a in s.alarms:
            alarm.add_metric([a.name, a.subject], 1.0)
        yield alarm
