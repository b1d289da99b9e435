"""Web chat heartbeats from the connector's one sweep (connectors/webchat/sweep.py), over real sockets: a silent
socket is pinged, one that answers stays open and keeps working, one that does not is dropped and let go of."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import aiohttp

from connectors.webchat.connector import WebchatConnector
from connectors.webchat.sweep import Beat, Sweeper
from connectors.webchat.wire import PING_FRAME
from gateway.app import GATEWAY
from gateway.intake import BotSetup
from tests.conftest import Gateway, make_config, started

HEARTBEAT_S = 0.4  # the sweep ticks every 0.1 s; a ping unanswered for 0.2 s drops the socket


def _inbox() -> dict[str, object]:
    return {"name": "web", "channel": "webchat", "allowed_origins": ["*"], "heartbeat_s": HEARTBEAT_S}


async def _socket(gw: Gateway) -> aiohttp.ClientWebSocketResponse:
    """A socket that answers nothing by itself (autoping off): the test sees and answers each ping."""
    return await gw.http.ws_connect(gw.ws_url(), autoping=False)


async def _hello(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.send_json({"type": "hello", "token": None, "last_seq": 0})
    welcome = await ws.receive_json(timeout=5)
    assert welcome["type"] == "welcome"


async def test_a_silent_socket_is_pinged_and_one_that_answers_stays_open(tmp_path: Path, bot_setup: BotSetup) -> None:
    async with started(make_config(tmp_path, inboxes=[_inbox()]), bot_setup) as gw, await _socket(gw) as ws:
        await _hello(ws)
        pings = 0
        deadline = time.monotonic() + 4 * HEARTBEAT_S
        while time.monotonic() < deadline:  # answered by hand, so the test sees each ping
            msg = await ws.receive(timeout=2 * HEARTBEAT_S)
            assert msg.type is aiohttp.WSMsgType.PING, msg
            pings += 1
            await ws.pong(msg.data)
        assert 2 <= pings <= 5  # about one per heartbeat_s of silence
        await ws.send_json({"type": "message", "id": "m1", "text": "怎么开发票"})
        frames = [await ws.receive_json(timeout=5) for _ in range(2)]
        assert [f["type"] for f in frames] == ["ack", "message"]


async def test_a_socket_that_leaves_a_ping_unanswered_is_dropped_and_let_go_of(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    async with started(make_config(tmp_path, inboxes=[_inbox()]), bot_setup) as gw:
        connector = gw.server.app[GATEWAY].connectors["web"]
        assert isinstance(connector, WebchatConnector)
        sweeper: Sweeper = connector._sweeper
        async with await _socket(gw) as ws:
            await _hello(ws)
            assert len(sweeper) == 1
            started_at = time.monotonic()
            msg = await ws.receive(timeout=5)  # the ping, left unanswered
            assert msg.type is aiohttp.WSMsgType.PING
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR), msg
            assert time.monotonic() - started_at < 3 * HEARTBEAT_S
        for _ in range(50):  # the handler's cleanup runs once the server side sees the connection gone
            if len(sweeper) == 0 and not connector._live:
                break
            await asyncio.sleep(0.02)
        assert len(sweeper) == 0 and not connector._live and not connector._locks


async def test_a_visitors_ping_is_answered(tmp_path: Path, bot_setup: BotSetup) -> None:
    async with started(make_config(tmp_path, inboxes=[_inbox()]), bot_setup) as gw, await _socket(gw) as ws:
        await _hello(ws)
        await ws.ping(b"are you there")
        msg = await ws.receive(timeout=5)
        while msg.type is aiohttp.WSMsgType.PING:  # the server's own heartbeat may come first
            msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.PONG and msg.data == b"are you there"


def test_a_hold_ends_once_by_its_handling_or_by_the_sweep_after_its_deadline() -> None:
    sweeper = Sweeper(30.0)
    released: list[str] = []
    early = sweeper.hold(lambda: released.append("early"), deadline=10.0)
    sweeper.hold(lambda: released.append("late"), deadline=11.0)
    early.end()  # its handling finished: the slot is back at once
    early.end()
    assert released == ["early"]
    sweeper.sweep(10.5)  # "early" is due but already ended; "late" is not due yet
    assert released == ["early"]
    sweeper.sweep(11.0)
    assert released == ["early", "late"]


async def test_the_sweep_pings_only_the_silent_spreads_a_burst_and_drops_the_unanswered() -> None:
    loop = asyncio.get_running_loop()
    pairs = [socket.socketpair() for _ in range(60)]
    transports = [(await loop.connect_accepted_socket(asyncio.Protocol, ours))[0] for ours, _ in pairs]
    try:
        sweeper = Sweeper(4.0, now=0.0)  # a tick a second, a pong awaited 2 s
        beats = [Beat(transport, 0.0) for transport in transports]
        for beat in beats:
            sweeper.add(beat)
        assert [sweeper.sweep(t) for t in (1.0, 2.0, 3.0)] == [(0, 0)] * 3
        beats[0].heard(3.5)
        assert sweeper.sweep(4.0) == (50, 0)  # 59 silent: 50 now, the rest in the next tick
        assert sweeper.sweep(5.0) == (9, 0)
        for beat in beats[1:]:
            beat.heard(5.5)  # all answered but one: the last pinged
        beats[-1].pinged = 5.0
        assert sweeper.sweep(6.0) == (0, 0)
        assert sweeper.sweep(7.0) == (0, 1)  # its ping is 2 s old
        assert transports[-1].is_closing() and len(sweeper) == 59
        assert sweeper.sweep(7.5) == (0, 0)
        assert sweeper.sweep(8.0) == (1, 0)  # the one heard at 3.5 is silent again
        for _, theirs in pairs[:2]:
            theirs.settimeout(1)
        assert pairs[0][1].recv(16) == PING_FRAME  # the one at 8 s only: it had been heard at 3.5 s
        assert pairs[1][1].recv(16) == PING_FRAME  # the one at 4 s
    finally:
        for transport in transports:
            transport.abort()
        for _, theirs in pairs:
            theirs.close()


def test_a_closed_socket_leaves_the_sweep_at_once() -> None:
    """The sweep must hold no closed socket's state until its tick comes: it goes by reference counting."""
    sweeper = Sweeper(30.0, now=0.0)
    beat = Beat(None, 0.0)
    sweeper.add(beat)
    sweeper.discard(beat)
    assert len(sweeper) == 0 and sys.getrefcount(beat) == 2  # the local name and getrefcount's argument
