"""What an API token may do: the scopes a route asks for and the rule that grants them."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Scope(StrEnum):
    TICKETS_READ = "tickets:read"
    TICKETS_WRITE = "tickets:write"
    CONTACTS_READ = "contacts:read"
    CONTACTS_WRITE = "contacts:write"
    KB_ADMIN = "kb:admin"
    WEBHOOKS_ADMIN = "webhooks:admin"  # dead letters and their replays
    REPORTS_READ = "reports:read"
    METRICS = "metrics"
    AGENTS_ACT_AS = "agents:act_as"  # one integration replies for many agents: the body's ``agent`` is honoured
    ADMIN = "admin"  # everything


# Writing a thing shows it back (a PATCH answers with the ticket), so write implies read of the same thing.
_IMPLIED: dict[Scope, frozenset[Scope]] = {
    Scope.TICKETS_WRITE: frozenset({Scope.TICKETS_READ}),
    Scope.CONTACTS_WRITE: frozenset({Scope.CONTACTS_READ}),
}


def expand(scopes: Iterable[Scope]) -> frozenset[Scope]:
    """Every scope the given ones grant: ``admin`` grants all, ``x:write`` grants ``x:read``."""
    held = frozenset(scopes)
    if Scope.ADMIN in held:
        return frozenset(Scope)
    return held.union(*(_IMPLIED.get(s, frozenset()) for s in held))
