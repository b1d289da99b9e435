"""The REST API helpdesks read tickets from and reply through (``/api/v1``, bearer tokens)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from core.codec import to_jsonable
from core.jsonweb import json_response
from core.model import Channel, DownstreamEvent, Message, Priority, Ticket, TicketStatus
from core.scopes import Scope
from core.store import NotFound, Store, TicketQuery, VersionConflict
from core.store.base import DeadLetter
from gateway.access import PRINCIPAL, PUBLIC, Guarded, Handler, Principal, error, needs
from gateway.audit import Auditor
from gateway.downstream.webhooks import UnknownSubscription, WebhookDispatcher
from gateway.query import cursor_problem, int_param
from gateway.tickets import IdempotencyMismatch, TicketChange, TicketConflict, TicketService

PREFIX = "/api/v1"
OPENAPI_PATH = Path(__file__).with_name("openapi.json")
__all__ = ["PREFIX", "Api", "Body", "Forbidden", "Handler", "error", "json_body", "json_errors"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class TicketPatch(Body):
    status: TicketStatus | None = None
    priority: Priority | None = None
    tags: Annotated[list[Tag], Field(max_length=50)] | None = None
    assignee: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


class ReplyBody(Body):
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20000)]
    agent: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


class TypingBody(Body):
    on: bool


class _Invalid(Exception):
    """The request is well-formed JSON but says something we cannot accept (422)."""

    def __init__(self, message: str) -> None:
        self.message = message


class _BadJson(Exception):
    pass


async def json_body(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        raw = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        raise _BadJson from None
    try:
        return model.model_validate(raw), raw
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise _Invalid(details) from None


def message_view(message: Message, *, include_raw: bool = False) -> dict[str, Any]:
    body = to_jsonable(message)
    if not include_raw:
        body.pop("raw", None)
    return dict(body)


def ticket_view(ticket: Ticket) -> dict[str, Any]:
    return dict(to_jsonable(ticket))


class Forbidden(Exception):
    """The token may not do this with this body (API: 403)."""

    def __init__(self, message: str) -> None:
        self.message = message


def json_errors(handler: Handler) -> Handler:
    """The domain's exceptions as JSON errors (the access middleware has checked the token and scope)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except _BadJson:
            return error(400, "bad_json", "request body is not valid JSON")
        except _Invalid as exc:
            return error(422, "invalid", exc.message)
        except NotFound as exc:
            return error(404, "not_found", str(exc))
        except (VersionConflict, TicketConflict) as exc:
            return error(409, "conflict", str(exc))
        except IdempotencyMismatch as exc:
            return error(422, "idempotency_key_reused", str(exc))
        except Forbidden as exc:
            return error(403, "forbidden", exc.message)

    return guarded


