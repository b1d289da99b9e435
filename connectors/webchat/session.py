"""One visitor socket's state machine, with no I/O: connected -> greeted -> closed, plus its frame allowance.

The connector owns the socket and the store; this decides what a frame may do in the state the socket is in,
and raises FrameError for what it may not (a second hello, a message before hello), as starlette's
``websockets.py`` keeps its state apart from the transport.
"""

from __future__ import annotations

import enum

from connectors.webchat.protocol import FrameError
from core.model import Identity


class SessionState(enum.StrEnum):
    CONNECTED = "connected"  # the socket is open; the visitor has not said hello
    GREETED = "greeted"  # hello accepted: the socket belongs to one visitor and receives their frames
    CLOSED = "closed"


class VisitorSession:
    """``now`` values are a monotonic clock's seconds, passed in so a test can drive time."""

    __slots__ = ("_allowance", "_per_minute", "_stamp", "address", "state")

    def __init__(self, per_minute: int, now: float) -> None:
        self.state = SessionState.CONNECTED
        self.address: Identity | None = None
        self._per_minute = per_minute
        self._allowance = float(per_minute)
        self._stamp = now

    def take(self, now: float) -> bool:
        """One frame from the allowance (``per_minute``, refilled evenly); False when it is used up."""
        self._allowance = min(self._per_minute, self._allowance + (now - self._stamp) * self._per_minute / 60)
        self._stamp = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

    def check_hello(self) -> None:
        """A hello is allowed only on a socket that has not had one."""
        if self.state is not SessionState.CONNECTED:
            raise FrameError("bad_frame", "hello was already received on this socket")

    def greeted(self, address: Identity) -> None:
        self.check_hello()
        self.state = SessionState.GREETED
        self.address = address

    def visitor(self) -> Identity:
        """Whose socket this is, for any frame but hello: the visitor must have said hello first."""
        if self.state is not SessionState.GREETED or self.address is None:
            raise FrameError("hello_required", "send a hello frame first")
        return self.address

    def closed(self) -> Identity | None:
        """The socket went away; the visitor it belonged to, if any, so the connector can let go of them."""
        self.state = SessionState.CLOSED
        return self.address
