"""One thread owns the SQLite connection; jobs queued meanwhile run as a batch and wake the loop once."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Job = tuple[Callable[[Any], Any], asyncio.Future[Any]]

_MAX_BATCH = 64


class SerialWorker:
    """Like a one-thread executor, but under load one ``call_soon_threadsafe`` serves a whole batch.

    With a plain executor every job costs a loop wake-up (a self-pipe write and read) and a GIL
    hand-over; at a few hundred messages a second that overhead was most of the store's time.
    """

    def __init__(self, name: str, batch: Callable[[Any, Callable[[], None]], None] | None = None) -> None:
        """``batch(resource, run_all)``, if given, wraps the running of every batch of two or more jobs
        (SQLite: one transaction, so one commit serves them all). If it raises, every job of the batch
        gets that error, even one whose own work went through, since none of it was kept."""
        self._batch = batch
        self._jobs: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self._handing: list[Job] = []  # submitted during this turn of the loop, handed over at its end
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._resource: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, opener: Callable[[], Any]) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()
        self._resource = await self.submit(lambda _: opener())

    async def submit(self, fn: Callable[[Any], T]) -> T:
        """Queue ``fn``; the jobs the loop submits in one turn reach the thread together (``_hand_over``)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._handing.append((fn, future))
        if len(self._handing) == 1:
            loop.call_soon(self._hand_over)
        return await future

    def _hand_over(self) -> None:
        """One queue put, so one wake-up of the thread, for every job submitted since the last one.

        A put that finds the thread waiting wakes it at once, and it then contends for the GIL with the loop
        that is still running the rest of its turn: with five store jobs per web chat message, those hand-overs
        were ~6% of the loop's time under load (issue 23). Handed over together, they also share one commit."""
        jobs, self._handing = self._handing, []
        self._jobs.put(jobs)

    async def stop(self, closer: Callable[[Any], None]) -> None:
        await self.submit(closer)
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)

    def _serve(self) -> None:
        waiting: list[Job] = []
        stopping = False
        while True:
            if not waiting:
                if stopping:
                    return
                first = self._jobs.get()
                if first is None:
                    return
                waiting = first
            while len(waiting) < _MAX_BATCH and not stopping:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True  # stop once what was handed over before it has run
                    break
                waiting += more
            batch, waiting = waiting[:_MAX_BATCH], waiting[_MAX_BATCH:]
            outcomes = self._run_batch(batch)
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_settle, outcomes)

    def _run_batch(self, batch: list[Job]) -> list[tuple[asyncio.Future[Any], bool, Any]]:
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []

        def run_all() -> None:
            for fn, future in batch:
                try:
                    outcomes.append((future, True, fn(self._resource)))
                except BaseException as exc:  # handed to the awaiting coroutine, never lost in this thread
                    outcomes.append((future, False, exc))

        if self._batch is None or len(batch) == 1:
            run_all()
            return outcomes
        try:
            self._batch(self._resource, run_all)
        except BaseException as exc:
            return [(future, False, exc) for _, future in batch]
        return outcomes


def _settle(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in outcomes:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
