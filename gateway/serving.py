"""``huiliu serve``'s process: bind first (a busy port is one clear line), start, say what runs, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from core.config import (
    Config,
    EmailInbox,
    PhoneInbox,
    RedisStoreConfig,
    SqliteStoreConfig,
    WebchatInbox,
    WechatInbox,
)
from gateway.logs import ACCESS_LOGGER, AccessLogger
from gateway.workers.hub import HubLink

log = logging.getLogger("huiliu.serve")


class BindError(Exception):
    """The listen address cannot be had: in use, not allowed, or not an address of this machine."""


class StartupError(Exception):
    """Start-up failed (the store is unreachable, a connector cannot start): one line for the operator."""


def huiliu_version() -> str:
    try:
        return version("huiliu")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def listen_socket(host: str, port: int) -> socket.socket:
    """Bind before anything starts, so a busy port stops the server at once with one line naming it."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise BindError(
            f"cannot listen on {where}: {host!r} is not an address of this machine ({exc.strerror})"
        ) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            reason = "the address is already in use (is another huiliu running? choose another with --port)"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            reason = "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE; use --port)"
        elif exc.errno == errno.EADDRNOTAVAIL:
            reason = "not an address of this machine (set server.host or --host)"
        else:
            reason = exc.strerror or str(exc)
        raise BindError(f"cannot listen on {where}: {reason}") from None
    sock.setblocking(False)
    return sock


def listen_sockets(host: str, port: int, count: int) -> tuple[socket.socket, ...]:
    """``count`` listening sockets on one address, one per worker, bound with SO_REUSEPORT: the kernel spreads
    new connections evenly over them (one shared socket would let whichever worker wakes first take a burst).

    The address is first taken without SO_REUSEPORT, so another server already on it (even another huiliu,
    which would otherwise silently share the port) stops the start with the same one line as ever."""
    probe = listen_socket(host, port)
    address = probe.getsockname()
    probe.close()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(probe.family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(128)
    except OSError as exc:  # taken in the instant between the probe and here
        for sock in socks:
            sock.close()
        raise BindError(f"cannot listen on {host}:{address[1]}: {exc.strerror or exc}") from None
    return tuple(socks)


def listen_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _without_secret(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=f"***@{netloc}"))


def startup_summary(config: Config, url: str, kb_entries: int, event_loop: str) -> str:
    """What this process serves, in one block: nothing secret (a Redis password is masked)."""
    store = config.store
    if isinstance(store, SqliteStoreConfig):
        where = f"sqlite {config.data_path / store.path}"
    else:
        assert isinstance(store, RedisStoreConfig)
        where = f"redis {_without_secret(store.url)} prefix {store.prefix}"
    lines = [
        f"huiliu {huiliu_version()} listening on {url}",
        f"  event loop: {event_loop}",
        f"  store: {where}",
        f"  kb: {config.resolve(config.bot.kb)} ({kb_entries} entries)",
    ]
    for inbox in config.inboxes:
        if isinstance(inbox, WebchatInbox):
            at = f"{url}{inbox.path.rstrip('/')}/"
        elif isinstance(inbox, WechatInbox):
            at = f"{url}/wechat/{inbox.name}"
        elif isinstance(inbox, PhoneInbox):
            at = f"{url}/cti/{inbox.name}" if inbox.cti_enabled else "CTI off"
            if inbox.cdr.watch_folder:
                at += f", CDR folder {config.data_path / inbox.cdr.watch_folder}"
        else:
            assert isinstance(inbox, EmailInbox)
            at = f"{inbox.address} via IMAP {inbox.imap.host}"
        lines.append(f"  inbox {inbox.name} ({inbox.channel}): {at}")
    if not config.inboxes:
        lines.append("  no inboxes configured")
    lines.append(f"  webhooks: {len(config.webhooks)}, API tokens: {len(config.api.tokens)}")
    return "\n".join(lines)


async def run(
    app: web.Application, sock: socket.socket, *, grace_s: float, summary: str, link: HubLink | None = None
) -> None:
    """Serve on ``sock`` until SIGTERM or SIGINT; then stop taking requests and give in-flight work ``grace_s``.

    ``link``: a worker's link to its supervisor (``huiliu serve --workers N``). The worker says when it serves,
    and stops as on SIGTERM when the link closes: its supervisor is gone, and no orphan may keep the port."""
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=grace_s,
        access_log_class=AccessLogger,
        access_log=logging.getLogger(ACCESS_LOGGER),
    )
    try:
        if link is not None:
            await link.start()  # before the app starts: web chat finds the bus in the store as it starts
        await runner.setup()
    except Exception as exc:
        log.debug("start-up failed", exc_info=True)
        await runner.cleanup()
        if link is not None:
            await link.stop()
        sock.close()
        raise StartupError(f"cannot start: {exc} (--log-level DEBUG shows where)") from exc
    try:
        await web.SockSite(runner, sock).start()
        log.info("%s", summary)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        waits = [loop.create_task(stop.wait())]
        if link is not None:
            await link.ready()
            waits.append(loop.create_task(link.closed.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()
        if not stop.is_set():
            log.error("the supervisor is gone; stopping")
        log.info("stopping: in-flight work has %.0f s to finish", grace_s)
    finally:
        await runner.cleanup()
        if link is not None:
            await link.stop()
    log.info("stopped")
