"""create_app: the wired gateway (gateway/wiring.py) served over HTTP, with its background work."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress

from aiohttp import web

from bot.live import LiveIndex
from bot.setup import BotSetup
from connectors.capabilities import Drains, ShowsTyping
from core import heap
from core.bus import Bus
from core.clock import Clock, utcnow
from core.config import Config
from core.jsonweb import json_response
from core.model import Ticket
from core.outage import RETRY_AFTER_S, OutageLog
from core.store import Store, StoreUnavailable
from gateway.access import CHANNEL, PUBLIC, Access, Tokens, needs
from gateway.api import Api, Handler, error
from gateway.contacts_api import ContactsApi
from gateway.faq_admin import FaqAdmin
from gateway.logs import install_request_ids
from gateway.ops import ops_routes, ops_running
from gateway.outbound import RETRY_DELAYS_S
from gateway.survey_page import SurveyPage
from gateway.webchat_admin import WebchatSessions
from gateway.wiring import Gateway, bot_policy, build_bot, build_gateway, warm_up
from gateway.workers.seat import WorkerSeat

log = logging.getLogger(__name__)

__all__ = ["ACCESS", "GATEWAY", "Gateway", "bot_policy", "build_bot", "create_app"]  # the CLI and tests import these


GATEWAY = web.AppKey("gateway", Gateway)
ACCESS = web.AppKey("access", Access)
SEAT = web.AppKey("seat", WorkerSeat)  # only in a worker of ``huiliu serve --workers N``


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is JSON with a code and a message; an unexpected one never takes the server down."""
    try:
        response: web.StreamResponse = await handler(request)
        # A web chat socket ending is no sign the store is back (its frames report that themselves).
        if response.status < 500 and not isinstance(response, web.WebSocketResponse):
            request.app[GATEWAY].outage.recovered()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
    except asyncio.CancelledError:
        raise
    except StoreUnavailable as exc:
        request.app[GATEWAY].outage.report(f"{request.method} {request.path}", exc)
        response = error(503, "store_unavailable", "the store is unreachable; nothing was kept, try again shortly")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal", "internal error; it has been logged")


def create_app(
    config: Config,
    bot: BotSetup,
    *,
    clock: Clock = utcnow,
    retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
    settle_heap: bool = False,
    bus: Bus | None = None,
    seat: WorkerSeat | None = None,
) -> web.Application:
    """``retry_delays_s``: the backoff between attempts of a retryable delivery (tests shorten it).
    ``settle_heap``: once started, freeze what is alive out of the garbage collector's sight (``core.heap``);
    ``serve`` does, a test process (whose heap is the test run's) does not. ``bus`` and ``seat``: this process
    is one of ``huiliu serve --workers N`` (``gateway.workers``)."""
    access = Access(Tokens(config.api.tokens))
    app = web.Application(client_max_size=config.server.max_body_bytes, middlewares=[access.middleware, _errors])
    install_request_ids(app)  # outermost: every request, channels' too, has its id in the access log
    gateway = build_gateway(config, bot, clock=clock, retry_delays_s=retry_delays_s, bus=bus)
    store, connectors, tickets, webhooks = gateway.store, gateway.connectors, gateway.tickets, gateway.webhooks
    app[GATEWAY] = gateway
    app[ACCESS] = access
    if seat is not None:
        app[SEAT] = seat

    async def typing(ticket: Ticket, on: bool) -> bool:
        conversation = await store.get_conversation(ticket.conversation_id)
        connector = connectors.get(ticket.inbox)
        if conversation is None or not isinstance(connector, ShowsTyping):
            return False
        return await connector.typing(conversation.address, author="agent", on=on)

    api = Api(store, tickets, typing, gateway.auditor, webhooks=webhooks)
    access.add(app.router, api.routes())
    access.add(app.router, gateway.auditor.routes())
    access.add(app.router, ContactsApi(store, gateway.contacts, gateway.auditor).routes())
    access.add(app.router, WebchatSessions(connectors, gateway.auditor).routes())
    access.add(app.router, (needs(PUBLIC, route) for route in SurveyPage(gateway.surveys, clock).routes()))
    if isinstance(bot.index, LiveIndex):
        access.add(app.router, FaqAdmin(bot.index, gateway.auditor).routes())
    for connector in connectors.values():
        access.add(app.router, (needs(CHANNEL, route) for route in connector.routes()))
    access.add(app.router, [needs(PUBLIC, web.get("/healthz", _healthz))])
    access.add(
        app.router,
        ops_routes(config=config, store=store, connectors=connectors, sink=gateway.sink, metrics=gateway.metrics,
                   health=gateway.health, clock=clock, auditor=gateway.auditor, seat=seat),
    )  # fmt: skip
    app.on_response_prepare.append(_plain_server_header)
    app.cleanup_ctx.append(_lifespan)
    if settle_heap:
        app.cleanup_ctx.append(_settled_heap)
    app.on_shutdown.append(_stop_connectors)
    return app


