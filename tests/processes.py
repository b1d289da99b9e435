"""Real `huiliu serve` processes for tests that need more than one instance or a real SIGTERM."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import API_TOKEN, ROOT, need

HUILIU = [sys.executable, "-m", "gateway.cli"]
Instance = tuple[asyncio.subprocess.Process, str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(config: Path, *, output: int | None = asyncio.subprocess.DEVNULL) -> Instance:
    """Start ``huiliu serve -c config`` on a free port; the URL is returned at once (see ``ready``)."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *HUILIU, "serve", "-c", str(config), "--port", str(port),
        cwd=ROOT, stdout=output, stderr=asyncio.subprocess.STDOUT if output is not None else None,
        env={**os.environ, "TEST_API_TOKEN": API_TOKEN},
    )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


async def ready(http: aiohttp.ClientSession, url: str, path: str = "/readyz") -> None:
    for _ in range(300):
        try:
            async with http.get(url + path) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail(f"{url} did not become ready")


NON_ROOT = ["setpriv", "--reuid=10001", "--regid=10001", "--clear-groups"]


def run_as_non_root() -> list[str]:
    """The command prefix that drops to uid 10001 (as the Docker image runs), or [] when we are not root."""
    if os.geteuid() != 0:
        return []
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) is not installed")
    return NON_ROOT


def user_tmp(open_dir: Path) -> Path:
    """A temp folder uid 10001 may write (jieba keeps its dictionary cache there)."""
    tmp = open_dir / "tmp"
    tmp.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        os.chown(tmp, 10001, 10001)
    return tmp
