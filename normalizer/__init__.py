"""The normalizer stage: channel input to NormalizedMessage through small pure steps, then rules (pipeline.py)."""

from __future__ import annotations

from normalizer.pipeline import DEFAULT_STEPS, Step, normalize

__all__ = ["DEFAULT_STEPS", "Step", "normalize"]
