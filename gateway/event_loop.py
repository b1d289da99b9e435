"""The event loop ``huiliu serve`` runs on: uvloop (libuv's loop, written in C) where it is installed, else
asyncio's own.

Every request, socket read and store hand-over goes through the loop's scheduling (``call_soon``, handles,
the selector), several dozen times a push. uvloop does that work in C: in 18 alternating pairs of the WeChat push
benchmark (issue 23) the server's CPU per push was lower in 13, by 4% at the median (0.78 -> 0.73 ms on average),
and web chat's CPU per message lower in 4 of 4 runs (1.32 -> 1.22 ms). One cost: uvloop writes to a socket while
holding the GIL, where asyncio's loop lets the store's thread run during the ``send``: fewer sends are worth more
(web chat writes an ack and the reply that follows it in one, connectors/webchat/wire.py).
``server.event_loop: asyncio`` opts out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from core.config import ConfigError

T = TypeVar("T")
LoopChoice = Literal["auto", "uvloop", "asyncio"]


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # not installed (or not built for this platform: uvloop has no Windows build)
        return None
    return uvloop.new_event_loop


def loop_factory(choice: LoopChoice) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """(the loop's name, a function making one) for ``server.event_loop``; ``auto`` takes uvloop when it can.
    Asking for uvloop where it is not installed is a configuration error, not a quiet fall-back."""
    if choice != "asyncio":
        factory = _uvloop_factory()
        if factory is not None:
            return "uvloop", factory
        if choice == "uvloop":
            raise ConfigError("server.event_loop: uvloop is not installed (pip install uvloop), or set it to asyncio")
    return "asyncio", asyncio.new_event_loop


def run_on(factory: Callable[[], asyncio.AbstractEventLoop], main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a loop from ``factory``."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
