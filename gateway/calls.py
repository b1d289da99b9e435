"""``huiliu calls import``: a CDR file through the one intake path, against the configured store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from connectors import build_connectors
from connectors.base import ConnectorDeps
from connectors.phone.cdr import CdrFormat
from connectors.phone.connector import ImportReport, PhoneConnector
from core.config import Config, ConfigError, PhoneInbox
from core.progress import Progress
from core.store import open_store
from core.tasks import TaskTracker
from gateway.intake import BotSetup, Intake
from gateway.outbound import Outbound


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
    store = open_store(config)
    await store.open()
    tasks = TaskTracker()
    try:
        connectors = build_connectors(config, ConnectorDeps(store=store, tasks=tasks, data_dir=config.data_path))
        intake = Intake(
            store, bot, Outbound(store, connectors, tasks, resend_after_s=config.server.resend_after_s), tasks
        )
        phone = connectors[target.name]
        assert isinstance(phone, PhoneConnector)
        report = await phone.import_cdr(data, fmt or CdrFormat(target.cdr.format), intake.receive, progress=progress)
        await tasks.drain(config.server.shutdown_grace_s)
    finally:
        await store.close()
    return report
