"""The operator's routes (/metrics, /readyz, reports, quarantine, the dashboard) and their background work."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress

from aiohttp import web

from connectors.base import Connector, InboundSink
from core.clock import Clock
from core.config import Config
from core.jsonweb import json_response
from core.scopes import Scope
from core.store import Store
from core.store.base import ReportsDurability, StoreUnavailable
from gateway.access import PUBLIC, Guarded, needs
from gateway.admin import AdminPage
from gateway.audit import Auditor
from gateway.health import Health, readiness
from gateway.metrics import Metrics
from gateway.quarantine_api import QuarantineApi
from gateway.reports_api import ReportsApi
from gateway.workers.seat import WorkerSeat

log = logging.getLogger(__name__)


def ops_routes(
    *,
    config: Config,
    store: Store,
    connectors: Mapping[str, Connector],
    sink: InboundSink,
    metrics: Metrics,
    health: Health,
    clock: Clock,
    auditor: Auditor,
    seat: WorkerSeat | None = None,
) -> list[Guarded]:
    """Each route with what it needs: /readyz and the dashboard's static page are public (the page shows
    nothing until the API answers it with a token); the data behind them needs a scope."""
    hours = config.bot.business_hours
    reports = ReportsApi(store, clock, hours.timezone if hours else "UTC")

    async def readyz(request: web.Request) -> web.StreamResponse:
        """Each component's state and the firing alarms; 503 only when the store or a connector is down."""
        snapshot = await health.snapshot()
        body = readiness(snapshot)
        if seat is not None:  # one of several workers answered: which one
            body["worker"] = seat.describe()
        if snapshot.ready and isinstance(store, ReportsDurability):
            with suppress(StoreUnavailable):  # what an acknowledged message survives on this store
                body["durability"] = await store.durability()
        return json_response(body, status=200 if snapshot.ready else 503)

    routes = [
        needs(PUBLIC, web.get("/readyz", readyz)),
        *(needs(PUBLIC, route) for route in AdminPage().routes()),
        *QuarantineApi(store, connectors, sink, auditor).routes(),
        *reports.routes(),
    ]
    if config.ops.metrics:
        routes.append(needs(Scope.METRICS, web.get("/metrics", metrics.handler(health))))
    return routes


@asynccontextmanager
async def ops_running(
    config: Config, metrics: Metrics, health: Health, metrics_fd: int | None = None
) -> AsyncIterator[None]:
    """The alarm checks, and /metrics on its loopback port when one is configured (``metrics_fd``: that port's
    socket, bound by the supervisor and shared by its workers)."""
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(alarming(health, config.ops.alarms.check_interval_s))
        if config.ops.metrics_port is not None:
            await stack.enter_async_context(metrics_site(config, metrics, health, metrics_fd))
        yield


def alarming(health: Health, interval_s: float) -> AbstractAsyncContextManager[None]:
    """Check the health alarms every ``interval_s`` and write ``system.alarm`` events as they begin and end."""
    from gateway.app import periodically  # the app imports this module

    async def check() -> None:
        await health.notify(await health.snapshot())

    return periodically(interval_s, check, name="health:alarms")


@asynccontextmanager
async def metrics_site(config: Config, metrics: Metrics, health: Health, fd: int | None = None) -> AsyncIterator[None]:
    """/metrics without a token on a loopback port, for a Prometheus agent on the same host."""
    app = web.Application()
    app.router.add_get("/metrics", metrics.handler(health))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ops = config.ops
    site: web.BaseSite
    if fd is None:
        site = web.TCPSite(runner, ops.metrics_host, ops.metrics_port)
    else:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        site = web.SockSite(runner, sock)
    await site.start()
    log.info("metrics on http://%s:%s/metrics", ops.metrics_host, ops.metrics_port)
    try:
        yield
    finally:
        await runner.cleanup()
