"""Replies back to the customer through the connector of the inbox they wrote to."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from connectors.base import Connector
from core import events
from core.model import Conversation, Delivery, DeliveryStatus, Message, OutboundReply
from core.store import Store

log = logging.getLogger(__name__)


class Outbound:
    def __init__(self, store: Store, connectors: Mapping[str, Connector]) -> None:
        self._store = store
        self._connectors = connectors

    async def deliver_bot_reply(
        self, reply: Message, conversation: Conversation, *, answers: str | None = None
    ) -> Message:
        """Store the reply once (its external id is derived from the message it answers), then send it.

        ``answers``: the inbound message to mark handled in the same write.
        """
        stored, created = await self._store.add_message(reply, [events.message_created(reply)], answers=answers)
        if created:
            await self.send(stored, conversation)
        return stored

    async def send(self, message: Message, conversation: Conversation) -> Delivery:
        connector = self._connectors.get(conversation.inbox)
        if connector is None:
            log.error("no connector for inbox %s; message %s not sent", conversation.inbox, message.id)
            return Delivery(status=DeliveryStatus.FAILED, error=f"inbox {conversation.inbox!r} is not configured")
        delivery = await connector.send(OutboundReply(message=message, address=conversation.address))
        if delivery.status in (DeliveryStatus.FAILED, DeliveryStatus.RETRYABLE):
            log.warning("message %s not delivered: %s", message.id, delivery.error)
        return delivery

    async def status_changed(self, conversation: Conversation) -> None:
        connector = self._connectors.get(conversation.inbox)
        if connector is not None:
            await connector.notify(conversation)
