"""The supervisor: binds the port, starts N workers on it, restarts one that dies, stops them all on SIGTERM.

Why a parent process rather than N independent ones: it binds once (a busy port is still one clear line),
hands each worker a socket of its own on that port, restarts a crashed worker, and is the hub that carries
web chat delivery between workers when there is no Redis (``hub.py``). Each worker is a whole ``huiliu
serve`` (``gateway.cli``), started with its seat in the environment (``seat.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.workers.hub import Hub
from gateway.workers.seat import ENV, WorkerSeat

log = logging.getLogger("huiliu.serve")

# A worker that ran at least this long before it died is restarted at once; one dying sooner, again and again
# (the store down, a full disk), is restarted after a pause that doubles up to MAX_BACKOFF_S.
HEALTHY_AFTER_S = 10.0
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
# On SIGTERM every worker gets the configured shutdown grace and this much more before it is killed.
KILL_MARGIN_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """``command``: a worker's argv (``huiliu serve`` with the same config and logging). ``listeners``: one
    listening socket per worker, bound to the same port with SO_REUSEPORT. The supervisor keeps them open, so
    connections queued on a dead worker's socket wait for its replacement instead of being refused."""

    command: tuple[str, ...]
    listeners: tuple[socket.socket, ...]
    metrics: socket.socket | None
    grace_s: float
    url: str
    environ: dict[str, str]


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class Supervisor:
    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._workers = len(plan.listeners)
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._ready: set[int] = set()  # seats whose current worker serves
        self._all_ready_once = False
        self._stopping = asyncio.Event()
        self._exit_code = 0
        self._hub = Hub(self._on_ready)

    async def run(self) -> int:
        """Until SIGTERM or SIGINT (then 0), or until a worker fails to start at all (then its exit status)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop)
        seats = [loop.create_task(self._keep(index), name=f"worker-{index}") for index in range(self._workers)]
        await self._stopping.wait()
        log.info("stopping %d workers: in-flight work has %.0f s to finish", len(self._procs), self._plan.grace_s)
        for proc in list(self._procs.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        done, pending = await asyncio.wait(seats, timeout=self._plan.grace_s + KILL_MARGIN_S)
        for index, proc in list(self._procs.items()):
            log.error("worker %d (pid %d) did not stop in time; killing it", index + 1, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        if pending:
            await asyncio.wait(pending)
        for task in done | pending:
            if not task.cancelled() and task.exception() is not None:
                log.error("worker seat failed", exc_info=task.exception())
        log.info("stopped")
        return self._exit_code

    def _stop(self) -> None:
        self._stopping.set()

    def _on_ready(self, index: int) -> None:
        self._ready.add(index)
        proc = self._procs.get(index)
        if not self._all_ready_once and len(self._ready) == self._workers:
            self._all_ready_once = True
            pids = ", ".join(str(p.pid) for _, p in sorted(self._procs.items()))
            log.info("%d workers serve %s (pids %s)", self._workers, self._plan.url, pids)
        elif self._all_ready_once and proc is not None:
            log.info("worker %d (pid %d) serves again", index + 1, proc.pid)

    async def _keep(self, index: int) -> None:
        """Keep seat ``index`` filled until the supervisor stops."""
        backoff = FIRST_BACKOFF_S
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                proc, hub = await self._start(index)
            except OSError as exc:  # no process could be made (out of memory, too many processes)
                log.error("worker %d could not be started (%s); trying again in %.1f s", index + 1, exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            if self._stopping.is_set():  # SIGTERM came while it was being made: it missed the round of signals
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            code = await proc.wait()
            await hub  # the worker's end is closed now: the hub forgets its subscriptions
            was_ready = index in self._ready
            self._ready.discard(index)
            self._procs.pop(index, None)
            if self._stopping.is_set():
                if code != 0:
                    log.warning("worker %d (pid %d) stopped: %s", index + 1, proc.pid, describe_exit(code))
                return
            if not self._all_ready_once and not was_ready:
                # It never served: the config, the KB or the store is wrong, and every worker would fail alike.
                log.error("worker %d (pid %d) could not start (%s); stopping", index + 1, proc.pid, describe_exit(code))
                self._exit_code = code if code > 0 else 1
                self._stop()
                return
            if time.monotonic() - started >= HEALTHY_AFTER_S:
                backoff = FIRST_BACKOFF_S
            log.warning(
                "worker %d (pid %d) died (%s); starting another in %.1f s",
                index + 1, proc.pid, describe_exit(code), backoff,
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _start(self, index: int) -> tuple[asyncio.subprocess.Process, asyncio.Task[None]]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        listener, metrics = self._plan.listeners[index], self._plan.metrics
        seat = WorkerSeat(
            index=index,
            workers=self._workers,
            listen_fd=listener.fileno(),
            hub_fd=theirs.fileno(),
            metrics_fd=metrics.fileno() if metrics is not None else None,
        )
        fds = [listener.fileno(), theirs.fileno(), *([metrics.fileno()] if metrics is not None else [])]
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._plan.command, pass_fds=fds, env={**self._plan.environ, ENV: seat.to_env()}
            )
        finally:
            theirs.close()  # the worker has its copy; ours must go, or the hub would never see it close
        self._procs[index] = proc
        hub = asyncio.get_running_loop().create_task(self._hub.serve(index, ours), name=f"hub-{index}")
        return proc, hub


def worker_command(executable: str, global_args: Sequence[str], config: str) -> tuple[str, ...]:
    return (executable, "-m", "gateway.cli", *global_args, "serve", "-c", config)


def worker_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != ENV}
