"""``huiliu calls import``: a CDR file through the one intake path, against the configured store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.setup import BotSetup
from connectors.capabilities import ImportsCalls
from connectors.phone.cdr import CdrFormat
from connectors.phone.connector import ImportReport
from core.config import Config, ConfigError, PhoneInbox
from core.progress import Progress
from gateway.wiring import offline_gateway


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
