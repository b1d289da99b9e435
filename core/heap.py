"""Keep the long-lived heap (jieba's dictionary, the FAQ index, open sockets) out of the collector's full passes."""

from __future__ import annotations

import gc

# How often what survived since the last settle is frozen (Settler.tick). Each tick walks only what is new since
# the one before, so short ticks make short pauses: at 30 s, one tick walked the 5,000 idle sockets' heartbeat
# objects of 30 s (~77,000: 55-77 ms of CPU on the loop, once per 30 s) or a burst of new sockets (~420,000:
# 284 ms); at 1 s it walks a second's worth (issue 23, bench/webchat_roundtrip.py --latency-log).
SETTLE_EVERY_S = 1.0
FULL_EVERY = 3600  # every this many ticks (an hour) a full settle reclaims cycles among frozen objects that died


YOUNG_THRESHOLD = 20_000  # net new tracked objects between young (gen-0) collections in a serving process


def widen_young_generation(threshold: int = YOUNG_THRESHOLD) -> tuple[int, int, int]:
    """Collect the young generation after ``threshold`` net new objects (``YOUNG_THRESHOLD`` while serving; a CDR
    import asks for more) instead of Python's 700; returns the thresholds before, to put back.

    The count is allocations less deallocations, so it follows the objects that requests in flight hold: twenty
    concurrent WeChat pushes swing it past 700 all the time, and each young collection walked those live objects
    and pushed them into gen 1, whose collections walked them again. Serving 8,000 pushes made 435 young and 39
    gen-1 collections after start-up at 700 (the collector's callbacks: 3-4% of the server's CPU, more in
    cache misses), none at 20,000: what dies by reference counting never counts. Reference cycles left behind
    wait for at most 20,000 net objects (a few MiB) instead of 700.
    """
    before: tuple[int, int, int] = gc.get_threshold()
    gc.set_threshold(max(threshold, before[0]), before[1], before[2])
    return before


def settle() -> None:
    """Collect the garbage there is, then freeze what is alive, so later full collections skip it.

    A full (gen-2) collection walks every tracked object, and it runs on the event loop: with jieba's dictionary
    and the FAQ index loaded that stalled every web chat reply for 100-222 ms on a large heap (issue 23), and
    takes ~50 ms of CPU on the sample KB (``bench/gc_pause.py``). What is alive once the gateway has started lives
    as long as the process, so it need not be walked again. Frozen objects that die later are still freed by
    reference counting; only reference cycles among them wait for the next ``settle``.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def settle_survivors() -> None:
    """Freeze what has survived since the last freeze; the collection before it walks only those objects.

    Each open web chat socket keeps ~80 tracked objects (aiohttp's request, protocol, parser, reader, writer, two
    tasks and their coroutines; our session), ~430,000 with 5,000 sockets open. A full collection walked all of
    them again and again while the sockets sat idle: 11 passes of up to 270 ms of CPU in 4,000 replies, and the
    reply p99 went from ~14 ms to 400-590 ms (``bench/webchat_roundtrip.py``, issue 23). Frozen, they cost
    nothing until they die, when reference counting frees them (cycles among them wait for ``settle``).
    """
    gc.collect()
    gc.freeze()


def resettle() -> None:
    """After swapping in a long-lived structure (a reloaded FAQ index): settle again if this process settled.

    Otherwise the new index sits in the collected generations (walked by every full collection again) and the
    old one, frozen, would keep any reference cycles it has for good. Costs one full collection per reload.
    """
    if gc.get_freeze_count():
        settle()


class Settler:
    """The periodic part of settling, for a process that settled at start-up: ``tick`` every ``SETTLE_EVERY_S``.

    Most ticks freeze only the survivors since the last one (a pass over them alone); every ``full_every``-th
    is a full ``settle``, one pause over the whole heap, so cycles of frozen objects that died since (closed
    sockets, swapped caches) are reclaimed and memory cannot creep up for ever.
    """

    def __init__(self, full_every: int = FULL_EVERY) -> None:
        self._full_every = full_every
        self._ticks = 0
        self._settled: bool | None = None  # whether the process had settled, asked on the first tick only

    def tick(self) -> None:
        if self._settled is None:
            # Asked once: ``gc.get_freeze_count`` walks the whole frozen list (~560,000 objects with 5,000
            # sockets open: 50-90 ms of CPU, most of it cache misses), which at a tick a second was 7-10% of a
            # core and a pause of its own every second.
            self._settled = bool(gc.get_freeze_count())
        if not self._settled:
            return  # this process never settled: a test app, or a CLI command; leave the collector as it is
        self._ticks += 1
        if self._ticks % self._full_every == 0:
            settle()
        else:
            settle_survivors()
