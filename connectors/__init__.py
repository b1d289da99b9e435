"""Channel connectors, one instance per configured inbox, from an explicit registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectors.base import Connector, ConnectorDeps
from connectors.email.connector import EmailConnector
from connectors.phone.connector import PhoneConnector
from connectors.webchat.connector import WebchatConnector
from connectors.wechat.connector import WechatConnector
from core.config import Config

# Each factory takes (its inbox's config, ConnectorDeps). Imports stay explicit: no plugin scanning.
REGISTRY: dict[str, Callable[[Any, ConnectorDeps], Connector]] = {
    "webchat": WebchatConnector,
    "wechat": WechatConnector,
    "phone": PhoneConnector,
    "email": EmailConnector,
}


def build_connectors(config: Config, deps: ConnectorDeps) -> dict[str, Connector]:
    return {inbox.name: REGISTRY[inbox.channel](inbox, deps) for inbox in config.inboxes}
