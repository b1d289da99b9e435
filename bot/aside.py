"""Building a FAQ index in a child process, so a KB reload never takes the gateway's event loop from it."""

from __future__ import annotations

import gc
import logging
import math
import multiprocessing
import pathlib
import pickle
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from bot.faq import FaqIndex, KnowledgeBase, read_kb

# A build in a thread holds the GIL for most of its 1-4 s, and every request waits for it. A child process builds
# instead. Children fork from a server process that has already imported the bot and loaded jieba's dictionary
# (bot/warm.py), so a reload does not pay for either again; the server lives as long as the gateway.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["bot.warm"])
# The index comes back in pickled slices of about this many bytes: unpickling one holds the GIL for a few
# milliseconds, and the loop runs between them (10,000 phrasings in one piece: 13 MiB, 0.1-0.2 s of GIL).
_SLICE_BYTES = 256 * 1024

Slice = tuple[str, bytes]  # (attribute, pickled value or part of it)

log = logging.getLogger(__name__)
T = TypeVar("T")
# Where child processes cannot be had (no usable /dev/shm for the pool's semaphores, an interpreter the
# process's user may not execute again, a sandbox without fork), builds fall back to this process: slower for
# the loop while they run, but a KB edit must never fail for it. Said once, then remembered.
_children_work = True


def _in_child(run: Callable[[], T], here: Callable[[], T]) -> T:
    """``run()`` (which uses a child process), or ``here()`` when child processes are not to be had."""
    global _children_work
    if _children_work:
        try:
            return run()
        except (OSError, BrokenProcessPool) as exc:
            _children_work = False
            log.warning("FAQ index builds run in the gateway process from now on: no child process (%s)", exc)
    return here()


def build_aside(kb: KnowledgeBase, values: Mapping[str, str]) -> FaqIndex:
    """Build the index for ``kb`` in a child process and return it. Blocking: call it from a thread."""

    def run() -> FaqIndex:
        with ProcessPoolExecutor(max_workers=1, mp_context=_CONTEXT) as pool:
            slices = pool.submit(_build_sliced, kb, dict(values)).result()
        return assemble(slices)

    def here() -> FaqIndex:
        from bot.live import build_index

        return build_index(kb, values)

    return _in_child(run, here)


def load_aside(path: pathlib.Path, values: Mapping[str, str]) -> tuple[KnowledgeBase, FaqIndex]:
    """Read the KB file and build its index in a child process (KbError if the file is bad). Blocking.

    The file is read there too: parsing a large YAML file makes a million short-lived objects, and the full
    collections they set off here scan the live index as well (100-750 ms with the GIL held, measured at 10,000
    phrasings), which was most of what a reload still cost the loop once the build had moved out.
    """

    def run() -> tuple[KnowledgeBase, FaqIndex]:
        with ProcessPoolExecutor(max_workers=1, mp_context=_CONTEXT) as pool:
            kb, slices = pool.submit(_load_sliced, path, dict(values)).result()
        return kb, assemble(slices)

    def here() -> tuple[KnowledgeBase, FaqIndex]:
        from bot.live import build_index

        kb = read_kb(path)
        return kb, build_index(kb, values)

    return _in_child(run, here)


def _build_sliced(kb: KnowledgeBase, values: dict[str, str]) -> list[Slice]:
    from bot.live import build_index

    return sliced(build_index(kb, values))


def _load_sliced(path: pathlib.Path, values: dict[str, str]) -> tuple[KnowledgeBase, list[Slice]]:
    kb = read_kb(path)
    return kb, _build_sliced(kb, values)


def sliced(index: FaqIndex) -> list[Slice]:
    """The index's state as pickled slices: big dicts and lists a part at a time, everything else whole."""
    out: list[Slice] = []
    for name, value in index.__getstate__().items():
        whole = pickle.dumps(value, 5)
        parts = math.ceil(len(whole) / _SLICE_BYTES)
        if parts > 1 and isinstance(value, dict):
            items = list(value.items())
            step = math.ceil(len(items) / parts)
            out += [(name, pickle.dumps(dict(items[k : k + step]), 5)) for k in range(0, len(items), step)]
        elif parts > 1 and isinstance(value, list | tuple):
            step = math.ceil(len(value) / parts)
            out += [(name, pickle.dumps(value[k : k + step], 5)) for k in range(0, len(value), step)]
        else:
            out.append((name, whole))
    return out


def assemble(slices: list[Slice]) -> FaqIndex:
    """The index from its slices, one short unpickling at a time (so other threads get the GIL in between)."""
    state: dict[str, Any] = {}
    # Unpickling makes hundreds of thousands of objects, which set off full collections (0.3-0.5 s with the GIL
    # held, measured) that find nothing to free: the collector waits until the index is whole.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for name, data in slices:
            part = pickle.loads(data)  # our own child process's output
            if name not in state:
                state[name] = part
            elif isinstance(part, dict):
                state[name].update(part)
            else:
                state[name] += part
    finally:
        if collecting:
            gc.enable()
    index = FaqIndex.__new__(FaqIndex)
    index.__setstate__(state)
    return index
