"""Who may call which route: bearer tokens to principals, a table of what each route needs, one middleware."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from aiohttp import web

from core.config import ApiToken
from core.jsonweb import json_response
from core.scopes import Scope, expand

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Open(StrEnum):
    PUBLIC = "public"  # no token: health checks, the OpenAPI document
    CHANNEL = "channel"  # a connector's webhook or socket: it checks the channel's own signature or token


PUBLIC = Open.PUBLIC
CHANNEL = Open.CHANNEL
Requirement = Scope | Open


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """The caller a token stands for: its name is the author of every change it makes."""

    name: str
    scopes: frozenset[Scope]  # expanded: admin holds all of them
    inboxes: frozenset[str] | None  # None: every inbox

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes

    def sees(self, inbox: str) -> bool:
        return self.inboxes is None or inbox in self.inboxes


PRINCIPAL = web.RequestKey("principal", Principal)
REQUEST_ID = web.RequestKey("request_id", str)


@dataclass(frozen=True, slots=True)
class Guarded:
    route: web.RouteDef
    needs: Requirement


def needs(requirement: Requirement, route: web.RouteDef) -> Guarded:
    return Guarded(route, requirement)


def error(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status=status)


class Tokens:
    """Bearer tokens by SHA-256: every configured token is compared, in constant time, on every request."""

    def __init__(self, entries: Sequence[ApiToken]) -> None:
        self._entries = tuple(
            (
                entry.digest,
                Principal(
                    name=entry.name,
                    scopes=expand(entry.scopes),
                    inboxes=frozenset(entry.inboxes) if entry.inboxes else None,
                ),
            )
            for entry in entries
        )
        for entry in entries:
            if entry.plain:
                log.warning(
                    "api.%s is a bare string: it acts as an admin token named %r; give it a name and the scopes "
                    "it needs ({name, token_sha256, scopes, inboxes}; `huiliu token new` prints one)",
                    entry.name,
                    entry.name,
                )

    def authenticate(self, authorization: str) -> Principal | None:
        scheme, _, token = authorization.partition(" ")
        given = hashlib.sha256(token.strip().encode()).digest()
        found: Principal | None = None
        for digest, principal in self._entries:  # no early exit: the time taken says nothing of which matched
            if hmac.compare_digest(given, digest):
                found = principal
        return found if scheme.lower() == "bearer" and token.strip() else None


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= 128 and given.isascii() and given.isprintable() and " " not in given:
        return given
    return uuid.uuid4().hex


class Access:
    """The route table and the middleware that enforces it.

    Every route is declared with what it needs (a scope, ``PUBLIC`` or ``CHANNEL``); the middleware refuses
    a route that declares nothing, and a test walks the router so none slips through. Other modules add
    their routes the same way: ``access.add(app.router, [needs(Scope.METRICS, web.get("/metrics", handler))])``
    and read the caller from ``request[PRINCIPAL]``.
    """

    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens
        self._table: dict[tuple[str, str], Requirement] = {}

    def add(self, router: web.UrlDispatcher, routes: Iterable[Guarded]) -> None:
        for guarded in routes:
            for route in guarded.route.register(router):
                assert route.resource is not None
                self._table[(route.method.upper(), route.resource.canonical)] = guarded.needs

    def requirement(self, method: str, canonical: str) -> Requirement | None:
        """What the route at ``canonical`` (the router's template) needs; None if it declares nothing.
        A HEAD route is the one aiohttp adds beside each GET, and needs what the GET needs."""
        method = "GET" if method.upper() == "HEAD" else method.upper()
        return self._table.get((method, canonical)) or self._table.get(("*", canonical))

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        if request.match_info.http_exception is not None or route.resource is None:
            return await handler(request)  # 404 / 405: the router's own answer
        needed = self.requirement(route.method, route.resource.canonical)
        if needed is None:
            log.error("route %s %s declares no scope; refused", request.method, route.resource.canonical)
            return error(500, "undeclared_route", "this route declares no access rule; it has been logged")
        if not isinstance(needed, Scope):
            return await handler(request)  # a channel's hot path pays for one lookup, nothing more
        request[REQUEST_ID] = request.get(REQUEST_ID) or _request_id(request)  # the log's id, if set
        principal = self._tokens.authenticate(request.headers.get("Authorization", ""))
        if principal is None:
            log.info("refused %s %s: no valid token", request.method, request.path, extra=self._ids(request))
            response = error(401, "unauthorized", "missing or invalid bearer token")
            response.headers["WWW-Authenticate"] = 'Bearer realm="huiliu"'
            return self._tagged(request, response)
        if not principal.may(needed):
            log.info(
                "refused %s %s: token %s lacks %s",
                request.method,
                request.path,
                principal.name,
                needed,
                extra=self._ids(request),
            )
            return self._tagged(
                request, error(403, "forbidden", f"this token ({principal.name}) lacks the scope {needed}")
            )
        request[PRINCIPAL] = principal
        return self._tagged(request, await handler(request))

    @staticmethod
    def _ids(request: web.Request) -> dict[str, str]:
        return {"request_id": request[REQUEST_ID], "remote": request.remote or ""}

    @staticmethod
    def _tagged(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        if not response.prepared:  # a web socket or stream has sent its headers already
            response.headers["X-Request-Id"] = request[REQUEST_ID]
        return response


def is_loopback(host: str) -> bool:
    """Only this machine can connect. A host name other than localhost counts as reachable: it may resolve to
    anything."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_problem(host: str, tokens: Sequence[ApiToken]) -> str | None:
    """Why serving on ``host`` with these tokens would hand the API to anyone who guesses; None if it would not."""
    if is_loopback(host):
        return None
    for i, token in enumerate(tokens):
        weakness = token.weakness()
        if weakness is not None:
            return (
                f"refusing to serve on {host or 'every address'}: api.tokens[{i}] ({token.name}) {weakness}; "
                "set a strong one (e.g. HUILIU_API_TOKEN=$(huiliu token new --raw)), or listen on 127.0.0.1"
            )
    return None
