"""``server.event_loop``: uvloop when installed, asyncio's loop on request, and a clear error naming the key when
uvloop is demanded but missing."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from core.config import ConfigError
from gateway.event_loop import loop_factory, run_on


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_auto_and_uvloop_run_on_uvloop() -> None:
    for choice in ("auto", "uvloop"):
        name, factory = loop_factory(choice)  # type: ignore[arg-type]
        assert name == "uvloop"
        assert run_on(factory, _loop_type()) is uvloop.Loop


def test_asyncio_runs_on_the_standard_loop() -> None:
    name, factory = loop_factory("asyncio")
    assert name == "asyncio"
    assert not issubclass(run_on(factory, _loop_type()), uvloop.Loop)


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what Python does for a module that cannot be imported
    name, factory = loop_factory("auto")
    assert name == "asyncio" and factory is asyncio.new_event_loop
    with pytest.raises(ConfigError, match=r"server\.event_loop: uvloop is not installed"):
        loop_factory("uvloop")
