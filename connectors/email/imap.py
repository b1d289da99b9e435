"""IMAP pieces under the connector's session loop: checkpoints, responses, and the EXISTS watch."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")


class ImapError(Exception):
    """The server said NO/BAD, or the connection went away: reconnect with backoff."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    uidvalidity: int
    last_uid: int

    def dump(self) -> str:
        return json.dumps({"uidvalidity": self.uidvalidity, "last_uid": self.last_uid})

    @classmethod
    def load(cls, text: str | None) -> Checkpoint | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(uidvalidity=int(data["uidvalidity"]), last_uid=int(data["last_uid"]))
        except (ValueError, KeyError, TypeError):
            return None


def imap_ok(response: Any, what: str) -> Any:
    """The response, when the server said OK; ImapError otherwise."""
    if getattr(response, "result", None) != "OK":
        lines = getattr(response, "lines", [])
        raise ImapError(f"{what} failed: {lines[-1:] if lines else response!r}")
    return response


def fetched_bytes(lines: list[Any]) -> bytes | None:
    """The literal in a FETCH response: aioimaplib gives it as a bytearray line."""
    for line in lines:
        if isinstance(line, bytearray):
            return bytes(line)
    return None


class ExistsWatch:
    """Notices every untagged EXISTS, whichever command's response carries it.

    aioimaplib drops an EXISTS that arrives during a SEARCH or FETCH. A mail delivered while we searched
    is announced exactly that way, and the server does not announce it again at IDLE: without this we
    would only find it when IDLE next times out (up to a lease third later). Nothing is lost either way
    (the UID checkpoint), but it is late.
    """

    def __init__(self, client: Any) -> None:
        self.seen = False
        protocol = client.protocol
        original = protocol._untagged_response

        def watch(line: bytes) -> Any:
            if line.rstrip().upper().endswith(b"EXISTS"):
                self.seen = True
            return original(line)

        protocol._untagged_response = watch
