"""A hot-reloadable FAQ index: the KB file is re-read and re-indexed off the loop, then swapped in one step."""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import re
from collections.abc import Callable, Mapping

from bot.faq import FaqEntry, FaqIndex, KbError, KnowledgeBase, read_kb, write_kb
from core.model import FaqHit

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def render_answer(answer: str, values: Mapping[str, str]) -> str:
    """Fill ``{name}`` placeholders (e.g. ``{business_hours}``); unknown names stay as written, never an error."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), answer)


def build_index(kb: KnowledgeBase, values: Mapping[str, str]) -> FaqIndex:
    entries = [dataclasses.replace(e, answer=render_answer(e.answer, values)) for e in kb.entries]
    return FaqIndex(entries, synonyms=kb.synonyms)


class LiveIndex:
    """Searches whichever index is current. A search that started on the old index finishes on it, so a reload
    never drops or fails a request; the swap is one attribute assignment."""

    def __init__(self, path: pathlib.Path, kb: KnowledgeBase, values: Mapping[str, str] | None = None) -> None:
        self.path = path
        self._values = dict(values or {})
        self._kb = kb
        self._index = build_index(kb, self._values)
        self._lock = asyncio.Lock()
        self.reloads = 0

    @classmethod
    def load(cls, path: pathlib.Path, values: Mapping[str, str] | None = None) -> LiveIndex:
        return cls(path, read_kb(path), values)

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
            kb = await asyncio.to_thread(read_kb, self.path)
            await self._swap(kb)
            return kb

    async def change(self, edit: Callable[[KnowledgeBase], KnowledgeBase]) -> KnowledgeBase:
        """Apply an edit to the KB, index it, write the file, then swap: the file and the index never disagree."""
        async with self._lock:
            kb = edit(self._kb)
            index = await asyncio.to_thread(build_index, kb, self._values)
            await asyncio.to_thread(write_kb, self.path, kb)
            self._kb, self._index = kb, index
            self.reloads += 1
            return kb

    async def _swap(self, kb: KnowledgeBase) -> None:
        index = await asyncio.to_thread(build_index, kb, self._values)
        self._kb, self._index = kb, index
        self.reloads += 1


__all__ = ["KbError", "LiveIndex", "build_index", "render_answer"]
