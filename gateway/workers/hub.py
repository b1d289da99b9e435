"""The supervisor's hub: one socket pair per worker, carrying readiness and the bus between workers.

With the SQLite store there is no Redis pub/sub, yet a web chat reply an agent posts through worker A must
reach the visitor's socket on worker B. Each worker's ``HubLink`` is that store's ``Bus`` (``core/bus.py``):
a publish goes to the supervisor, which passes it to every worker subscribed to the name and answers with
how many are, as Redis's PUBLISH does. The frames themselves are in the shared store; the bus only says
"look". The link also tells the supervisor when the worker serves, and a worker whose link closes has lost
its supervisor (killed, say) and stops itself, so no orphan keeps the port.

Lines of JSON, one message each: ``ready``; ``sub``/``unsub`` (name); ``pub`` (id, name, payload) from a
worker; ``msg`` (name, payload) and ``count`` (id, n) to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

from core.bus import BusHandler

log = logging.getLogger(__name__)

LINE_LIMIT = 1 << 20  # a bus payload is a short note (a frame's seq, a typing flag); far below this


def _line(**message: Any) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class HubLink:
    """A worker's end of its socket pair to the supervisor; a ``core.bus.Bus``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._handlers: dict[str, BusHandler] = {}
        self._waiting: dict[int, asyncio.Future[int]] = {}
        self._ids = itertools.count(1)
        self._deliveries: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()  # the supervisor is gone

    async def start(self) -> None:
        sock = socket.socket(fileno=self._fd)
        self._reader, self._writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
        self._task = asyncio.get_running_loop().create_task(self._read(), name="worker-hub")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for delivery in list(self._deliveries):
            delivery.cancel()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def ready(self) -> None:
        """Tell the supervisor this worker serves (it restarts a worker that dies after this without backoff)."""
        await self._send(op="ready")

    async def _send(self, **message: Any) -> None:
        if self._writer is None or self.closed.is_set():
            raise ConnectionError("the worker's link to its supervisor is closed")
        self._writer.write(_line(**message))
        await self._writer.drain()

    # core.bus.Bus -------------------------------------------------------------------------------------
    async def publish(self, name: str, payload: str) -> int:
        """Returns how many workers are subscribed to ``name`` (this one included, if it is)."""
        ident = next(self._ids)
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = answer
        try:
            await self._send(op="pub", id=ident, name=name, payload=payload)
            return await answer
        finally:
            self._waiting.pop(ident, None)

    async def subscribe(self, name: str, handler: BusHandler) -> None:
        self._handlers[name] = handler
        await self._send(op="sub", name=name)

    async def unsubscribe(self, name: str) -> None:
        if self._handlers.pop(name, None) is not None and not self.closed.is_set():
            await self._send(op="unsub", name=name)

    # reading -------------------------------------------------------------------------------------------
    async def _read(self) -> None:
        assert self._reader is not None
        try:
            while line := await self._reader.readline():
                message = json.loads(line)
                if message["op"] == "count":
                    waiting = self._waiting.get(message["id"])
                    if waiting is not None and not waiting.done():
                        waiting.set_result(int(message["n"]))
                elif message["op"] == "msg":
                    self._deliver(message["name"], message["payload"])
        except (OSError, ValueError) as exc:
            log.error("the link to the supervisor broke: %s", exc)
        finally:
            self.closed.set()
            for waiting in self._waiting.values():
                if not waiting.done():
                    waiting.set_exception(ConnectionError("the supervisor is gone"))

    def _deliver(self, name: str, payload: str) -> None:
        """Each note in a task of its own: a handler (web chat's catch-up) may wait on a lock held by a publish
        that waits for its count, which this reader must be free to read. Tasks start in arrival order."""
        handler = self._handlers.get(name)
        if handler is None:
            return
        task = asyncio.get_running_loop().create_task(self._run(name, handler, payload), name=f"hub:{name}")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    @staticmethod
    async def _run(name: str, handler: BusHandler, payload: str) -> None:
        try:
            await handler(payload)
        except Exception:  # one bad handler must not stop delivery to the others
            log.exception("bus handler for %s failed", name)


class Hub:
    """The supervisor's side: passes each publish to the workers subscribed to its name."""

    def __init__(self, on_ready: Callable[[int], None]) -> None:
        self._on_ready = on_ready
        self._subscribers: dict[str, set[asyncio.StreamWriter]] = {}

    async def serve(self, index: int, sock: socket.socket) -> None:
        """Until the worker's end closes (it exited, or was killed)."""
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
        mine: set[str] = set()
        try:
            while line := await reader.readline():
                message = json.loads(line)
                op = message["op"]
                if op == "pub":
                    targets = self._subscribers.get(message["name"], set())
                    note = _line(op="msg", name=message["name"], payload=message["payload"])
                    for target in targets:
                        target.write(note)
                    writer.write(_line(op="count", id=message["id"], n=len(targets)))
                elif op == "sub":
                    self._subscribers.setdefault(message["name"], set()).add(writer)
                    mine.add(message["name"])
                elif op == "unsub":
                    self._drop(message["name"], writer)
                    mine.discard(message["name"])
                elif op == "ready":
                    self._on_ready(index)
        except (OSError, ValueError) as exc:
            log.warning("worker %d: its link broke: %s", index, exc)
        finally:
            for name in mine:
                self._drop(name, writer)
            writer.close()

    def _drop(self, name: str, writer: asyncio.StreamWriter) -> None:
        group = self._subscribers.get(name)
        if group is not None:
            group.discard(writer)
            if not group:
                del self._subscribers[name]
