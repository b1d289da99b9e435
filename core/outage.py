"""A store outage is logged once per interval with a count, not once per request with a traceback."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# What a sender is told to wait when the store is down (HTTP's Retry-After, web chat's ``retry_after_s``): WeChat,
# PBXes, helpdesks and the chat widget retry, and what they retry is deduplicated.
RETRY_AFTER_S = 5


class OutageLog:
    """With Redis stopped every request failed and logged a traceback (28 in 8 s); one line per interval says
    the same, with how many requests were turned away meanwhile."""

    def __init__(self, every_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every_s = every_s
        self._clock = clock
        self._last: float | None = None
        self._suppressed = 0

    def report(self, where: str, exc: BaseException) -> bool:
        """Log this failure unless one was logged within the interval; True when it was logged."""
        now = self._clock()
        if self._last is not None and now - self._last < self._every_s:
            self._suppressed += 1
            return False
        more, self._suppressed, self._last = self._suppressed, 0, now
        log.error("store unavailable (%s): %s; %d more failures since the last report", where, exc, more)
        return True

    def recovered(self) -> None:
        """The store answered again: the next outage is reported at once."""
        if self._last is not None:
            log.warning("store reachable again (%d failures since the last report)", self._suppressed)
        self._last, self._suppressed = None, 0
