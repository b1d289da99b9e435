"""Messages between gateway instances: Redis pub/sub, or the supervisor's hub between the worker processes of
one SQLite store (``gateway/workers/hub.py``); absent with a single SQLite process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

BusHandler = Callable[[str], Awaitable[None]]


@runtime_checkable
class Bus(Protocol):
    async def publish(self, name: str, payload: str) -> int:
        """Send to every instance subscribed to ``name``; returns how many are."""
        ...

    async def subscribe(self, name: str, handler: BusHandler) -> None:
        """``handler`` gets every payload published to ``name``, and ``{"resync": true}`` after the bus lost
        its connection: anything published meanwhile is gone, so it must catch up from the store."""
        ...

    async def unsubscribe(self, name: str) -> None: ...


def bus_of(store: object) -> Bus | None:
    """The store's bus once it is open, if its backend has one (Redis does)."""
    bus = getattr(store, "bus", None)
    return bus if isinstance(bus, Bus) else None
