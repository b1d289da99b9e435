"""A hot-reloadable FAQ index: the KB file is re-read and re-indexed off the loop, then swapped in one step."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import pathlib
import re
from collections.abc import Callable, Mapping

from bot.aside import build_aside, load_aside
from bot.faq import FaqEntry, FaqIndex, KbError, KnowledgeBase, read_kb, write_kb
from core import heap
from core.model import FaqHit

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\{(\w+)\}")

# What tells that the KB file changed on disk: an edit in place changes the mtime or size, an editor's or a
# deploy's atomic replace changes the inode. None: the file is not there.
Stamp = tuple[int, int, int] | None


def file_stamp(path: pathlib.Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def render_answer(answer: str, values: Mapping[str, str]) -> str:
    """Fill ``{name}`` placeholders (e.g. ``{business_hours}``); unknown names stay as written, never an error."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), answer)


def build_index(kb: KnowledgeBase, values: Mapping[str, str]) -> FaqIndex:
    entries = [dataclasses.replace(e, answer=render_answer(e.answer, values)) for e in kb.entries]
    return FaqIndex(entries, synonyms=kb.synonyms)


Builder = Callable[[KnowledgeBase, Mapping[str, str]], FaqIndex]


class LiveIndex:
    """Searches whichever index is current. A search that started on the old index finishes on it, so a reload
    never drops or fails a request; the swap is one attribute assignment."""

    def __init__(
        self,
        path: pathlib.Path,
        kb: KnowledgeBase,
        values: Mapping[str, str] | None = None,
        *,
        stamp: Stamp = None,
        builder: Builder | None = None,
    ) -> None:
        """``stamp``: the file's stamp from before ``kb`` was read, so an edit made meanwhile is still seen.
        ``builder``: how a reload builds the new index (from a thread); by default in a child process
        (bot/aside.py), because a build in a thread holds the GIL that every request needs for seconds."""
        self._builder = builder or build_aside
        self.path = path
        self._values = dict(values or {})
        self._kb = kb
        self._index = build_index(kb, self._values)
        self._lock = asyncio.Lock()
        self._stamp = stamp
        self.reloads = 0

    @classmethod
    def load(
        cls, path: pathlib.Path, values: Mapping[str, str] | None = None, *, builder: Builder | None = None
    ) -> LiveIndex:
        stamp = file_stamp(path)
        return cls(path, read_kb(path), values, stamp=stamp, builder=builder)

    @property
    def kb(self) -> KnowledgeBase:
        """The KB as written in the file (placeholders not filled in)."""
        return self._kb

    @property
    def current(self) -> FaqIndex:
        return self._index

    def search(self, text: str, limit: int = 3) -> tuple[FaqHit, ...]:
        return self._index.search(text, limit)

    def entry(self, entry_id: str) -> FaqEntry | None:
        return self._index.entry(entry_id)

    async def reload(self) -> KnowledgeBase:
        """Re-read the KB file; on a bad file the current index stays and KbError says why."""
        async with self._lock:
            return await self._reload()

    async def reload_if_changed(self) -> bool:
        """Reload when the file changed on disk since it was last read (an operator's edit, a deploy).

        A file that fails to load is reported once, and the current index keeps answering until the file
        changes again; it is not re-read (and re-reported) on every check. The check holds the lock, so an
        edit through ``change()`` (which writes the file) is never taken for an outside one.
        """
        async with self._lock:
            if await asyncio.to_thread(file_stamp, self.path) == self._stamp:
                return False
            try:
                kb = await self._reload()
            except KbError as exc:
                log.error("the changed KB file was not loaded; still answering from the previous one: %s", exc)
                return False
        log.info("KB file %s changed: reloaded, %d entries", self.path, len(kb.entries))
        return True

    async def _reload(self) -> KnowledgeBase:
        self._stamp = await asyncio.to_thread(file_stamp, self.path)
        kb, index = await asyncio.to_thread(self._load)
        self._kb, self._index = kb, index
        self.reloads += 1
        heap.resettle()
        return kb

    def _load(self) -> tuple[KnowledgeBase, FaqIndex]:
        """The KB file and its index; by default both read and built in a child process (bot/aside.py)."""
        if self._builder is build_aside:
            return load_aside(self.path, self._values)
        kb = read_kb(self.path)
        return kb, self._builder(kb, self._values)

    async def change(self, edit: Callable[[KnowledgeBase], KnowledgeBase]) -> KnowledgeBase:
        """Apply an edit to the KB, index it, write the file, then swap: the file and the index never disagree."""
        async with self._lock:
            kb = edit(self._kb)
            index = await asyncio.to_thread(self._builder, kb, self._values)
            await asyncio.to_thread(write_kb, self.path, kb)
            self._stamp = await asyncio.to_thread(file_stamp, self.path)  # our own write is no change to reload
            self._kb, self._index = kb, index
            self.reloads += 1
        heap.resettle()
        return kb


__all__ = ["KbError", "LiveIndex", "build_index", "render_answer"]
