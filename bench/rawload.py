"""A lean HTTP/1.1 load generator: requests built as bytes before the clock starts, keep-alive connections,
one request in flight on each, responses read by their Content-Length and nothing more.

Why not aiohttp's client: on a 2-core machine the client shares the cores with the server it measures, and
aiohttp's client spent about as much CPU per request as a lean server does, so a faster server (or a second
worker process) showed as little gain because the client had the other core. This one costs a few tens of
microseconds a request (the bench prints its CPU per request as ``client_cpu_ms_per_push``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Mapping, Sequence
from urllib.parse import urlencode


def post(host: str, port: int, path: str, query: Mapping[str, str], body: str | bytes) -> bytes:
    """One POST as the bytes on the wire (keep-alive, a fixed Content-Length)."""
    data = body.encode() if isinstance(body, str) else body
    head = (
        f"POST {path}?{urlencode(query)} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


class _Connection(asyncio.Protocol):
    """Sends the next request of the shared queue each time a response is complete, until the queue is empty or
    the server closes the connection after a whole response (gunicorn's sync workers do after each one)."""

    def __init__(self, todo: deque[bytes], latencies: list[float], statuses: list[int], done: asyncio.Future[None]):
        self._todo, self._latencies, self._statuses, self._done = todo, latencies, statuses, done
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._need = -1  # bytes of the whole response (head and body) once its head is read; -1 before
        self._waiting = False  # a request is out and its response not complete
        self._status = 0
        self._closing = False  # the response said "Connection: close"
        self._started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._next()

    def _next(self) -> None:
        assert self._transport is not None
        if not self._todo:
            self._transport.close()
            return
        self._buffer.clear()
        self._need = -1
        self._waiting = True
        self._started = time.perf_counter()
        self._transport.write(self._todo.popleft())

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._need < 0:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).lower()
            self._status = int(head[9:12])
            self._closing = b"\r\nconnection: close" in head
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                raise RuntimeError(f"a response without Content-Length: {head[:200]!r}")
            line_end = head.find(b"\r\n", at + 2)
            self._need = end + 4 + int(head[at + 17 : line_end if line_end >= 0 else len(head)])
        if len(self._buffer) >= self._need:
            self._latencies.append((time.perf_counter() - self._started) * 1000)
            self._statuses.append(self._status)
            self._waiting = False
            if self._closing:  # the lane opens another connection for the next request
                assert self._transport is not None
                self._transport.close()
            else:
                self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done.done():
            return
        if exc is not None:
            self._done.set_exception(exc)
        elif self._waiting:
            self._done.set_exception(ConnectionError("the server closed a connection before its response was whole"))
        else:
            self._done.set_result(None)


async def drive(host: str, port: int, requests: Sequence[bytes], concurrency: int) -> tuple[float, list[float], int]:
    """Send ``requests`` over ``concurrency`` connections; (seconds, latencies in ms, responses with 200)."""
    loop = asyncio.get_running_loop()
    todo = deque(requests)
    latencies: list[float] = []
    statuses: list[int] = []

    async def lane() -> None:
        while todo:  # a connection the server closed after a whole response is opened again
            done: asyncio.Future[None] = loop.create_future()
            await loop.create_connection(functools.partial(_Connection, todo, latencies, statuses, done), host, port)
            await done

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(min(concurrency, len(requests)))))
    return time.perf_counter() - started, latencies, statuses.count(200)
