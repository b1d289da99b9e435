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
from connectors.base import ACTIVE_PUSHES, Connector, ConnectorDeps, InboundSink
from connectors.capabilities import SendsCodes
from core.bus import Bus
from core.clock import Clock, utcnow
from core.config import Config, RedisStoreConfig
from core.model import Delivery, Identity, Ticket, TicketStatus
from core.observe import NO_OBSERVER
from core.outage import OutageLog
from core.store import Store, open_store
from core.tasks import TaskTracker
from gateway.audit import Auditor
from gateway.autoclose import PREFIX as AUTOCLOSE_PREFIX
from gateway.autoclose import AutoClose
from gateway.contacts import CodeSender, ContactService
from gateway.downstream.webhooks import WebhookDispatcher
from gateway.faq_admin import answer_values
from gateway.health import Health
from gateway.intake import Intake, open_conversation
from gateway.metrics import Metrics
from gateway.notices import ProgressNotices
from gateway.outbound import RETRY_DELAYS_S, Outbound
from gateway.sla_runner import SlaRunner
from gateway.survey import SurveyLinks, SurveyService
from gateway.ticket_quota import TicketQuota
from gateway.tickets import TicketChange, TicketService
from normalizer.rules.calendar import Calendar, calendar_for
from normalizer.rules.calendar import warm_up as warm_calendar
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
    outage: OutageLog  # one rate-limited report of a store outage for requests and background work alike
    contacts: ContactService
    surveys: SurveyService
    sla: SlaRunner  # the one runner of the store's timers (SLA, auto-close)
    calendar: Calendar  # working time for auto-close's business days
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
    config: Config,
    bot: BotSetup,
    *,
    clock: Clock = utcnow,
    retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
    bus: Bus | None = None,
) -> Gateway:
    """The parts, wired and not yet started: the store is not open and no connector runs.

    ``retry_delays_s``: the backoff between attempts of a retryable delivery (tests shorten it). ``bus``: the
    SQLite store's way to the other worker processes (``gateway.workers``), when there are any.
    """
    store = open_store(config, bus=bus)
    outage = OutageLog()
    tasks = TaskTracker(outage)
    metrics = Metrics()
    observer = metrics if config.ops.metrics else NO_OBSERVER
    deps = ConnectorDeps(
        store=store,
        tasks=tasks,
        data_dir=config.data_path,
        observer=observer,
        business_hours=config.bot.business_hours,
        open_conversation=partial(open_conversation, store, clock),
        intake_gate=asyncio.Semaphore(intake_slots(config)),
        outage=outage,
    )
    connectors = build_connectors(config, deps)
    outbound = Outbound(
        store,
        connectors,
        tasks,
        resend_after_s=config.server.resend_after_s,
        retry_delays_s=retry_delays_s,
        observer=observer,
        outage=outage,
    )
    rules = ServiceRules.from_config(config)
    surveys = SurveyService(
        store, outbound, clock, config.customer.survey, SurveyLinks(store, config.customer.survey.public_url)
    )
    notices = ProgressNotices(store, outbound, config.customer.notices)

    async def after_status(ticket: Ticket, previous: TicketStatus) -> None:
        """What the customer hears when an agent moves their ticket: a notice, the survey on resolve; and a
        pending ticket's auto-close clock starts or stops."""
        await notices.on_status(ticket, previous)
        await autoclose.on_status(ticket, previous)
        if ticket.status is TicketStatus.RESOLVED:
            await surveys.on_resolved(ticket)

    tickets = TicketService(store, outbound, clock, None if rules.empty else rules, on_status=after_status)

    async def reopen_for_callback(ticket: Ticket, tag: str) -> Ticket:
        return await tickets.change(ticket.id, TicketChange(status=TicketStatus.OPEN, add_tags=(tag,)))

    surveys.reopening_with(reopen_for_callback)
    calendar = calendar_for("default", config.sla)  # business days: working hours, public holidays, 调休
    autoclose = AutoClose(store, outbound, tickets, clock, config.customer.autoclose, calendar)
    contacts = ContactService(store, clock, _code_sender(connectors))
    intake = Intake(
        store,
        bot,
        outbound,
        tasks,
        clock,
        tickets,
        customer=config.customer,
        contacts=contacts,
        surveys=surveys,
        quota=TicketQuota.from_config(store, config),
    )
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
        outage=outage,
        contacts=contacts,
        surveys=surveys,
        sla=SlaRunner(store, tickets, clock, others={AUTOCLOSE_PREFIX: autoclose.fire}),
        calendar=calendar,
        metrics=metrics,
        health=Health(config, store, connectors, webhooks, clock, started_at=clock()),
        sink=metrics.timed(intake.receive) if config.ops.metrics else intake.receive,
    )


def _code_sender(connectors: dict[str, Connector]) -> CodeSender | None:
    """The first inbox that can send a customer a one-time code (an email inbox), or None: no linking by code."""
    sender = next((c for c in connectors.values() if isinstance(c, SendsCodes)), None)
    if sender is None:
        return None

    async def send(to: Identity, text: str) -> Delivery | None:
        assert sender is not None
        return await sender.send_code(to, text)

    return send


async def warm_up(gateway: Gateway) -> None:
    """Read what the service rules need from disk (timezone, holiday tables) off the event loop, before the
    first message needs it."""
    if gateway.tickets.rules is not None:
        await asyncio.to_thread(gateway.tickets.rules.warm_up, utcnow().date())
    await asyncio.to_thread(warm_calendar, gateway.calendar, utcnow().date())  # auto-close's business days


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


def intake_slots(config: Config) -> int:
    """Messages taken in at once: four fifths of Redis's pooled connections (40 of the default 50, as measured
    for 500 concurrent pushes with no 503), leaving the rest to the API, timers and deliveries; on SQLite,
    whose store thread serializes anyway, the same 40."""
    if isinstance(config.store, RedisStoreConfig):
        return max(1, config.store.max_connections * 4 // 5)
    return ACTIVE_PUSHES
