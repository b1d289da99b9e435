"""Background tasks that are tracked, so shutdown can finish in-flight work instead of dropping it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from core.outage import OutageLog
from core.store.base import StoreUnavailable

log = logging.getLogger(__name__)


class TaskTracker:
    def __init__(self, outage: OutageLog | None = None) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outage = outage or OutageLog()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if isinstance(exc, StoreUnavailable):
            self._outage.report(task.get_name(), exc)  # one line per interval, no traceback
        else:
            log.error("background task %s failed", task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, grace_s: float) -> None:
        """Wait for in-flight work; cancel what is still running after ``grace_s`` seconds."""
        while self._tasks:
            pending = set(self._tasks)
            _, still = await asyncio.wait(pending, timeout=grace_s)
            if still:
                log.warning("cancelling %d background tasks still running at shutdown", len(still))
                for task in still:
                    task.cancel()
                await asyncio.gather(*still, return_exceptions=True)
                return
