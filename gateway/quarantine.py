"""``huiliu quarantine list|replay``: look at input we could not parse, and feed it through intake again."""

from __future__ import annotations

from dataclasses import dataclass

from bot.setup import BotSetup
from connectors.capabilities import Replays
from core.config import Config
from core.model import QuarantinedItem
from core.progress import Progress
from gateway.wiring import offline_gateway, opened_store


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayResult:
    item_id: str
    ok: bool
    detail: str


async def list_quarantined(
    config: Config, *, include_replayed: bool = False, limit: int = 100
) -> list[QuarantinedItem]:
    async with opened_store(config) as store:
        return await store.quarantined(include_replayed=include_replayed, limit=limit)


async def replay(
    config: Config, bot: BotSetup, item_ids: list[str], *, progress: Progress | None = None
) -> list[ReplayResult]:
    """Parse each item again (after a parser fix) and hand it to intake, as ``serve`` would; no pollers run.

    It works offline against the store: a ticket's acknowledgement that cannot be mailed is recorded as failed.
    An item that still cannot be read stays quarantined (with its first reason).
    """
    results: list[ReplayResult] = []
    async with offline_gateway(config, bot) as gateway:
        store = gateway.store
        for item_id in item_ids:
            if progress is not None:
                progress(len(results), len(item_ids))
            item = await store.get_quarantined(item_id)
            if item is None:
                results.append(ReplayResult(item_id=item_id, ok=False, detail="no such quarantined item"))
                continue
            connector = gateway.connectors.get(item.inbox)
            if not isinstance(connector, Replays):
                results.append(ReplayResult(item_id=item_id, ok=False, detail=f"inbox {item.inbox!r} cannot replay"))
                continue
            detail = await connector.replay(item, gateway.intake.receive)
            if detail is None:
                results.append(ReplayResult(item_id=item_id, ok=False, detail="still cannot be read"))
                continue
            await store.mark_replayed(item_id)
            results.append(ReplayResult(item_id=item_id, ok=True, detail=detail))
        if progress is not None:
            progress(len(results), len(item_ids))
    return results
