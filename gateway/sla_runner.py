"""The one periodic runner for the store's timers: claims each due one, then fires it: a ticket's SLA warnings and
breaches, or another service's timer by its key's prefix (auto-close)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from core.clock import Clock
from core.store.roles import Timers
from gateway.tickets import TicketService

log = logging.getLogger(__name__)

# How long a claimed timer stays with the instance that took it before another may (it died mid-way).
CLAIM_HOLD_S = 60.0
_PREFIX = "ticket:"

Fire = Callable[[str], Awaitable[object]]


class SlaRunner:
    def __init__(
        self,
        timers: Timers,
        tickets: TicketService,
        clock: Clock,
        *,
        others: Mapping[str, Fire] | None = None,
        batch: int = 100,
    ) -> None:
        """``others``: key prefix -> what fires such a timer, given the rest of its key; the handler moves or
        removes its timer once it acted (one it leaves comes due again after ``CLAIM_HOLD_S``)."""
        self._timers = timers
        self._others = dict(others or {})
        self._tickets = tickets
        self._clock = clock
        self._batch = batch

    async def run_once(self) -> int:
        """Fire what is due now; returns how many timers were claimed. At start-up this is what catches up on
        breaches that fell due while the gateway was down: each fires once, late rather than never."""
        claimed = 0
        while True:
            due = await self._timers.claim_due_timers(self._clock(), CLAIM_HOLD_S, self._batch)
            claimed += len(due)
            for timer in due:
                if not timer.key.startswith(_PREFIX):
                    await self._fire_other(timer.key)
                    continue
                try:
                    fired = await self._tickets.fire_sla(timer.key.removeprefix(_PREFIX))
                except Exception:  # one broken ticket must not hold up the others; its claim runs out
                    log.exception("SLA timer %s failed; it comes due again in %.0f s", timer.key, CLAIM_HOLD_S)
                    continue
                if fired:
                    log.info("SLA %s on %s", ", ".join(fired), timer.key, extra={"ticket_id": timer.key[7:]})
            if len(due) < self._batch:
                return claimed

    async def _fire_other(self, key: str) -> None:
        prefix = next((p for p in self._others if key.startswith(p)), None)
        if prefix is None:
            return  # unknown here: its claim runs out and it comes due again
        try:
            await self._others[prefix](key.removeprefix(prefix))
        except Exception:  # one broken item must not hold up the others
            log.exception("timer %s failed; it comes due again in %.0f s", key, CLAIM_HOLD_S)
