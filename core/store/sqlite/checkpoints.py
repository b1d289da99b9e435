"""WAL checkpoints on a thread and a connection of their own, so the store's one writer never waits on them.

With SQLite's automatic checkpoints the writing connection copies the WAL back into the database file, and
fsyncs both, whenever a commit leaves the WAL past ``wal_autocheckpoint`` pages: the store thread, which every
message's write goes through, stopped for it (on a busy web chat, ~12 fdatasync calls a second, median 3.4 ms,
up to 14 ms, during which every queued job waited; issue 23). Here a PASSIVE checkpoint runs every ``every_s``
from another connection: it copies what it can without blocking the writer or any reader, and the writer keeps a
far larger automatic checkpoint only as a backstop, should this thread fall behind or stop.

It also bounds what a power loss can take (``synchronous=NORMAL`` syncs the WAL only when it is checkpointed):
at most ``every_s`` of commits, where a quiet gateway's WAL could stay unsynced until 1,000 pages had piled up.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

EVERY_S = 0.25
# The writer's own automatic checkpoint, kept as a backstop: pages of WAL (4 KiB each) before a commit copies
# them back itself. At a thousand messages a second the WAL grows by a few thousand pages a second.
BACKSTOP_PAGES = 4000


class Checkpointer:
    """A daemon thread that checkpoints ``path``'s WAL every ``every_s`` until ``stop``."""

    def __init__(self, path: Path, every_s: float = EVERY_S) -> None:
        self._path = path
        self._every_s = every_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="huiliu-sqlite-checkpoint", daemon=True)
        self.passes = 0  # checkpoints run (for tests and diagnostics)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        failing = False  # said once when checkpoints start failing and once when they work again, not 4 times a second
        try:
            db.execute("PRAGMA busy_timeout=1000")
            while not self._stopping.wait(self._every_s):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()  # GIL released while SQLite works
                except sqlite3.Error as exc:  # a busy or full disk: the writer's backstop checkpoints meanwhile
                    if not failing:
                        log.warning("WAL checkpoints of %s failing (the writer's own take over): %s", self._path, exc)
                    failing = True
                else:
                    if failing:
                        log.warning("WAL checkpoints of %s work again", self._path)
                    failing = False
                    self.passes += 1
        finally:
            db.close()
