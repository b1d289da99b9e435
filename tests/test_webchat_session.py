"""The web chat socket's state machine on its own: no socket, no store, a clock the test drives."""

from __future__ import annotations

import pytest

from connectors.webchat.protocol import FrameError
from connectors.webchat.session import SessionState, VisitorSession
from core.model import Identity, IdentityKind

VISITOR = Identity(IdentityKind.WEBCHAT_VISITOR, "v1")


def test_frames_other_than_hello_need_a_hello_first() -> None:
    session = VisitorSession(per_minute=60, now=0.0)
    with pytest.raises(FrameError) as caught:
        session.visitor()
    assert caught.value.code == "hello_required"
    session.greeted(VISITOR)
    assert session.visitor() == VISITOR and session.state is SessionState.GREETED


def test_a_second_hello_on_one_socket_is_refused() -> None:
    session = VisitorSession(per_minute=60, now=0.0)
    session.greeted(VISITOR)
    with pytest.raises(FrameError) as caught:
        session.check_hello()
    assert caught.value.code == "bad_frame"


def test_closing_names_the_visitor_to_let_go_of() -> None:
    session = VisitorSession(per_minute=60, now=0.0)
    assert session.closed() is None
    greeted = VisitorSession(per_minute=60, now=0.0)
    greeted.greeted(VISITOR)
    assert greeted.closed() == VISITOR and greeted.state is SessionState.CLOSED
    with pytest.raises(FrameError):
        greeted.visitor()


def test_the_allowance_runs_out_and_refills_evenly() -> None:
    session = VisitorSession(per_minute=3, now=0.0)
    assert [session.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not session.take(10.0)  # half a frame back after ten seconds
    assert session.take(20.0)  # a whole one after twenty
