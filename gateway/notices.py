"""Progress notices: a short message on the customer's own channel when their ticket moves to a status the
operator chose to announce (``customer.notices``), sent like any reply so each channel's rules apply."""

from __future__ import annotations

from collections.abc import Mapping

from core.model import Author, Channel, Ticket, TicketStatus, outbound_message
from core.store import Store
from gateway.outbound import Outbound


class ProgressNotices:
    def __init__(self, store: Store, outbound: Outbound, notices: Mapping[str, str]) -> None:
        self._store = store
        self._outbound = outbound
        self._notices = dict(notices)

    async def on_status(self, ticket: Ticket, previous: TicketStatus) -> None:
        """``ticket`` as saved after the change. Phone tickets have no written channel to announce on; WeChat's
        48-hour window and quota, email threading and web chat's offline queue are the connectors' part."""
        template = self._notices.get(str(ticket.status))
        if not template or ticket.status is previous or ticket.channel is Channel.PHONE:
            return
        conversation = await self._store.get_conversation(ticket.conversation_id)
        if conversation is None:
            return
        notice = outbound_message(
            conversation,
            author=Author.SYSTEM,
            text=template.format(number=ticket.number),
            at=ticket.updated_at,
            external_id=f"notice:{ticket.id}:{ticket.version}",  # once per change, however often it is retried
            ticket_id=ticket.id,
            meta={"kind": "notice", "status": str(ticket.status), "ticket_number": ticket.number},
        )
        await self._outbound.store_and_send(notice, conversation)
