"""The sample config.yaml's service rules, for the end-to-end tests of every channel."""

from __future__ import annotations

from typing import Any

import yaml

from tests.conftest import ROOT


def sample_rules() -> dict[str, Any]:
    """``extract``, ``routing``, ``queues`` and ``sla`` exactly as the shipped config.yaml has them."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    return {key: config[key] for key in ("extract", "routing", "queues", "sla")}
