"""One wiring for serve and every CLI command: config -> store -> bot -> services -> connectors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

from bot.faq import KbError
from bot.live import LiveIndex
from bot.policy import BotPolicy
from bot.setup import BotSetup
from connectors import build_connectors
from connectors.base import Connector, ConnectorDeps, InboundSink
from core.clock import Clock, utcnow
from core.config import Config
from core.observe import NO_OBSERVER
from core.store import Store, open_store
from core.tasks import TaskTracker
from gateway.audit import Auditor
from gateway.downstream.webhooks import WebhookDispatcher
from gateway.faq_admin import answer_values
from gateway.health import Health
from gateway.intake import Intake, open_conversation
from gateway.metrics import Metrics
from gateway.outbound import RETRY_DELAYS_S, Outbound
from gateway.sla_runner import SlaRunner
from gateway.tickets import TicketService
from normalizer.rules.engine import ServiceRules


@dataclass(frozen=True, slots=True, kw_only=True)
class Gateway:
    """Everything one running gateway is made of; ``serve`` adds HTTP and background work around it."""

    config: Config
    store: Store
    intake: Intake
    tickets: TicketService
    connectors: dict[str, Connector]
    tasks: TaskTracker
    webhooks: WebhookDispatcher
    bot: BotSetup
    outbound: Outbound
    auditor: Auditor
    sla: SlaRunner
    metrics: Metrics
    health: Health
    sink: InboundSink  # intake as connectors call it (timed and counted when metrics are on)


def build_bot(config: Config) -> BotSetup:
    """Load and index the knowledge base; raises KbError naming the file and the problem."""
    bot = config.bot
    try:
        index = LiveIndex.load(config.resolve(bot.kb), answer_values(bot.business_hours))
    except KbError as exc:
        raise KbError(f"bot.kb: {exc}") from None
    return BotSetup(index=index, policy=bot_policy(config), messages=bot.messages, hours=bot.business_hours)


def bot_policy(config: Config) -> BotPolicy:
    """The configured thresholds and handoff triggers, the shipped defaults where the config is silent."""
    bot = config.bot
    defaults = BotPolicy()
    return BotPolicy(
        answer_threshold=bot.answer_threshold if bot.answer_threshold is not None else defaults.answer_threshold,
        suggest_threshold=bot.suggest_threshold if bot.suggest_threshold is not None else defaults.suggest_threshold,
        margin=bot.margin if bot.margin is not None else defaults.margin,
        max_suggestions=bot.max_suggestions,
        max_misses=bot.max_misses,
        human_phrases=bot.human_phrases if bot.human_phrases is not None else defaults.human_phrases,
        negative_phrases=bot.negative_phrases if bot.negative_phrases is not None else defaults.negative_phrases,
        vip_handoff=bot.vip_handoff,
    )


def build_gateway(
    config: Config, bot: BotSetup, *, clock: Clock = utcnow, retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S
) -> Gateway:
    """The parts, wired and not yet started: the store is not open and no connector runs.

    ``retry_delays_s``: the backoff between attempts of a retryable delivery (tests shorten it).
    """
    store = open_store(config)
    tasks = TaskTracker()
    metrics = Metrics()
    observer = metrics if config.ops.metrics else NO_OBSERVER
    deps = ConnectorDeps(
        store=store,
        tasks=tasks,
        data_dir=config.data_path,
        observer=observer,
        business_hours=config.bot.business_hours,
        open_conversation=partial(open_conversation, store, clock),
    )
    connectors = build_connectors(config, deps)
    outbound = Outbound(
        store,
        connectors,
        tasks,
        resend_after_s=config.server.resend_after_s,
        retry_delays_s=retry_delays_s,
        observer=observer,
    )
    rules = ServiceRules.from_config(config)
    tickets = TicketService(store, outbound, clock, None if rules.empty else rules)
    intake = Intake(store, bot, outbound, tasks, clock, tickets)
    webhooks = WebhookDispatcher(store, config.webhooks, observer=observer)
    return Gateway(
        config=config,
        store=store,
        intake=intake,
        tickets=tickets,
        connectors=connectors,
        tasks=tasks,
        webhooks=webhooks,
        bot=bot,
        outbound=outbound,
        auditor=Auditor(store, clock, retention_days=config.api.audit_retention_days),
        sla=SlaRunner(store, tickets, clock),
        metrics=metrics,
        health=Health(config, store, connectors, webhooks, clock, started_at=clock()),
        sink=metrics.timed(intake.receive) if config.ops.metrics else intake.receive,
    )


async def warm_up(gateway: Gateway) -> None:
    """Read what the service rules need from disk (timezone, holiday tables) off the event loop, before the
    first message needs it."""
    if gateway.tickets.rules is not None:
        await asyncio.to_thread(gateway.tickets.rules.warm_up, utcnow().date())


@asynccontextmanager
async def offline_gateway(config: Config, bot: BotSetup) -> AsyncIterator[Gateway]:
    """A gateway for a CLI command: built as ``serve`` builds it, with the store open but no listeners, pollers
    or background runners. On exit it finishes the work it started (tickets, replies) and closes the store."""
    gateway = build_gateway(config, bot)
    await warm_up(gateway)
    await gateway.store.open()
    try:
        yield gateway
        await gateway.tasks.drain(config.server.shutdown_grace_s)
    finally:
        await gateway.store.close()


@asynccontextmanager
async def opened_store(config: Config) -> AsyncIterator[Store]:
    """Only the configured store, open: for commands that read it and need no bot or connectors."""
    store = open_store(config)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
