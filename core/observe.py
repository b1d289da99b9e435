"""Hooks through which services and connectors report what they did, for metrics; no-ops unless wired."""

from __future__ import annotations

from typing import Protocol

from core.model import Channel, Message, Ticket


class Observer(Protocol):
    """What the metrics count per process. Each call is cheap and never fails the path it is on."""

    def message_stored(self, message: Message) -> None:
        """A new message (not a repeat) was stored: inbound by intake, outbound by the outbox."""
        ...

    def ticket_opened(self, ticket: Ticket) -> None: ...

    def webhook_attempt(self, subscription: str, result: str) -> None:
        """``result``: delivered, failed (an attempt; it may be retried) or dead_lettered."""
        ...

    def api_error(self, channel: Channel, inbox: str, code: str) -> None:
        """A channel's API refused or failed a call; ``code`` is its error code (or unreachable, busy)."""
        ...


class NullObserver:
    def message_stored(self, message: Message) -> None:
        pass

    def ticket_opened(self, ticket: Ticket) -> None:
        pass

    def webhook_attempt(self, subscription: str, result: str) -> None:
        pass

    def api_error(self, channel: Channel, inbox: str, code: str) -> None:
        pass


NO_OBSERVER: Observer = NullObserver()


# Health facts that connectors leave in the store (checkpoints), read by /readyz, /metrics and the alarms.
def mail_fetched_key(inbox: str) -> str:
    """The time (ISO 8601) a mailbox last finished a fetch without an error."""
    return f"health:mail_fetched:{inbox}"


def breaker_key(subscription: str) -> str:
    """``open`` or ``closed``: a webhook subscription's circuit breaker, as the instance dispatching it sees it."""
    return f"health:breaker:{subscription}"


def token_refresh_key(inbox: str) -> str:
    """JSON ``{"ok": bool, "at": ISO 8601, "error": str}`` of an inbox's last access-token refresh."""
    return f"health:token_refresh:{inbox}"
