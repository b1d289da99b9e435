"""The contacts part of the REST API: read and edit a contact, its tickets, link identities, merge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field, StrictBool, StrictInt, StringConstraints

from core.codec import to_jsonable
from core.model import Contact
from core.store import Store
from gateway.api import PREFIX, Handler, Tag, _Body, _json_body, error, ticket_view
from gateway.contacts import ContactPatch, ContactService, IdentityTaken, parse_identity

Agent = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class ContactPatchBody(_Body):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None
    vip: StrictBool | None = None
    tags: Annotated[list[Tag], Field(max_length=50)] | None = None
    version: Annotated[StrictInt, Field(ge=1)] | None = None
    agent: Agent | None = None


class LinkBody(_Body):
    identity: Annotated[str, StringConstraints(min_length=3, max_length=300)]
    agent: Agent


class MergeBody(_Body):
    # The contact merged into this one (it stays behind as a pointer to this one).
    source: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    agent: Agent


def contact_view(contact: Contact) -> dict[str, Any]:
    return dict(to_jsonable(contact))


class ContactsApi:
    def __init__(self, store: Store, contacts: ContactService) -> None:
        self._store = store
        self._contacts = contacts

    def routes(self, guard: Callable[[Handler], Handler]) -> list[web.RouteDef]:
        """``guard``: the API's bearer check and JSON errors, wrapped around every handler."""
        return [
            web.get(f"{PREFIX}/contacts", guard(self.search)),
            web.get(f"{PREFIX}/contacts/{{contact}}", guard(self.get_contact)),
            web.patch(f"{PREFIX}/contacts/{{contact}}", guard(self.patch_contact)),
            web.get(f"{PREFIX}/contacts/{{contact}}/tickets", guard(self.tickets)),
            web.post(f"{PREFIX}/contacts/{{contact}}/identities", guard(self.link)),
            web.post(f"{PREFIX}/contacts/{{contact}}/merge", guard(self.merge)),
        ]

    async def search(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("identity")
        if not raw:
            return error(400, "bad_query", "give identity=kind:value, e.g. phone:+8613800000000")
        try:
            identity = parse_identity(raw)
        except ValueError as exc:
            return error(400, "bad_query", str(exc))
        found = await self._store.contact_by_identity(identity)
        return web.json_response({"contacts": [contact_view(found)] if found else []})

    async def get_contact(self, request: web.Request) -> web.StreamResponse:
        contact = await self._contacts.require(request.match_info["contact"])
        return web.json_response(contact_view(contact))

    async def patch_contact(self, request: web.Request) -> web.StreamResponse:
        body, raw = await _json_body(request, ContactPatchBody)
        assert isinstance(body, ContactPatchBody)
        patch = ContactPatch(
            name=body.name,
            clear_name=isinstance(raw, dict) and "name" in raw and raw["name"] is None,
            vip=body.vip,
            tags=tuple(dict.fromkeys(body.tags)) if body.tags is not None else None,
            version=body.version,
        )
        contact = await self._contacts.patch(request.match_info["contact"], patch, agent=body.agent)
        return web.json_response(contact_view(contact))

    async def tickets(self, request: web.Request) -> web.StreamResponse:
        contact = await self._contacts.require(request.match_info["contact"])
        found = await self._store.tickets_of(contact.id)
        return web.json_response({"tickets": [ticket_view(t) for t in found]})

    async def link(self, request: web.Request) -> web.StreamResponse:
        body, _ = await _json_body(request, LinkBody)
        assert isinstance(body, LinkBody)
        try:
            identity = parse_identity(body.identity)
        except ValueError as exc:
            return error(422, "invalid", str(exc))
        try:
            contact = await self._contacts.link(request.match_info["contact"], identity, by=body.agent, how="agent")
        except IdentityTaken as exc:
            return error(409, "identity_taken", str(exc))
        return web.json_response(contact_view(contact), status=201)

    async def merge(self, request: web.Request) -> web.StreamResponse:
        body, _ = await _json_body(request, MergeBody)
        assert isinstance(body, MergeBody)
        into = request.match_info["contact"]
        try:
            merged = await self._contacts.merge(body.source, into, by=body.agent, how="agent")
        except ValueError as exc:
            return error(422, "invalid", str(exc))
        return web.json_response(contact_view(merged))
