"""Web chat abuse limits: who a client is (its address), and how many sockets, visitors and tickets it may open."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from core.config import WebchatInbox
from core.store.roles import Coordination

Network = IPv4Network | IPv6Network
CLOSE_RATE_LIMITED = 4429  # the socket is closed because a limit was reached; the frame before says when to retry


class Refused(Exception):
    """A limit was reached: ``status`` for an HTTP refusal, ``retry_after_s`` for its Retry-After header.
    (A plain exception, not a frozen dataclass: the interpreter sets attributes on exceptions it raises.)"""

    def __init__(self, *, status: int, code: str, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


def is_trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        return any(ip_address(address) in net for net in proxies)
    except ValueError:
        return False


def client_address(peer: str | None, forwarded_for: str, proxies: Sequence[Network]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the nearest address in
    ``X-Forwarded-For`` that is not a trusted proxy. Anything further left was written by the client and
    counts for nothing, so a visitor cannot pick a fresh address per request."""
    address = peer or ""
    if not is_trusted(address, proxies):
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        try:
            ip_address(hop)
        except ValueError:
            return address  # a garbled hop: the last proxy we trust is all we know
        address = hop
        if not is_trusted(hop, proxies):
            break
    return address


def address_key(address: str) -> str:
    """The unit a per-address limit counts: an IPv4 address, or an IPv6 /64 (one subscriber's usual share, so
    cycling through its 2^64 addresses gains nothing)."""
    try:
        ip = ip_address(address)
    except ValueError:
        return address or "unknown"
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Limits:
    """One web chat inbox's limits. Open sockets are this instance's (they live here); rates are counted in the
    store, so they hold however many instances serve the inbox."""

    def __init__(self, cfg: WebchatInbox, store: Coordination) -> None:
        self._cfg = cfg
        self._store = store
        self._open = 0
        self._open_by: dict[str, int] = {}

    @property
    def open_sockets(self) -> int:
        return self._open

    @contextmanager
    def socket(self, address: str) -> Iterator[None]:
        """Hold one socket slot while the socket is open; Refused when the instance or the address is full."""
        key = address_key(address)
        if self._open >= self._cfg.max_sockets:
            raise Refused(status=503, code="server_full", message="too many chats open; retry shortly", retry_after_s=5)
        if self._open_by.get(key, 0) >= self._cfg.sockets_per_address:
            raise Refused(
                status=429,
                code="rate_limited",
                message=f"at most {self._cfg.sockets_per_address} open chats from one address",
                retry_after_s=30,
            )
        self._open += 1
        self._open_by[key] = self._open_by.get(key, 0) + 1
        try:
            yield
        finally:
            self._open -= 1
            left = self._open_by[key] - 1
            if left:
                self._open_by[key] = left
            else:
                del self._open_by[key]

    async def connection(self, address: str) -> None:
        await self._count(
            f"conn:{address_key(address)}",
            60,
            self._cfg.connections_per_address_per_minute,
            "too many connections from this address; slow down",
        )

    async def new_visitor(self, address: str) -> None:
        await self._count(
            f"new:{address_key(address)}",
            3600,
            self._cfg.new_visitors_per_address_per_hour,
            "too many new chats from this address; try again later",
        )

    async def _count(self, what: str, window_s: float, limit: int, message: str) -> None:
        hits = await self._store.hit(f"webchat:{self._cfg.name}:{what}", window_s)
        if hits.count > limit:
            raise Refused(
                status=429, code="rate_limited", message=message, retry_after_s=max(1, math.ceil(hits.reset_in_s))
            )
