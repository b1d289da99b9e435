"""How a long job reports how far it is: ``progress(done, total)``, called as it goes (a CLI draws a bar)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int], None]