async def _settled_heap(app: web.Application) -> AsyncIterator[None]:
    """Freeze the heap once started (after ``_lifespan``'s start-up), then what survives since, every SETTLE_EVERY_S;
    and collect the young generation less often while serving (``heap.widen_young_generation``)."""
    thresholds = heap.widen_young_generation()
    heap.settle()
    settler = heap.Settler()

    async def tick() -> None:
        settler.tick()

    try:
        async with periodically(heap.SETTLE_EVERY_S, tick, name="heap:settle"):
            yield
    finally:
        gc.set_threshold(*thresholds)


async def _lifespan(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    outage = gateway.outage
    await warm_up(gateway)
    await gateway.store.open()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(gateway.store.close)
        for connector in gateway.connectors.values():
            await stack.enter_async_context(connector.running(gateway.sink))
        gateway.tasks.spawn(gateway.intake.recover(), name="intake:recover")
        gateway.tasks.spawn(gateway.outbound.resend_unsent(), name="outbound:resend")
        stuck_after = gateway.config.server.resend_after_s
        every = stuck_after / 4
        grace_s = gateway.config.server.shutdown_grace_s  # what work under way gets to finish at shutdown
        resend = periodically(
            every, gateway.outbound.resend_unsent, name="outbound:resend", outage=outage, grace_s=grace_s
        )
        await stack.enter_async_context(resend)

        async def recover_stuck() -> None:
            await gateway.intake.recover(older_than_s=stuck_after)

        await stack.enter_async_context(
            periodically(every, recover_stuck, name="intake:recover", outage=outage, grace_s=grace_s)
        )
        await stack.enter_async_context(gateway.webhooks.running(grace_s=grace_s))
        gateway.tasks.spawn(gateway.sla.run_once(), name="sla:catch-up")  # breaches due while we were down
        await stack.enter_async_context(
            periodically(gateway.config.sla.scan_interval_s, gateway.sla.run_once, name="sla")
        )
        await stack.enter_async_context(sweeping(gateway.store, gateway.config.server.sweep_interval_s))
        await stack.enter_async_context(
            periodically(gateway.config.server.sweep_interval_s, gateway.auditor.sweep, name="audit:sweep")
        )
        seat = app.get(SEAT)
        metrics_fd = seat.metrics_fd if seat is not None else None
        await stack.enter_async_context(ops_running(gateway.config, gateway.metrics, gateway.health, metrics_fd))
        if isinstance(gateway.bot.index, LiveIndex) and gateway.config.bot.kb_watch_s > 0:
            await stack.enter_async_context(watching_kb(gateway.bot.index, gateway.config.bot.kb_watch_s))
        yield
        gateway.webhooks.stop(grace_s)  # no new deliveries; those in flight finish while the tasks drain
        await gateway.tasks.drain(grace_s)


@asynccontextmanager
async def periodically(
    interval_s: float,
    job: Callable[[], Awaitable[object]],
    *,
    name: str,
    outage: OutageLog | None = None,
    grace_s: float = 0.0,
) -> AsyncIterator[None]:
    """Run ``job`` every ``interval_s`` while the gateway runs. A run that fails is logged and the next one
    still comes: a store hiccup or a bad file must not end the background work for good. On exit no new run
    starts, and one under way (resending a reply, say) gets ``grace_s`` to finish before it is cancelled."""
    stop = asyncio.Event()

    reporter = outage or OutageLog()

    async def run() -> None:
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
                return
            try:
                await job()
            except StoreUnavailable as exc:
                reporter.report(name, exc)  # no traceback: it would say nothing more
            except Exception:
                log.exception("%s failed; trying again in %.0f s", name, interval_s)

    task = asyncio.get_running_loop().create_task(run(), name=name)
    try:
        yield
    finally:
        stop.set()
        done, _ = await asyncio.wait([task], timeout=grace_s)
        if not done:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


def sweeping(store: Store, interval_s: float, batch: int = 1000) -> AbstractAsyncContextManager[None]:
    """Sweep expired claims every ``interval_s`` while the gateway runs, a batch at a time."""

    async def sweep() -> None:
        purged = 0
        while (n := await store.purge_expired(batch)) > 0:
            purged += n
            if n < batch:
                break
        if purged:
            log.info("swept %d expired claims", purged)

    return periodically(interval_s, sweep, name="store:sweep")


def watching_kb(index: LiveIndex, interval_s: float) -> AbstractAsyncContextManager[None]:
    """Reload the KB when its file changes on disk, checked every ``interval_s``: an operator edits faq.yaml
    (or a deploy replaces it) and the bot answers from it without a restart or an API call."""
    return periodically(interval_s, index.reload_if_changed, name="bot:kb-watch")


async def _stop_connectors(app: web.Application) -> None:
    """On shutdown, let long-lived sockets go so in-flight requests can finish within the grace period."""
    for connector in app[GATEWAY].connectors.values():
        if isinstance(connector, Drains):
            await connector.drain()


async def _plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp announces "Python/3.11 aiohttp/3.x": versions tell an attacker which advisories apply."""
    response.headers["Server"] = "huiliu"


async def _healthz(request: web.Request) -> web.StreamResponse:
    return json_response({"status": "ok"})
