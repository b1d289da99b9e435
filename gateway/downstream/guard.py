"""Webhook hosts must resolve to public addresses: a name pointing at 127.0.0.1 or 169.254.169.254 is refused."""

from __future__ import annotations

import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from core.config import public_host


class PublicOnlyResolver(AbstractResolver):
    """Resolves as usual, then refuses a name whose addresses are not all public, unless the name belongs to a
    subscription that allows private targets. Checked at each connection, so DNS cannot be rebound after the
    config was read."""

    def __init__(self, private_ok: frozenset[str]) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._private_ok = private_ok

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if host.lower() not in self._private_ok:
            for entry in found:
                if not public_host(entry["host"]):
                    raise OSError(f"webhook host {host} resolves to {entry['host']}, not a public address")
        return found

    async def close(self) -> None:
        await self._inner.close()
