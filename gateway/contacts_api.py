"""The contacts API (``/api/v1/contacts``): read a contact with its conversations, change its name and VIP mark."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from aiohttp import web
from pydantic import StrictBool, StringConstraints

from core.codec import to_jsonable
from core.jsonweb import json_response
from core.model import Contact, Conversation
from core.scopes import Scope
from core.store import NotFound, Store
from gateway.access import PRINCIPAL, Guarded, needs
from gateway.api import PREFIX, Body, json_body, json_errors
from gateway.audit import Auditor


class ContactPatch(Body):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None
    vip: StrictBool | None = None


class ContactsApi:
    def __init__(self, store: Store, auditor: Auditor) -> None:
        self._store = store
        self._audit = auditor

    def routes(self) -> list[Guarded]:
        one = f"{PREFIX}/contacts/{{contact}}"
        return [
            needs(Scope.CONTACTS_READ, web.get(one, json_errors(self.get_contact))),
            needs(Scope.CONTACTS_WRITE, web.patch(one, json_errors(self.patch_contact))),
        ]

    async def _visible(self, request: web.Request) -> tuple[Contact, list[Conversation]]:
        """The contact and the conversations the token may see. An inbox-limited token sees a contact only
        through its inboxes' conversations, and only the addresses those use: the customer's phone number
        from another inbox is not its business."""
        ref = request.match_info["contact"]
        contact = await self._store.get_contact(ref)
        if contact is None:
            raise NotFound(f"no contact {ref!r}")
        principal = request[PRINCIPAL]
        conversations = [c for c in await self._store.conversations_of(contact.id) if principal.sees(c.inbox)]
        if principal.inboxes is None:
            return contact, conversations
        if not conversations:
            raise NotFound(f"no contact {ref!r}")
        used = {c.address for c in conversations}
        return dataclasses.replace(contact, identities=tuple(i for i in contact.identities if i in used)), conversations

    async def get_contact(self, request: web.Request) -> web.StreamResponse:
        contact, conversations = await self._visible(request)
        return json_response(_view(contact, conversations))

    async def patch_contact(self, request: web.Request) -> web.StreamResponse:
        patch, _ = await json_body(request, ContactPatch)
        assert isinstance(patch, ContactPatch)
        contact, conversations = await self._visible(request)
        changes: dict[str, Any] = {}
        if patch.name is not None and patch.name != contact.name:
            changes["name"] = patch.name
        if patch.vip is not None and patch.vip != contact.vip:
            changes["vip"] = patch.vip
        if changes:
            stored = await self._store.get_contact(contact.id)
            assert stored is not None
            await self._store.save_contact(dataclasses.replace(stored, **changes))
            await self._audit.record(
                request,
                action="contact.update",
                target=f"contact:{contact.id}",
                before={k: getattr(contact, k) for k in changes},
                after=changes,
            )
            contact = dataclasses.replace(contact, **changes)
        return json_response(_view(contact, conversations))


def _view(contact: Contact, conversations: list[Conversation]) -> dict[str, Any]:
    return {**to_jsonable(contact), "conversations": [to_jsonable(c) for c in conversations]}
