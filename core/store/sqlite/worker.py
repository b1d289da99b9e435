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
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._resource: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, opener: Callable[[], Any]) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()
        self._resource = await self.submit(lambda _: opener())

    async def submit(self, fn: Callable[[Any], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((fn, future))
        return await future

    async def stop(self, closer: Callable[[Any], None]) -> None:
        await self.submit(closer)
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)

    def _serve(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._jobs.put(None)  # stop after this batch
                    break
                batch.append(job)
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
