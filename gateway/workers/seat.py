"""What a worker process is handed by its supervisor: its place, its listening sockets and its link back."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

ENV = "HUILIU_WORKER"  # set by the supervisor in each worker's environment, never by an operator


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSeat:
    """Worker ``index`` (0-based) of ``workers``. The file descriptors are inherited from the supervisor:
    ``listen_fd`` the worker's own listening socket (one per seat, all bound with SO_REUSEPORT to one port, so
    the kernel spreads new connections over the workers), ``hub_fd`` its end of a socket pair to the supervisor
    (web chat delivery between workers, readiness, and noticing the supervisor is gone), ``metrics_fd`` the
    ``ops.metrics_port`` socket shared by all workers, if one is configured."""

    index: int
    workers: int
    listen_fd: int
    hub_fd: int
    metrics_fd: int | None = None

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkerSeat | None:
        """This process's seat, or None when it was not started by a supervisor."""
        raw = (os.environ if environ is None else environ).get(ENV)
        if not raw:
            return None
        data = json.loads(raw)
        return cls(
            index=int(data["index"]),
            workers=int(data["workers"]),
            listen_fd=int(data["listen_fd"]),
            hub_fd=int(data["hub_fd"]),
            metrics_fd=None if data.get("metrics_fd") is None else int(data["metrics_fd"]),
        )

    def describe(self) -> dict[str, int]:
        """For /readyz: which process answered (a load balancer's or an operator's check reaches any one)."""
        return {"index": self.index, "workers": self.workers, "pid": os.getpid()}
