"""The Docker image's own steps: seed the KB into the data volume on first start, and the health check."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from core.config import Config, ConfigError, load_config

DEFAULT_CONFIG = "/app/config.yaml"
# The KB shipped in the image, copied to ``bot.kb`` when that file is not there yet (first start of a volume).
SEED_ENV = "HUILIU_KB_SEED"
CONFIG_ENV = "HUILIU_CONFIG"


def config_path(command: Sequence[str]) -> Path:
    """The config a command names with ``-c``/``--config``, else ``$HUILIU_CONFIG``, else the image's."""
    for i, arg in enumerate(command):
        if arg in ("-c", "--config") and i + 1 < len(command):
            return Path(command[i + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    return Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))


def seed_kb(config: Config, seed: Path) -> Path | None:
    """Copy ``seed`` to the configured KB path when no KB is there; return the path when it did.

    The image's own folders belong to root while the gateway runs as an ordinary user, so a KB the admin API
    can edit has to live in the data volume. Two instances sharing the volume may start together: the copy
    is made aside and linked into place, so exactly one lands and neither sees half a file.
    """
    target = config.resolve(config.bot.kb)
    if target.exists() or not seed.is_file():
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".seed-", suffix=".yaml", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, seed.open("rb") as src:
            shutil.copyfileobj(src, out)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def seed_from_env(config: Config) -> Path | None:
    """``huiliu serve``'s first step in the image: seed the KB from ``$HUILIU_KB_SEED`` when it is set."""
    seed = os.environ.get(SEED_ENV)
    if not seed:
        return None
    try:
        return seed_kb(config, Path(seed))
    except OSError as exc:
        where = config.resolve(config.bot.kb)
        raise ConfigError(f"bot.kb: cannot copy {seed} to {where} on first start: {exc.strerror}") from None


def healthcheck(config_file: Path, timeout_s: float = 3.0) -> int:
    """0 when ``/readyz`` on the configured port says ready, 1 otherwise (Docker's HEALTHCHECK contract)."""
    try:
        config = load_config(config_file)
    except ConfigError as exc:
        print(f"huiliu: {exc}", file=sys.stderr)
        return 1
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    url = f"http://{f'[{host}]' if ':' in host else host}:{config.server.port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:  # URLError and HTTPError (503 not ready) are OSErrors
        print(f"huiliu: {url}: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] != ["healthcheck"]:
        print("usage: python -m gateway.container healthcheck [-c CONFIG]", file=sys.stderr)
        return 2
    return healthcheck(config_path(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
