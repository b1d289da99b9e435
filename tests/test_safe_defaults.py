"""Secure by default as an operator meets it: serve, the Docker entrypoint and ``huiliu token new``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

from core.config import parse_config
from gateway.access import Tokens
from tests.conftest import ROOT
from tests.processes import HUILIU
from tests.test_serve import write_config

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env if env is not None else dict(os.environ),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("token", "why"), [("dev-token-change-me", "is the sample token"), ("short-1234", "shorter than 16")]
)
async def test_serve_refuses_a_weak_token_off_loopback_in_one_line(tmp_path: Path, token: str, why: str) -> None:
    path = write_config(tmp_path, api={"tokens": [token]})
    code, _, err = await run(*HUILIU, "serve", "-c", str(path), "--host", "0.0.0.0", "--port", "0")
    assert code == 2
    assert err.count("\n") == 1 and why in err and "api.tokens[0]" in err and "huiliu token new" in err
    assert token not in err.replace("dev-token-change-me)", "")  # a short real token is not printed


async def test_the_entrypoint_refuses_the_sample_config_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HUILIU_API_TOKEN"}
    env["HUILIU_CONFIG"] = str(ROOT / "config.yaml")  # the image's config, which falls back to the sample token
    code, out, err = await run("sh", str(ENTRYPOINT), "huiliu", "serve", "-c", "/app/config.yaml", env=env)
    assert code == 78 and out == ""
    assert "HUILIU_API_TOKEN is not set" in err and "mount your own config" in err

    code, out, _ = await run(
        "sh", str(ENTRYPOINT), "echo", "serve", "started", env={**env, "HUILIU_API_TOKEN": "x" * 32}
    )
    assert code == 0 and out == "serve started\n"
    code, out, _ = await run("sh", str(ENTRYPOINT), "echo", "token", "new", env=env)  # only serve is guarded
    assert code == 0 and out == "token new\n"


async def test_the_entrypoint_lets_a_mounted_config_of_ones_own_through(tmp_path: Path) -> None:
    own = tmp_path / "config.yaml"
    own.write_text(
        yaml.safe_dump({"api": {"tokens": [{"name": "ops", "token_sha256": "0" * 64, "scopes": ["admin"]}]}})
    )
    env = {k: v for k, v in os.environ.items() if k != "HUILIU_API_TOKEN"}
    code, out, _ = await run("sh", str(ENTRYPOINT), "echo", "serve", env={**env, "HUILIU_CONFIG": str(own)})
    assert code == 0 and out == "serve\n"


def test_the_image_runs_the_entrypoint() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY docker/entrypoint.sh /usr/local/bin/huiliu-entrypoint" in dockerfile
    assert 'ENTRYPOINT ["huiliu-entrypoint"]' in dockerfile
    assert os.access(ENTRYPOINT, os.X_OK)


async def test_token_new_prints_a_strong_token_and_a_config_entry_holding_only_its_hash() -> None:
    code, out, _ = await run(
        *HUILIU, "token", "new", "--name", "zendesk-sync", "--scope", "tickets:write", "--scope", "agents:act_as"
    )
    assert code == 0
    token, comment, line = out.splitlines()
    assert len(token) >= 40 and comment.startswith("#")
    (entry,) = yaml.safe_load(line)
    assert entry == {
        "name": "zendesk-sync",
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "scopes": ["tickets:write", "agents:act_as"],
    }
    config = parse_config({"api": {"tokens": [entry]}})
    principal = Tokens(config.api.tokens).authenticate(f"Bearer {token}")
    assert principal is not None and principal.name == "zendesk-sync"
    assert token not in json.dumps(entry)

    code, out, _ = await run(*HUILIU, "token", "new", "--raw")
    assert code == 0 and len(out.strip()) >= 40 and "\n" not in out.strip()
