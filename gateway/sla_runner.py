"""The one periodic runner for SLA timers: claims each due ticket timer, then fires its warnings and breaches."""

from __future__ import annotations

import logging

from core.clock import Clock
from core.store.roles import Timers
from gateway.tickets import TicketService

log = logging.getLogger(__name__)

# How long a claimed timer stays with the instance that took it before another may (it died mid-way).
CLAIM_HOLD_S = 60.0
_PREFIX = "ticket:"


class SlaRunner:
    def __init__(self, timers: Timers, tickets: TicketService, clock: Clock, *, batch: int = 100) -> None:
        self._timers = timers
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
                    continue  # another kind of timer: its own runner claims it
                try:
                    fired = await self._tickets.fire_sla(timer.key.removeprefix(_PREFIX))
                except Exception:  # one broken ticket must not hold up the others; its claim runs out
                    log.exception("SLA timer %s failed; it comes due again in %.0f s", timer.key, CLAIM_HOLD_S)
                    continue
                if fired:
                    log.info("SLA %s on %s", ", ".join(fired), timer.key, extra={"ticket_id": timer.key[7:]})
            if len(due) < self._batch:
                return claimed
