"""The Docker set-up as an operator uses it: KB seeding into the data volume, the health check, the compose file.

No Docker engine runs here, so the image is laid out by hand (root-owned app files, a data folder of uid
10001) and the gateway runs as uid 10001 with the image's environment and command, as `docker run` would.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from core.config import RedisStoreConfig, load_config
from core.scopes import Scope
from gateway.access import exposure_problem
from gateway.container import config_path, seed_kb
from tests.conftest import API_TOKEN, ROOT
from tests.processes import free_port, ready, run_as_non_root, user_tmp

PY = [sys.executable, "-m"]


def dockerfile_env() -> dict[str, str]:
    """The ENV lines of the Dockerfile: what every process in the image sees."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def compose_value(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?message}``."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":-":
            return arg
        raise AssertionError(f"compose needs {name}: {arg}")

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", sub, value)


def test_compose_runs_two_gateways_whose_config_loads_on_redis_with_aof() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services: dict[str, Any] = compose["services"]
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    gateways = {name: s for name, s in services.items() if s.get("image") == "huiliu"}
    assert len(gateways) == 2
    assert len({tuple(s["ports"]) for s in gateways.values()}) == 2  # each instance on its own host port
    for service in gateways.values():
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}  # target -> source
        source = ROOT / mounts["/app/config.yaml"]
        assert source.is_file()
        shell = {"HUILIU_API_TOKEN": API_TOKEN}
        env = {**dockerfile_env(), **{k: compose_value(str(v), shell) for k, v in service["environment"].items()}}
        config = load_config(source, env=env)
        assert isinstance(config.store, RedisStoreConfig)
        assert config.store.url.startswith("redis://redis:")  # the compose service, by its name
        assert config.server.host == "0.0.0.0" and config.server.port == 8080
        assert len(config.api.tokens) == 1 and config.api.tokens[0].scopes == (Scope.ADMIN,)
        assert exposure_problem(config.server.host, config.api.tokens) is None  # serve would start with it
        # The KB is in the shared data volume, where the non-root gateway may write it.
        assert str(config.resolve(config.bot.kb)).startswith("/app/data/")
        assert mounts["/app/data"] == "huiliu-data" and "huiliu-data" in compose["volumes"]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_dockerfile_health_check_asks_readiness_on_the_configured_port() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    health = text[text.index("HEALTHCHECK") :].split("\n\n")[0]
    assert '"gateway.container", "healthcheck"' in health and "8080" not in health
    assert text.rstrip().endswith('CMD ["huiliu", "serve", "-c", "/app/config.yaml"]')
    env = dockerfile_env()
    assert env["HUILIU_KB"].startswith("/app/data/") and env["HUILIU_KB_SEED"] == "/app/kb/faq.yaml"
    sample = load_config(ROOT / "config.yaml", env={**env, "HUILIU_KB": "/app/data/kb/faq.yaml"})
    assert sample.resolve(sample.bot.kb) == Path("/app/data/kb/faq.yaml")


def test_the_health_check_takes_the_config_of_the_command() -> None:
    assert config_path(["huiliu", "serve", "-c", "/etc/huiliu.yaml"]) == Path("/etc/huiliu.yaml")
    assert config_path(["huiliu", "serve", "--config=/x.yaml"]) == Path("/x.yaml")


def test_seeding_never_overwrites_a_kb_that_is_there(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text("faqs: []\n", encoding="utf-8")
    kb = tmp_path / "data" / "kb" / "faq.yaml"
    config = load_config(_write(tmp_path / "c.yaml", {"bot": {"kb": str(kb)}}))
    assert seed_kb(config, seed) == kb and kb.read_text(encoding="utf-8") == "faqs: []\n"
    kb.write_text("edited\n", encoding="utf-8")
    assert seed_kb(config, seed) is None and kb.read_text(encoding="utf-8") == "edited\n"
    assert [p.name for p in kb.parent.iterdir()] == ["faq.yaml"]  # no temp file left behind


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def owner(path: Path) -> int:
    return path.stat().st_uid


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
async def image(open_dir: Path) -> AsyncIterator[tuple[Path, dict[str, str], list[str]]]:
    """/app as the Dockerfile lays it out: code, KB and config owned by root; /app/data owned by uid 10001."""
    run_as = run_as_non_root()
    app = open_dir / "app"
    (app / "kb").mkdir(parents=True)
    shutil.copy(ROOT / "config.yaml", app / "config.yaml")
    shutil.copy(ROOT / "kb" / "faq.yaml", app / "kb" / "faq.yaml")
    (app / "data").mkdir()
    if run_as:
        os.chown(app / "data", 10001, 10001)
    env = {
        **os.environ,
        **dockerfile_env(),
        "HUILIU_KB": str(app / "data" / "kb" / "faq.yaml"),
        "HUILIU_KB_SEED": str(app / "kb" / "faq.yaml"),
        "HUILIU_CONFIG": str(app / "config.yaml"),
        "HUILIU_HOST": "127.0.0.1",
        "HUILIU_PORT": str(free_port()),
        "HUILIU_API_TOKEN": API_TOKEN,
        "TMPDIR": str(user_tmp(open_dir)),
    }
    yield app, env, run_as


async def start(app: Path, env: dict[str, str], run_as: list[str]) -> asyncio.subprocess.Process:
    """The image's CMD as its entrypoint runs it (the token is set, so it is handed on as it is)."""
    return await asyncio.create_subprocess_exec(
        *run_as, *PY, "gateway.cli", "serve", "-c", str(app / "config.yaml"),
        cwd=app, env=env, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def health(env: dict[str, str], run_as: list[str]) -> int:
    proc = await asyncio.create_subprocess_exec(
        *run_as, *PY, "gateway.container", "healthcheck", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(proc.wait(), 30)


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_the_admin_api_writes_the_kb_as_the_image_user(image: tuple[Path, dict[str, str], list[str]]) -> None:
    app, env, run_as = image
    url = f"http://127.0.0.1:{env['HUILIU_PORT']}"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    entry = {"id": "gift-card", "questions": ["礼品卡怎么用"], "answer": "在结算页输入礼品卡号即可。"}
    assert await health(env, run_as) == 1  # nothing listening yet: unhealthy
    proc = await start(app, env, run_as)
    try:
        async with aiohttp.ClientSession() as http:
            await ready(http, url)
            assert await health(env, run_as) == 0
            async with http.post(url + "/api/v1/faqs", json=entry, headers=auth) as resp:
                assert resp.status == 201, await resp.text()
    finally:
        await stop(proc)
    kb, shipped = app / "data" / "kb" / "faq.yaml", app / "kb" / "faq.yaml"
    assert "gift-card" in read(kb) and "gift-card" not in read(shipped)  # the image's copy is untouched
    if run_as:
        assert owner(kb) == 10001 and owner(shipped) == 0

    # A restart keeps the edited KB: seeding happens only when the volume has none.
    proc = await start(app, env, run_as)
    try:
        async with aiohttp.ClientSession() as http:
            await ready(http, url)
            async with http.get(url + "/api/v1/faqs", headers=auth) as resp:
                assert "gift-card" in {f["id"] for f in (await resp.json())["faqs"]}
    finally:
        await stop(proc)
