"""Keep the long-lived heap (jieba's dictionary, the FAQ index) out of the garbage collector's full passes."""

from __future__ import annotations

import gc


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


def resettle() -> None:
    """After swapping in a long-lived structure (a reloaded FAQ index): settle again if this process settled.

    Otherwise the new index sits in the collected generations (walked by every full collection again) and the
    old one, frozen, would keep any reference cycles it has for good. Costs one full collection per reload.
    """
    if gc.get_freeze_count():
        settle()
