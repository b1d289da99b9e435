"""Channel connectors, one instance per configured inbox, from an explicit registry."""

from __future__ import annotations

from collections.abc import Callable

from connectors.base import Connector
from connectors.webchat.connector import WebchatConnector
from core.config import Config, InboxConfig
from core.store import Store

Factory = Callable[[InboxConfig, Store], Connector]

REGISTRY: dict[str, Factory] = {
    "webchat": WebchatConnector,
}


def build_connectors(config: Config, store: Store) -> dict[str, Connector]:
    return {inbox.name: REGISTRY[inbox.channel](inbox, store) for inbox in config.inboxes}