class Api:
    def __init__(
        self,
        store: Store,
        tickets: TicketService,
        typing: Callable[..., Any],
        auditor: Auditor,
        *,
        webhooks: WebhookDispatcher | None = None,
    ) -> None:
        self._store = store
        self._webhooks = webhooks
        self._tickets = tickets
        self._typing = typing
        self._audit = auditor

    def routes(self) -> list[Guarded]:
        j = json_errors
        return [
            needs(PUBLIC, web.get(f"{PREFIX}/openapi.json", self.openapi)),
            needs(Scope.TICKETS_READ, web.get(f"{PREFIX}/tickets", j(self.list_tickets))),
            needs(Scope.TICKETS_READ, web.get(f"{PREFIX}/tickets/{{ticket}}", j(self.get_ticket))),
            needs(Scope.TICKETS_WRITE, web.patch(f"{PREFIX}/tickets/{{ticket}}", j(self.patch_ticket))),
            needs(Scope.TICKETS_WRITE, web.post(f"{PREFIX}/tickets/{{ticket}}/replies", j(self.post_reply))),
            needs(Scope.TICKETS_WRITE, web.post(f"{PREFIX}/tickets/{{ticket}}/typing", j(self.post_typing))),
            needs(Scope.TICKETS_READ, web.get(f"{PREFIX}/events", j(self.list_events))),
            needs(Scope.WEBHOOKS_ADMIN, web.get(f"{PREFIX}/webhooks/dead-letters", j(self.list_dead_letters))),
            needs(
                Scope.WEBHOOKS_ADMIN,
                web.post(f"{PREFIX}/webhooks/dead-letters/{{letter}}/replay", j(self.replay_dead_letter)),
            ),
        ]

    async def _ticket(self, request: web.Request) -> Ticket:
        """The path's ticket, if the token may see its inbox: one it may not see is as absent as a missing one."""
        ref = request.match_info["ticket"]
        ticket = await self._store.get_ticket(ref)
        if ticket is None or not request[PRINCIPAL].sees(ticket.inbox):
            raise NotFound(f"no ticket {ref!r}")
        return ticket

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(OPENAPI_PATH, headers={"Content-Type": "application/json"})

    async def list_tickets(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            status = TicketStatus(q["status"]) if "status" in q else None
            channel = Channel(q["channel"]) if "channel" in q else None
        except ValueError as exc:
            return error(400, "bad_query", str(exc))
        since = None
        if "updated_since" in q:
            try:
                since = datetime.fromisoformat(q["updated_since"])
            except ValueError:
                return error(400, "bad_query", "updated_since must be an ISO 8601 timestamp with a timezone")
            if since.tzinfo is None:
                return error(400, "bad_query", "updated_since must carry a timezone, e.g. 2026-01-01T00:00:00+08:00")
        limit = int_param(q.get("limit"), default=50, low=1, high=200)
        if limit is None:
            return error(400, "bad_query", "limit must be an integer from 1 to 200")
        cursor = q.get("cursor")
        if (problem := cursor_problem(cursor, 2)) is not None:
            return error(400, "bad_query", problem)
        sla = q.get("sla")
        if sla is not None and sla not in ("at_risk", "breached"):
            return error(400, "bad_query", "sla must be at_risk or breached")
        page = await self._store.list_tickets(
            TicketQuery(
                status=status,
                channel=channel,
                updated_since=since,
                queue=q.get("queue"),
                category=q.get("category"),
                assignee=q.get("assignee"),
                sla=sla,
                cursor=cursor,
                limit=limit,
                inboxes=request[PRINCIPAL].inboxes,
            )
        )
        return json_response({"tickets": [ticket_view(t) for t in page.tickets], "next_cursor": page.next_cursor})

    async def get_ticket(self, request: web.Request) -> web.StreamResponse:
        ticket = await self._ticket(request)
        include_raw = request.query.get("include_raw") in ("1", "true")
        messages = await ticket_transcript(self._store, ticket)
        conversation = await self._store.get_conversation(ticket.conversation_id)
        contact = await self._store.get_contact(ticket.contact_id)
        body = ticket_view(ticket)
        body["messages"] = [message_view(m, include_raw=include_raw) for m in messages]
        body["conversation"] = to_jsonable(conversation) if conversation else None
        body["contact"] = to_jsonable(contact) if contact else None
        return json_response(body)

    async def patch_ticket(self, request: web.Request) -> web.StreamResponse:
        patch, raw = await json_body(request, TicketPatch)
        assert isinstance(patch, TicketPatch)
        change = TicketChange(
            status=patch.status,
            priority=patch.priority,
            tags=tuple(dict.fromkeys(patch.tags)) if patch.tags is not None else None,
            assignee=patch.assignee,
            clear_assignee=isinstance(raw, dict) and "assignee" in raw and raw["assignee"] is None,
        )
        before = await self._ticket(request)
        ticket = await self._tickets.change(before.id, change)
        await self._audit.record_change(
            request,
            action="ticket.update",
            target=f"ticket:{ticket.number}",
            was=_ticket_fields(before),
            now=_ticket_fields(ticket),
        )
        return json_response(ticket_view(ticket))

    async def post_reply(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (0 < len(key) <= 200 and key.isprintable()):
            return error(400, "bad_header", "Idempotency-Key must be 1-200 printable characters")
        body, _ = await json_body(request, ReplyBody)
        assert isinstance(body, ReplyBody)
        ticket = await self._ticket(request)
        principal = request[PRINCIPAL]
        agent, via = _author(principal, body.agent)
        result = await self._tickets.reply(ticket.id, body.text, agent=agent, via=via, idempotency_key=key)
        if result.created:
            await self._audit.record(
                request,
                action="ticket.reply",
                target=f"ticket:{ticket.number}",
                after={"message_id": result.message.id, "delivery": result.delivery, "chars": len(body.text)},
                on_behalf_of=agent if via else None,
            )
        return json_response(
            {"message": message_view(result.message), "delivery": result.delivery, "duplicate": not result.created},
            status=201 if result.created else 200,
        )

    async def post_typing(self, request: web.Request) -> web.StreamResponse:
        body, _ = await json_body(request, TypingBody)
        assert isinstance(body, TypingBody)
        ticket = await self._ticket(request)
        delivered = await self._typing(ticket, body.on)
        return json_response({"delivered": delivered}, status=202)

    async def list_events(self, request: web.Request) -> web.StreamResponse:
        after = int_param(request.query.get("after"), default=0, low=0, high=2**62)
        limit = int_param(request.query.get("limit"), default=100, low=1, high=1000)
        if after is None or limit is None:
            return error(400, "bad_query", "after must be a non-negative integer and limit from 1 to 1000")
        found = await self._store.events_after(after, limit)
        shown = await self._visible_events(request[PRINCIPAL], found)
        return json_response({"events": [e.to_json() for e in shown], "next_after": found[-1].seq if found else after})

    async def _visible_events(self, principal: Principal, found: list[DownstreamEvent]) -> list[DownstreamEvent]:
        """An inbox-limited token sees the events of its inboxes' conversations only."""
        if principal.inboxes is None:
            return found
        inbox_of: dict[str, str | None] = {}
        shown = []
        for event in found:
            cid = event.conversation_id
            if cid is None:
                continue
            if cid not in inbox_of:
                conversation = await self._store.get_conversation(cid)
                inbox_of[cid] = conversation.inbox if conversation else None
            inbox = inbox_of[cid]
            if inbox is not None and principal.sees(inbox):
                shown.append(event)
        return shown

    async def list_dead_letters(self, request: web.Request) -> web.StreamResponse:
        limit = int_param(request.query.get("limit"), default=100, low=1, high=1000)
        if limit is None:
            return error(400, "bad_query", "limit must be an integer from 1 to 1000")
        letters = await self._store.dead_letters(subscription=request.query.get("subscription"), limit=limit)
        return json_response({"dead_letters": [dead_letter_view(d) for d in letters]})

    async def replay_dead_letter(self, request: web.Request) -> web.StreamResponse:
        letter = await self._store.get_dead_letter(request.match_info["letter"])
        if letter is None:
            raise NotFound(f"no dead letter {request.match_info['letter']!r}")
        if self._webhooks is None:
            return error(409, "conflict", "webhooks are not configured")
        try:
            result = await self._webhooks.replay(letter)
        except UnknownSubscription as exc:
            return error(409, "conflict", str(exc))
        if not result.delivered:
            return error(502, "delivery_failed", f"the receiver did not take it: {result.error}")
        await self._audit.record(
            request,
            action="dead_letter.replay",
            target=f"dead_letter:{letter.id}",
            before={"subscription": letter.subscription, "event": letter.event.type, "attempts": letter.attempts},
            after={"delivered": True, "status": result.status},
        )
        return json_response({"id": letter.id, "delivered": True, "status": result.status})


async def ticket_transcript(store: Store, ticket: Ticket) -> list[Message]:
    """The ticket's messages on its own conversation, then those of follow-ups that joined it from the customer's
    other conversations, in time order."""
    own = await store.messages(ticket.conversation_id, ticket_id=ticket.id)
    joined = [
        m
        for c in await store.conversations_of(ticket.contact_id)
        if c.id != ticket.conversation_id
        for m in await store.messages(c.id, ticket_id=ticket.id)
    ]
    return sorted([*own, *joined], key=lambda m: m.created_at) if joined else own


def dead_letter_view(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "subscription": letter.subscription,
        "event": letter.event.to_json(),
        "attempts": letter.attempts,
        "error": letter.error,
        "failed_at": letter.failed_at.isoformat(),
    }


def _ticket_fields(ticket: Ticket) -> dict[str, Any]:
    return {
        "status": ticket.status,
        "priority": ticket.priority,
        "tags": list(ticket.tags),
        "assignee": ticket.assignee,
    }


def _author(principal: Principal, named: str | None) -> tuple[str, str | None]:
    """Who wrote a reply, and through which integration: the token's own name, unless it may act for agents.

    A body naming someone else without ``agents:act_as`` is refused, not silently renamed: the caller
    believes it posts as that agent and must learn it does not.
    """
    if named is None or named == principal.name:
        return principal.name, None
    if not principal.may(Scope.AGENTS_ACT_AS):
        raise Forbidden(
            f"agent: this token ({principal.name}) may only reply as itself; "
            f"replying for {named!r} needs the scope {Scope.AGENTS_ACT_AS}"
        )
    return named, principal.name
