"""The contacts API (``/api/v1/contacts``): read a contact with its conversations and tickets, find one by identity,
change name, VIP mark and tags, link an identity, merge two; every write audited and evented."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field, StrictBool, StrictInt, StringConstraints

from core.codec import to_jsonable
from core.jsonweb import json_response
from core.model import Contact, Conversation
from core.scopes import Scope
from core.store import NotFound, Store
from gateway.access import PRINCIPAL, Guarded, needs
from gateway.api import PREFIX, Body, Tag, error, json_body, json_errors, ticket_view
from gateway.audit import Auditor
from gateway.contacts import ContactPatch, ContactService, IdentityTaken, parse_identity


class ContactPatchBody(Body):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None
    vip: StrictBool | None = None
    tags: Annotated[list[Tag], Field(max_length=50)] | None = None
    version: Annotated[StrictInt, Field(ge=1)] | None = None


class LinkBody(Body):
    identity: Annotated[str, StringConstraints(min_length=3, max_length=300)]


class MergeBody(Body):
    # The contact merged into this one (it stays behind as a pointer to this one).
    source: Annotated[str, StringConstraints(min_length=1, max_length=100)]


def _view(contact: Contact, conversations: list[Conversation]) -> dict[str, Any]:
    return {**to_jsonable(contact), "conversations": [to_jsonable(c) for c in conversations]}


class ContactsApi:
    def __init__(self, store: Store, contacts: ContactService, auditor: Auditor) -> None:
        self._store = store
        self._contacts = contacts
        self._audit = auditor

    def routes(self) -> list[Guarded]:
        one = f"{PREFIX}/contacts/{{contact}}"
        read, write = Scope.CONTACTS_READ, Scope.CONTACTS_WRITE
        return [
            needs(read, web.get(f"{PREFIX}/contacts", json_errors(self.search))),
            needs(read, web.get(one, json_errors(self.get_contact))),
            needs(write, web.patch(one, json_errors(self.patch_contact))),
            needs(read, web.get(f"{one}/tickets", json_errors(self.tickets))),
            needs(write, web.post(f"{one}/identities", json_errors(self.link))),
            needs(write, web.post(f"{one}/merge", json_errors(self.merge))),
        ]

    async def _visible(self, request: web.Request, ref: str | None = None) -> tuple[Contact, list[Conversation]]:
        """The contact and the conversations the token may see. An inbox-limited token sees a contact only
        through its inboxes' conversations, and only the addresses those use: the customer's phone number
        from another inbox is not its business."""
        ref = ref or request.match_info["contact"]
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

    async def search(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("identity")
        if not raw:
            return error(400, "bad_query", "give identity=kind:value, e.g. phone:+8613800000000")
        try:
            identity = parse_identity(raw)
        except ValueError as exc:
            return error(400, "bad_query", str(exc))
        found = await self._store.contact_by_identity(identity)
        if found is None:
            return json_response({"contacts": []})
        try:
            contact, conversations = await self._visible(request, found.id)
        except NotFound:
            return json_response({"contacts": []})
        if identity not in contact.identities:  # an inbox-limited token learns nothing of other inboxes' addresses
            return json_response({"contacts": []})
        return json_response({"contacts": [_view(contact, conversations)]})

    async def get_contact(self, request: web.Request) -> web.StreamResponse:
        contact, conversations = await self._visible(request)
        return json_response(_view(contact, conversations))

    async def patch_contact(self, request: web.Request) -> web.StreamResponse:
        body, raw = await json_body(request, ContactPatchBody)
        assert isinstance(body, ContactPatchBody)
        before, conversations = await self._visible(request)
        actor = request[PRINCIPAL].name
        patch = ContactPatch(
            name=body.name,
            clear_name=isinstance(raw, dict) and "name" in raw and raw["name"] is None,
            vip=body.vip,
            tags=tuple(dict.fromkeys(body.tags)) if body.tags is not None else None,
            version=body.version,
        )
        saved = await self._contacts.patch(before.id, patch, agent=actor)
        fields = ("name", "vip", "tags")
        await self._audit.record_change(
            request,
            action="contact.update",
            target=f"contact:{before.id}",
            was={f: getattr(before, f) for f in fields},
            now={f: getattr(saved, f) for f in fields},
        )
        contact, conversations = await self._visible(request)
        return json_response(_view(contact, conversations))

    async def tickets(self, request: web.Request) -> web.StreamResponse:
        contact, _ = await self._visible(request)
        principal = request[PRINCIPAL]
        found = [t for t in await self._store.tickets_of(contact.id) if principal.sees(t.inbox)]
        return json_response({"tickets": [ticket_view(t) for t in found]})

    async def link(self, request: web.Request) -> web.StreamResponse:
        body, _ = await json_body(request, LinkBody)
        assert isinstance(body, LinkBody)
        try:
            identity = parse_identity(body.identity)
        except ValueError as exc:
            return error(422, "invalid", f"identity: {exc}")
        contact, _ = await self._visible(request)
        try:
            await self._contacts.link(contact.id, identity, by=request[PRINCIPAL].name, how="agent")
        except IdentityTaken as exc:
            return error(409, "identity_taken", str(exc))
        await self._audit.record(
            request, action="contact.link_identity", target=f"contact:{contact.id}", after={"identity": str(identity)}
        )
        linked, conversations = await self._visible(request)
        return json_response(_view(linked, conversations), status=201)

    async def merge(self, request: web.Request) -> web.StreamResponse:
        body, _ = await json_body(request, MergeBody)
        assert isinstance(body, MergeBody)
        into, _ = await self._visible(request)
        source, _ = await self._visible(request, body.source)  # a token must see both
        try:
            await self._contacts.merge(source.id, into.id, by=request[PRINCIPAL].name, how="agent")
        except ValueError as exc:
            return error(422, "invalid", str(exc))
        await self._audit.record(
            request,
            action="contact.merge",
            target=f"contact:{into.id}",
            before={"source": source.id, "identities": [str(i) for i in source.identities]},
            after={"merged_into": into.id},
        )
        merged, conversations = await self._visible(request)
        return json_response(_view(merged, conversations))
