"""``huiliu calls import``: a CDR file through the one intake path, against the configured store."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path

from bot.setup import BotSetup
from connectors.capabilities import ImportsCalls
from connectors.phone.cdr import CdrFormat
from connectors.phone.connector import ImportReport
from core import heap
from core.config import Config, ConfigError, PhoneInbox
from core.progress import Progress
from gateway.wiring import offline_gateway

_IMPORT_YOUNG = 1_000_000  # net new tracked objects between young collections while importing (Python's default: 700)


def phone_inbox(config: Config, name: str | None) -> PhoneInbox:
    """The inbox to import into: the named one, or the only phone inbox there is."""
    phones = [i for i in config.inboxes if isinstance(i, PhoneInbox)]
    if name is not None:
        found = next((i for i in phones if i.name == name), None)
        if found is None:
            raise ConfigError(f"there is no phone inbox {name!r} (phone inboxes: {[i.name for i in phones]})")
        return found
    if len(phones) != 1:
        raise ConfigError(
            "the config has no phone inbox; add one, e.g. {name: phone, channel: phone, cti_enabled: false}"
            if not phones
            else f"several phone inboxes {[i.name for i in phones]}: choose one with --inbox"
        )
    return phones[0]


async def import_calls(
    config: Config,
    bot: BotSetup,
    path: Path,
    *,
    fmt: CdrFormat | None,
    inbox: str | None,
    progress: Progress | None = None,
) -> ImportReport:
    """Open the store, build intake as ``serve`` does (no listeners, no pollers), import, finish every ticket."""
    target = phone_inbox(config, inbox)
    data = await asyncio.to_thread(path.read_bytes)
    with _collected_less():
        return await _import(config, bot, target, data, fmt, progress)


async def _import(
    config: Config, bot: BotSetup, target: PhoneInbox, data: bytes, fmt: CdrFormat | None, progress: Progress | None
) -> ImportReport:
    async with offline_gateway(config, bot) as gateway:
        phone = gateway.connectors[target.name]
        if not isinstance(phone, ImportsCalls):
            raise ConfigError(f"inbox {target.name!r} cannot import call records")
        return await phone.import_cdr(
            data,
            fmt or CdrFormat(target.cdr.format),
            gateway.intake.receive,
            progress=progress,
            log_lines=gateway.intake.receive_log_lines,
            ticket_lines=gateway.intake.receive_ticket_lines,
        )


@contextlib.contextmanager
def _collected_less() -> Iterator[None]:
    """The collector kept off what was alive before the import (the bot: jieba's dictionary and the FAQ index),
    and its young generation collected after ``_IMPORT_YOUNG`` net new objects instead of 700, until the import
    ends.

    An import keeps every row's objects alive at once (its records and messages, the batch being written), so
    they kept crossing the thresholds: young collections walked them and pushed them on, and the full
    collections that followed walked the bot's millions of objects each time, for nothing. 100,000 rows: 4,384
    young, 399 middle and 17 full collections, 8.8 s of the import's 39 s of CPU; 11 young and 1 middle, 0.6 s,
    with 100,000. Each young collection still walked its 100,000 objects, all alive (30,000 rows: 4 of them, 25-35
    ms each, ~2% of the import's CPU); with 1,000,000, one. Cycles left meanwhile (a few per batch at most) wait
    for at most ``_IMPORT_YOUNG`` net objects, a few times what a 100,000-row import keeps alive anyway.
    """
    before = heap.widen_young_generation(_IMPORT_YOUNG)
    frozen = gc.get_freeze_count() > 0  # a serving process settled its heap already: leave it as it is
    if not frozen:
        gc.freeze()
    try:
        yield
    finally:
        if not frozen:
            gc.unfreeze()
        gc.set_threshold(*before)
