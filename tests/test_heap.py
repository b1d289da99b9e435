"""Heap settling: what is alive is frozen out of full collections, and a reloaded FAQ index joins it."""

from __future__ import annotations

import asyncio
import gc
import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bot.live import LiveIndex
from bot.setup import BotSetup
from connectors.webchat.connector import WebchatConnector
from core import heap
from gateway.app import GATEWAY, create_app
from tests.conftest import ChatClient, make_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def unfrozen() -> Iterator[None]:
    assert gc.get_freeze_count() == 0
    try:
        yield
    finally:
        gc.unfreeze()


def _collected(obj: object) -> bool:
    """Whether full collections still walk the object (frozen ones are not in any generation)."""
    return any(o is obj for o in gc.get_objects())


def test_resettle_leaves_a_process_that_never_settled_alone(unfrozen: None) -> None:
    heap.resettle()
    assert gc.get_freeze_count() == 0


async def test_a_reloaded_index_is_frozen_once_the_process_has_settled(unfrozen: None, tmp_path: Path) -> None:
    kb = tmp_path / "faq.yaml"
    await asyncio.to_thread(shutil.copy, ROOT / "kb" / "faq.yaml", kb)
    index = await asyncio.to_thread(LiveIndex.load, kb)
    first = index.current
    assert _collected(first)
    heap.settle()
    assert not _collected(first)
    await index.reload()
    assert index.current is not first
    assert not _collected(index.current)
    assert index.search("怎么开发票")


class _Node:
    """A tracked object that can sit in a reference cycle, and be watched dying through a weak reference."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def test_a_tick_freezes_what_was_made_since_the_start_up_settle(unfrozen: None) -> None:
    """What an open socket keeps (made after start-up) must leave full collections once it has lived a tick,
    or 5,000 idle sockets are walked by every one of them (issue 23)."""
    heap.settle()
    sockets = [{"session": [i]} for i in range(100)]
    assert _collected(sockets[0])
    heap.Settler().tick()
    assert not _collected(sockets[0])
    assert not _collected(sockets)


def test_a_full_tick_reclaims_cycles_that_died_frozen(unfrozen: None) -> None:
    """Frozen cycles are never collected: the periodic full settle must free them, or memory creeps up."""
    heap.settle()
    settler = heap.Settler(full_every=3)
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    settler.tick()  # frozen while alive
    del a, b
    settler.tick()
    gc.collect()
    assert alive() is not None  # died frozen: only a full settle can reclaim it
    settler.tick()  # the third: full
    assert alive() is None


def test_tick_leaves_a_process_that_never_settled_alone(unfrozen: None) -> None:
    heap.Settler(full_every=1).tick()
    assert gc.get_freeze_count() == 0


async def test_serve_freezes_an_open_sockets_state_while_it_stays_usable(
    unfrozen: None, tmp_path: Path, bot_setup: BotSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve's app settles periodically: a visitor's socket opened after start-up leaves full collections, and
    the chat goes on as before."""
    monkeypatch.setattr(heap, "SETTLE_EVERY_S", 0.05)
    server = TestServer(create_app(make_config(tmp_path), bot_setup, settle_heap=True), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            ws_url = str(server.make_url("/chat/ws")).replace("http://", "ws://")
            chat = ChatClient(await http.ws_connect(ws_url))
            await chat.hello(None, 0)
            connector = server.app[GATEWAY].connectors["web"]
            assert isinstance(connector, WebchatConnector)
            [session] = [s for group in connector._live.values() for s in group]
            async with asyncio.timeout(5):
                while _collected(session) or _collected(session.ws):  # noqa: ASYNC110 (no event says it)
                    await asyncio.sleep(0.05)
            _, reply = await chat.say("怎么开发票")
            assert reply["author"] == "bot" and "发票" in reply["text"]
            await chat.close()
    finally:
        await server.close()


async def test_serving_collects_the_young_generation_less_often_and_puts_it_back(
    unfrozen: None, tmp_path: Path, bot_setup: BotSetup
) -> None:
    """While serve's app runs, young collections wait for ``YOUNG_THRESHOLD`` net new objects (requests in flight
    no longer trigger them); once it stops, the process has the collector's thresholds it had before."""
    before = gc.get_threshold()
    server = TestServer(create_app(make_config(tmp_path), bot_setup, settle_heap=True), host="127.0.0.1")
    await server.start_server()
    try:
        young, older, oldest = gc.get_threshold()
        assert young >= heap.YOUNG_THRESHOLD and (older, oldest) == before[1:]
    finally:
        await server.close()
    assert gc.get_threshold() == before


def test_a_higher_young_threshold_is_kept() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(heap.YOUNG_THRESHOLD * 2, before[1], before[2])
        assert heap.widen_young_generation()[0] == heap.YOUNG_THRESHOLD * 2
        assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD * 2
    finally:
        gc.set_threshold(*before)


def _sessions() -> list[object]:
    """Every web chat socket's state the interpreter still tracks, frozen or not, garbage or not."""
    from connectors.webchat.connector import _Session

    frozen = gc.get_freeze_count()
    gc.unfreeze()  # get_objects lists the collected generations only
    try:
        return [o for o in gc.get_objects() if isinstance(o, _Session)]
    finally:
        if frozen:
            gc.freeze()


async def test_a_closed_sockets_frozen_state_is_freed_without_a_full_settle(
    unfrozen: None, tmp_path: Path, bot_setup: BotSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle sockets are frozen within a tick of opening; when they close, their state must go at once (by
    reference counting), not wait in the frozen heap for the hourly full settle: visitors come and go all day,
    and frozen cycles would pile up between full settles (issue 23)."""
    monkeypatch.setattr(heap, "SETTLE_EVERY_S", 0.05)
    full_settles: list[None] = []
    settle = heap.settle

    def counted() -> None:
        full_settles.append(None)
        settle()

    monkeypatch.setattr(heap, "settle", counted)
    server = TestServer(create_app(make_config(tmp_path), bot_setup, settle_heap=True), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            ws_url = str(server.make_url("/chat/ws")).replace("http://", "ws://")
            chats = [ChatClient(await http.ws_connect(ws_url)) for _ in range(5)]
            for chat in chats:
                await chat.hello(None, 0)
            await chats[0].say("怎么开发票")
            connector = server.app[GATEWAY].connectors["web"]
            assert isinstance(connector, WebchatConnector)
            opened = [s for group in connector._live.values() for s in group]
            assert len(opened) == 5
            async with asyncio.timeout(5):
                while any(_collected(s) for s in opened):  # noqa: ASYNC110 (no event says it)
                    await asyncio.sleep(0.05)
            del opened
            for chat in chats:
                await chat.close()
            async with asyncio.timeout(5):
                while connector._live:  # noqa: ASYNC110 (the server sees the close a moment later)
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # the handlers' tasks finish after the socket leaves _live
            assert len(full_settles) == 1  # start-up's: none since, which would have collected frozen cycles
            assert _sessions() == []
    finally:
        await server.close()


def test_ticks_ask_whether_the_process_settled_once(unfrozen: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``gc.get_freeze_count`` walks every frozen object (50-90 ms with 5,000 sockets open): a tick a second must
    not pay it each time."""
    heap.settle()
    asked: list[None] = []
    count = gc.get_freeze_count

    def counted() -> int:
        asked.append(None)
        return count()

    monkeypatch.setattr(gc, "get_freeze_count", counted)
    settler = heap.Settler()
    sockets: list[dict[str, list[int]]] = []
    for _ in range(3):
        sockets.append({"session": [len(sockets)]})
        settler.tick()
    assert len(asked) == 1
    assert not _collected(sockets[-1])
