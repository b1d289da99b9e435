"""How many tickets one customer may open per hour on an inbox that caps it (web chat: anyone can be a visitor)."""

from __future__ import annotations

from collections.abc import Mapping

from core.config import Config, WebchatInbox
from core.model import Identity
from core.store.roles import Coordination

WINDOW_S = 3600.0


class TicketQuota:
    """Counted in the store, so the cap holds across instances; an inbox without a cap is never counted."""

    def __init__(self, store: Coordination, per_hour: Mapping[str, int]) -> None:
        self._store = store
        self._per_hour = dict(per_hour)

    @classmethod
    def from_config(cls, store: Coordination, config: Config) -> TicketQuota:
        caps = {i.name: i.tickets_per_visitor_per_hour for i in config.inboxes if isinstance(i, WebchatInbox)}
        return cls(store, caps)

    async def allows(self, inbox: str, customer: Identity) -> bool:
        """Count one more ticket for ``customer``; False once this hour's are used up."""
        cap = self._per_hour.get(inbox)
        if cap is None:
            return True
        hits = await self._store.hit(f"tickets:{inbox}:{customer}", WINDOW_S)
        return hits.count <= cap
