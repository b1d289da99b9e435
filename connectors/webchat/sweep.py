"""One periodic sweep for every open web chat socket's heartbeat and every message's intake hold.

aiohttp's own ``heartbeat=`` keeps a timer per socket, re-armed through a ``call_soon`` on every frame received,
and per ping a pong timer and a task besides: 5,000 idle sockets at the default 30 s are ~170 pings a second, each
three or four handles on a loop heap of ~5,000 timers, and every visitor's message one more callback. A message's
intake hold (``HANDLING_HOLD_S``) was a ``call_later`` per message too. Here one task wakes every ``tick_s``: it
pings the sockets that have been silent for ``interval_s``, drops those that left a ping unanswered for
``interval_s / 2`` (aiohttp's own wait for the pong), and gives back the holds that ran out. A received frame only
stores its time, and a hold that ends on time is one flag. Sockets opened together (a burst of visitors) are
pinged over a few ticks rather than all at once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

from connectors.webchat.wire import PING_FRAME

log = logging.getLogger(__name__)


class Beat:
    """One socket's heartbeat state: when a frame last came in (``seen``), and when the unanswered ping went out
    (``pinged``; 0 when none is). ``transport`` is the socket's own, written to directly: a control frame of two
    bytes needs none of the writer's framing or compression, and a direct write needs no coroutine or task."""

    __slots__ = ("due", "pinged", "seen", "transport")

    def __init__(self, transport: asyncio.Transport | None, now: float) -> None:
        self.transport = transport
        self.seen = now
        self.pinged = 0.0
        self.due = 0  # the sweep's tick whose bucket holds it

    def heard(self, now: float) -> None:
        """Any frame from the peer (a pong too) shows it is there: no ping is outstanding any more."""
        self.seen = now
        self.pinged = 0.0


class Hold:
    """An intake slot held for one message until its handling ends or the sweep says time is up, given back once."""

    __slots__ = ("_release", "deadline")

    def __init__(self, release: Callable[[], None], deadline: float) -> None:
        self._release: Callable[[], None] | None = release
        self.deadline = deadline

    def end(self, *_: object) -> None:
        """Give the slot back (a task's done callback, or the sweep); only the first call does anything."""
        release, self._release = self._release, None
        if release is not None:
            release()


class Sweeper:
    """The heartbeats of a set of sockets and the holds of their messages, checked every ``tick_s`` by ``sweep``.

    A sweep looks only at the sockets due then, not at every open one (5,000 of them took the loop ~2.5 ms a
    tick): each socket waits in the bucket of the tick its next check falls in (``interval_s`` after the frame
    it last heard when added or checked, ``pong_wait_s`` after a ping), and a frame heard meanwhile only moves its
    check on when that comes (as aiohttp re-arms a heartbeat that fired early, without a timer per frame)."""

    def __init__(self, interval_s: float, now: float | None = None) -> None:
        self.interval_s = interval_s
        self.pong_wait_s = interval_s / 2
        self.tick_s = min(1.0, interval_s / 4)
        self._beats: set[Beat] = set()
        # tick number -> the sockets to look at in that tick; a closed one leaves its bucket at once, so the sweep
        # never keeps a closed socket's state alive (it goes by reference counting, frozen or not: core/heap.py)
        self._due: dict[int, set[Beat]] = {}
        self._swept = self._tick(time.monotonic() if now is None else now) - 1  # the last tick looked at
        # Holds in the order they were taken, all for the same span, so the ones to end are always at the left.
        self._holds: collections.deque[Hold] = collections.deque()

    def __len__(self) -> int:
        return len(self._beats)

    def _tick(self, at: float) -> int:
        return int(at // self.tick_s)

    def _check_at(self, beat: Beat, at: float) -> None:
        """Look at ``beat`` in the first tick that starts at or after ``at``."""
        tick = -int(-at // self.tick_s)  # rounded up
        beat.due = tick
        bucket = self._due.get(tick)
        if bucket is None:
            self._due[tick] = {beat}
        else:
            bucket.add(beat)

    def add(self, beat: Beat) -> None:
        self._beats.add(beat)
        self._check_at(beat, beat.seen + self.interval_s)

    def discard(self, beat: Beat) -> None:
        if beat in self._beats:
            self._beats.remove(beat)
            bucket = self._due.get(beat.due)
            if bucket is not None:
                bucket.discard(beat)
                if not bucket:
                    del self._due[beat.due]

    def hold(self, release: Callable[[], None], deadline: float) -> Hold:
        """Track a hold that ``sweep`` ends at ``deadline`` (give every hold the same span: ends go in order)."""
        hold = Hold(release, deadline)
        self._holds.append(hold)
        return hold

    def sweep(self, now: float) -> tuple[int, int]:
        """Ping the silent, drop the unanswered, end the holds that ran out; (pings sent, sockets dropped)."""
        holds = self._holds
        while holds and holds[0].deadline <= now:
            holds.popleft().end()
        due: list[Beat] = []
        until = self._tick(now)
        for tick in range(self._swept + 1, until + 1):
            due += self._due.pop(tick, ())
        self._swept = max(self._swept, until)
        pings = 0
        # Sockets opened together fall silent together: their pings (and the pongs back) are spread over a few
        # ticks, at most twice the steady rate each, instead of one burst on the loop.
        most = max(50, 2 * len(self._beats) * self.tick_s // self.interval_s)
        silent_since = now - self.interval_s
        unanswered_since = now - self.pong_wait_s
        gone: list[Beat] = []
        beats = self._beats
        for beat in due:
            if beat not in beats:
                continue  # closed since
            if beat.pinged:
                if beat.pinged <= unanswered_since:
                    gone.append(beat)
                else:
                    self._check_at(beat, beat.pinged + self.pong_wait_s)
            elif beat.seen > silent_since:  # heard from since: the next check is a whole interval after that
                self._check_at(beat, beat.seen + self.interval_s)
            elif pings >= most:
                self._check_at(beat, now + self.tick_s)
            else:
                transport = beat.transport
                if transport is not None and not transport.is_closing():
                    transport.write(PING_FRAME)
                    beat.pinged = now
                    pings += 1
                    self._check_at(beat, now + self.pong_wait_s)
                else:  # closing: its handler lets go of it shortly
                    self._check_at(beat, now + self.interval_s)
        return pings, sum(self._drop(beat) for beat in gone)

    def _drop(self, beat: Beat) -> int:
        """A peer that did not answer a ping in time is gone (a lost network, a sleeping laptop): its connection is
        cut, so its handler sees the socket closed and lets go of it. Nothing is lost: what was not delivered is
        in the visitor's frame log, replayed on their next hello."""
        self.discard(beat)
        transport = beat.transport
        if transport is None or transport.is_closing():
            return 0
        log.info("web chat socket dropped: no pong within %.0f s of a ping", self.pong_wait_s)
        transport.abort()
        return 1

    async def run(self) -> None:
        """Sweep every ``tick_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.sweep(time.monotonic())
            except Exception:  # one bad socket must not end every other socket's heartbeat
                log.exception("web chat sweep failed")
