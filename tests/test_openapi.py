"""gateway/openapi.json stays honest: same routes as the app, valid schemas, and real responses match them."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from bot.setup import BotSetup
from gateway.api import OPENAPI_PATH, PREFIX
from gateway.app import GATEWAY
from tests.conftest import API_TOKEN, Gateway, make_config, started
from tests.test_api import JSON_HEADERS, all_events, all_tickets, open_ticket, oversized

DOC: dict[str, Any] = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
DOC_URI = "urn:huiliu:openapi"
REGISTRY: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(DOC))
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def validator_for(ref: str) -> Draft202012Validator:
    """A validator for the schema at JSON pointer ``ref`` inside the document; its ``#/components`` refs resolve."""
    return Draft202012Validator({"$ref": f"{DOC_URI}#/{ref}"}, registry=REGISTRY)


def component(name: str) -> Draft202012Validator:
    return validator_for(pointer("components", "schemas", name))


def follow(obj: dict[str, Any]) -> dict[str, Any]:
    """Resolve an OpenAPI (not JSON Schema) ``$ref`` such as ``#/components/responses/NotFound``."""
    while "$ref" in obj:
        target: Any = DOC
        for part in obj["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        obj = target
    return obj


def documented_response(method: str, template: str, status: int) -> tuple[dict[str, Any], str]:
    """The response object for ``status`` and the JSON pointer of its application/json schema."""
    operation = DOC["paths"][template][method.lower()]
    responses = operation["responses"]
    assert str(status) in responses, f"{method} {template} does not document status {status}"
    raw = responses[str(status)]
    base: tuple[str, ...]
    if "$ref" in raw:
        name = raw["$ref"].rsplit("/", 1)[1]
        base = ("components", "responses", name)
    else:
        base = ("paths", template, method.lower(), "responses", str(status))
    response = follow(raw)
    assert "application/json" in response["content"]
    return response, pointer(*base, "content", "application/json", "schema")


def assert_documented(
    method: str, template: str, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    response, schema_ref = documented_response(method, template, status)
    errors = sorted(validator_for(schema_ref).iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, f"{method} {template} → {status} does not match the document:\n" + "\n".join(
        f"  at {list(e.absolute_path)}: {e.message}" for e in errors[:10]
    )
    for name in response.get("headers", {}):
        assert headers is not None and name in headers, f"{method} {template} → {status} lacks documented {name}"


async def call(
    gw: Gateway, method: str, path: str, *, token: str | None = API_TOKEN, **kw: Any
) -> tuple[int, Any, dict[str, str]]:
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with gw.http.request(method, gw.url + PREFIX + path, headers=headers, **kw) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json(), dict(resp.headers)


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# (a) the document and the router agree --------------------------------------------------------------------------


async def test_documented_routes_are_exactly_the_apps_routes(gateway: Gateway) -> None:
    served = {
        (route.method.upper(), route.resource.canonical)
        for route in gateway.server.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith(PREFIX + "/")
        and route.method.upper() not in ("HEAD", "*")
    }
    documented = {(method.upper(), path) for path, item in DOC["paths"].items() for method in item if method in METHODS}
    assert served, "no /api/v1 routes found on the app"
    assert documented == served, f"only served: {served - documented}; only documented: {documented - served}"


def test_path_parameters_match_the_templates() -> None:
    for path, item in DOC["paths"].items():
        in_template = set(re.findall(r"{(\w+)}", path))
        shared = [follow(p) for p in item.get("parameters", [])]
        for method, operation in item.items():
            if method not in METHODS:
                continue
            params = shared + [follow(p) for p in operation.get("parameters", [])]
            declared = {p["name"] for p in params if p["in"] == "path"}
            assert declared == in_template, (method, path)
            assert all(p["required"] for p in params if p["in"] == "path")
            assert operation["responses"], (method, path)


def test_security_is_bearer_everywhere_but_the_document_itself() -> None:
    schemes = DOC["components"]["securitySchemes"]
    assert len(schemes) == 1
    (name, scheme), *_ = schemes.items()
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    assert DOC["security"] == [{name: []}]
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            if path == f"{PREFIX}/openapi.json":
                assert operation["security"] == []
            else:
                # the one scope it needs (tests/test_access.py checks it is the app's)
                (requirement,) = operation["security"]
                assert list(requirement) == [name] and len(requirement[name]) == 1, (method, path)
                assert "401" in operation["responses"], (method, path)


# (b) the document is well-formed --------------------------------------------------------------------------------


def test_document_shape() -> None:
    assert DOC["openapi"].startswith("3.1.")
    assert DOC["info"]["title"] and DOC["info"]["version"]
    ids = [op["operationId"] for item in DOC["paths"].values() for m, op in item.items() if m in METHODS]
    assert len(ids) == len(set(ids))
    for path in DOC["paths"]:
        assert path.startswith(PREFIX + "/") and ":" not in path  # template form, not aiohttp's {name:regex}


@pytest.mark.parametrize("name", sorted(DOC["components"]["schemas"]))
def test_component_schema_is_valid_json_schema(name: str) -> None:
    Draft202012Validator.check_schema(DOC["components"]["schemas"][name])


def test_every_ref_resolves() -> None:
    resolver = REGISTRY.resolver(base_uri=DOC_URI)
    refs = {node["$ref"] for node in walk(DOC) if isinstance(node, dict) and "$ref" in node}
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/"), ref
        resolver.lookup(ref)


def test_every_schema_in_the_document_is_valid() -> None:
    for node in walk(DOC["paths"]):
        if isinstance(node, dict) and isinstance(node.get("schema"), dict):
            Draft202012Validator.check_schema(node["schema"])


def test_enums_match_the_model() -> None:
    from core.model import Author, Channel, Direction, EventType, MessageKind, Priority, TicketStatus

    schemas = DOC["components"]["schemas"]
    for name, enum in [
        ("Channel", Channel),
        ("TicketStatus", TicketStatus),
        ("Priority", Priority),
        ("Author", Author),
        ("Direction", Direction),
        ("MessageKind", MessageKind),
    ]:
        assert schemas[name]["enum"] == [e.value for e in enum], name
    assert schemas["Event"]["properties"]["type"]["enum"] == [e.value for e in EventType]


def test_schemas_are_not_vacuous() -> None:
    """Validation really checks: wrong enums, missing fields and unknown fields are caught."""
    ticket: dict[str, Any] = {
        "id": "tk_1",
        "number": "HL-000001",
        "conversation_id": "cv_1",
        "contact_id": "ct_1",
        "subject": "转人工",
        "status": "new",
        "priority": "normal",
        "channel": "webchat",
        "inbox": "web",
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
        "tags": [],
        "assignee": None,
        "handoff_reason": "asked_for_human",
        "faq_tries": [],
        "version": 1,
        "fields": {"order_number": "20261201123456"},
        "category": "billing",
        "language": "zh",
        "queue": "billing",
        "skills": [],
        "routing": ["invoices"],
        "sla": None,
    }
    component("Ticket").validate(ticket)
    for bad in ({**ticket, "status": "done"}, {**ticket, "extra": 1}, {k: v for k, v in ticket.items() if k != "id"}):
        assert not component("Ticket").is_valid(bad)
    full = {**ticket, "messages": [], "conversation": None, "contact": None}
    component("TicketWithMessages").validate(full)
    assert not component("TicketWithMessages").is_valid({**full, "extra": 1})
    assert not component("TicketWithMessages").is_valid(ticket)
    assert not component("Error").is_valid({"error": "nope"})
    event = {
        "v": 1,
        "id": 1,
        "type": "conversation.status_changed",
        "occurred_at": "2026-01-01T00:00:00+00:00",
        "idempotency_key": "k",
        "ticket_id": None,
        "conversation_id": "cv_1",
        "data": {"conversation_id": "cv_1", "from": "bot", "to": "waiting_for_agent"},
    }
    component("Event").validate(event)
    assert not component("Event").is_valid({**event, "v": 2})
    assert not component("Event").is_valid({**event, "data": {"conversation_id": "cv_1", "from": "x", "to": "bot"}})
    assert not component("Event").is_valid({**event, "type": "ticket.created"})  # data has no ticket


# (c) real responses match the document --------------------------------------------------------------------------


async def test_ticket_responses_match_the_document(gateway: Gateway) -> None:
    chat, ticket = await open_ticket(gateway)
    await open_ticket(gateway)
    tickets = f"{PREFIX}/tickets"
    one = f"{PREFIX}/tickets/{{ticket}}"
    replies = f"{PREFIX}/tickets/{{ticket}}/replies"
    typing = f"{PREFIX}/tickets/{{ticket}}/typing"

    status, body, _ = await call(gateway, "GET", "/tickets")
    assert status == 200 and len(body["tickets"]) == 2
    assert_documented("GET", tickets, status, body)
    status, body, _ = await call(gateway, "GET", "/tickets", params={"limit": "1"})
    assert status == 200 and body["next_cursor"]
    assert_documented("GET", tickets, status, body)

    status, body, _ = await call(gateway, "GET", f"/tickets/{ticket['number']}")
    assert status == 200 and body["messages"] and body["conversation"] and body["contact"]
    assert_documented("GET", one, status, body)
    status, body, _ = await call(gateway, "GET", f"/tickets/{ticket['id']}", params={"include_raw": "true"})
    assert status == 200 and all("raw" in m for m in body["messages"])
    assert_documented("GET", one, status, body)

    patch = {"status": "pending", "priority": "high", "tags": ["vip"], "assignee": "wang"}
    component("TicketPatch").validate(patch)
    status, body, _ = await call(gateway, "PATCH", f"/tickets/{ticket['id']}", json=patch)
    assert status == 200
    assert_documented("PATCH", one, status, body)
    status, body, _ = await call(gateway, "PATCH", f"/tickets/{ticket['id']}", json={"assignee": None})
    assert status == 200 and body["assignee"] is None
    assert_documented("PATCH", one, status, body)

    reply = {"text": "您好", "agent": "wang"}
    component("ReplyBody").validate(reply)
    headers = {"Idempotency-Key": "k1"}
    status, body, _ = await call(gateway, "POST", f"/tickets/{ticket['id']}/replies", json=reply, headers=headers)
    assert status == 201
    assert_documented("POST", replies, status, body)
    status, body, _ = await call(gateway, "POST", f"/tickets/{ticket['id']}/replies", json=reply, headers=headers)
    assert status == 200 and body["duplicate"] is True
    assert_documented("POST", replies, status, body)

    status, body, _ = await call(gateway, "POST", f"/tickets/{ticket['id']}/typing", json={"on": True})
    assert status == 202 and body == {"delivered": True}
    assert_documented("POST", typing, status, body)
    await chat.close()
    status, body, _ = await call(gateway, "POST", f"/tickets/{ticket['id']}/typing", json={"on": False})
    assert status == 202
    assert_documented("POST", typing, status, body)

    # resolving (which also moves the conversation) answers with the documented shape too
    status, body, _ = await call(gateway, "PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved"})
    assert status == 200
    assert_documented("PATCH", one, status, body)


async def test_every_event_a_full_journey_emits_matches_the_document(gateway: Gateway) -> None:
    chat, ticket = await open_ticket(gateway)
    await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"tags": ["a"], "priority": "low"})
    await gateway.api("POST", f"/tickets/{ticket['id']}/replies", json={"text": "在的", "agent": "wang"})
    await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved", "assignee": None})
    await chat.expect("status")
    await chat.say("我想退款")  # back to the bot
    await chat.say("今天天气怎么样")  # a miss, then a no-match handoff
    await chat.say("asdkjh qwe")
    assert (await chat.expect("status"))["status"] == "waiting_for_agent"  # the ticket exists once this arrives

    events = await all_events(gateway)
    assert {e["type"] for e in events} == {
        "message.created",
        "ticket.created",
        "ticket.updated",
        "conversation.handoff",
        "conversation.status_changed",
    }
    status, body, _ = await call(gateway, "GET", "/events")
    assert status == 200 and body["events"] == events
    assert_documented("GET", f"{PREFIX}/events", status, body)
    status, body, _ = await call(gateway, "GET", "/events", params={"after": str(events[-1]["id"])})
    assert status == 200 and body["events"] == []
    assert_documented("GET", f"{PREFIX}/events", status, body)
    for ticket_body in await all_tickets(gateway):
        status, body, _ = await call(gateway, "GET", f"/tickets/{ticket_body['id']}")
        assert_documented("GET", f"{PREFIX}/tickets/{{ticket}}", status, body)


async def test_error_responses_match_the_document(gateway: Gateway) -> None:
    _, ticket = await open_ticket(gateway)
    one = f"{PREFIX}/tickets/{{ticket}}"
    replies = f"{PREFIX}/tickets/{{ticket}}/replies"

    for token in (None, "wrong-token-123"):
        status, body, headers = await call(gateway, "GET", "/tickets", token=token)
        assert status == 401
        assert_documented("GET", f"{PREFIX}/tickets", status, body, headers)
        status, body, headers = await call(gateway, "GET", "/events", token=token)
        assert status == 401
        assert_documented("GET", f"{PREFIX}/events", status, body, headers)

    status, body, _ = await call(gateway, "GET", "/tickets/HL-999999")
    assert status == 404
    assert_documented("GET", one, status, body)
    status, body, _ = await call(gateway, "PATCH", "/tickets/nope", json={"status": "open"})
    assert status == 404
    assert_documented("PATCH", one, status, body)
    status, body, _ = await call(gateway, "POST", "/tickets/nope/replies", json={"text": "hi"})
    assert status == 404
    assert_documented("POST", replies, status, body)

    for bad in ({"status": "done"}, {"priority": "asap"}, {"unknown": 1}, {"assignee": ""}):
        assert not component("TicketPatch").is_valid(bad)  # the document rejects what the server rejects
        status, body, _ = await call(gateway, "PATCH", f"/tickets/{ticket['id']}", json=bad)
        assert status == 422
        assert_documented("PATCH", one, status, body)
    for bad in ({"text": ""}, {}, {"text": "x", "cc": "y"}):
        assert not component("ReplyBody").is_valid(bad)
        status, body, _ = await call(gateway, "POST", f"/tickets/{ticket['id']}/replies", json=bad)
        assert status == 422
        assert_documented("POST", replies, status, body)

    status, body, _ = await call(gateway, "PATCH", f"/tickets/{ticket['id']}", data=b"{", headers={})
    assert status == 400
    assert_documented("PATCH", one, status, body)
    status, body, _ = await call(
        gateway, "POST", f"/tickets/{ticket['id']}/replies", data=oversized(gateway), headers=JSON_HEADERS
    )
    assert status == 413
    assert_documented("POST", replies, status, body)
    status, body, _ = await call(gateway, "GET", "/tickets", params={"limit": "0"})
    assert status == 400
    assert_documented("GET", f"{PREFIX}/tickets", status, body)
    status, body, _ = await call(gateway, "GET", "/events", params={"after": "x"})
    assert status == 400
    assert_documented("GET", f"{PREFIX}/events", status, body)
    status, body, _ = await call(
        gateway, "POST", f"/tickets/{ticket['id']}/replies", json={"text": "x"}, headers={"Idempotency-Key": "k" * 300}
    )
    assert status == 400
    assert_documented("POST", replies, status, body)


# (d) the server serves this very document -----------------------------------------------------------------------


async def test_served_document_is_the_file_and_needs_no_token(gateway: Gateway) -> None:
    async with gateway.http.get(gateway.url + f"{PREFIX}/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        served = await resp.json()
    assert served == DOC
    status, body, _ = await call(gateway, "GET", "/openapi.json", token="wrong-token-123")
    assert status == 200 and body == DOC


async def test_the_customer_loop_and_contacts_match_the_document(gateway: Gateway) -> None:
    """Survey, rating, callback and every contacts endpoint: responses and events as documented."""
    chat, ticket = await open_ticket(gateway)
    await gateway.api("POST", f"/tickets/{ticket['id']}/replies", json={"text": "在的", "agent": "wang"})
    await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved"})
    await chat.expect("status")
    await chat.expect("message")  # the survey
    await chat.say("1 太慢了")  # low: the ticket reopens for a callback
    contact = ticket["contact_id"]
    one = f"{PREFIX}/contacts/{{contact}}"
    for method, path, template, kw in [
        ("GET", f"/contacts/{contact}", one, {}),
        ("PATCH", f"/contacts/{contact}", one, {"json": {"vip": True, "tags": ["x"]}}),
        ("PATCH", f"/contacts/{contact}", one, {"json": {"vip": False, "version": 1}}),
        ("GET", f"/contacts/{contact}/tickets", f"{one}/tickets", {}),
        (
            "POST",
            f"/contacts/{contact}/identities",
            f"{one}/identities",
            {"json": {"identity": "email:a@b.cn"}},
        ),
        ("GET", "/contacts", f"{PREFIX}/contacts", {"params": {"identity": "email:a@b.cn"}}),
        ("GET", "/contacts", f"{PREFIX}/contacts", {"params": {"identity": "nonsense"}}),
        ("GET", "/contacts/ct_none", one, {}),
    ]:
        status, body, headers = await call(gateway, method, path, **kw)
        assert_documented(method, template, status, body, headers)
    _, other = await open_ticket(gateway)
    status, body, _ = await call(gateway, "POST", f"/contacts/{contact}/merge", json={"source": other["contact_id"]})
    assert_documented("POST", f"{one}/merge", status, body)
    events = await all_events(gateway)
    kinds = {e["type"] for e in events}
    assert {
        "ticket.rated",
        "ticket.callback_requested",
        "contact.updated",
        "contact.identity_linked",
        "contact.merged",
    } <= kinds
    status, body, _ = await call(gateway, "GET", "/events", params={"limit": "1000"})
    assert_documented("GET", f"{PREFIX}/events", status, body)


async def test_a_journey_with_service_rules_and_sla_matches_the_document(tmp_path: Path, bot_setup: BotSetup) -> None:
    """Fields, routing, store-picked assignee, SLA clocks, pending, warnings, breaches and escalations: every
    ticket and event they produce is as documented."""
    from tests.rules.sample import sample_rules
    from tests.test_sla_runner import TUESDAY_9, ManualClock

    clock = ManualClock(TUESDAY_9)
    config = await asyncio.to_thread(make_config, tmp_path, **sample_rules())
    async with started(config, bot_setup, clock) as gw:
        app = gw.server.app[GATEWAY]
        chat = await gw.chat()
        await chat.say("转人工")
        await chat.ws.send_json({"type": "message", "id": "x1", "text": "发票开错了，订单号 20261201123456，¥99"})
        await chat.expect("ack")
        await app.tasks.drain(5)
        for minutes in (100, 125):
            clock.set(TUESDAY_9 + timedelta(minutes=minutes))
            await app.sla.run_once()
        status, page, _ = await call(gw, "GET", "/tickets", params={"sla": "breached", "queue": "billing"})
        assert status == 200 and len(page["tickets"]) == 1
        assert_documented("GET", f"{PREFIX}/tickets", status, page)
        number = page["tickets"][0]["number"]
        await gw.api("POST", f"/tickets/{number}/replies", json={"text": "好的", "agent": "li"})
        status, body, _ = await call(gw, "PATCH", f"/tickets/{number}", json={"status": "pending"})
        assert status == 200 and body["sla"]["paused"]
        assert_documented("PATCH", f"{PREFIX}/tickets/{{ticket}}", status, body)
        status, body, _ = await call(gw, "GET", f"/tickets/{number}")
        assert_documented("GET", f"{PREFIX}/tickets/{{ticket}}", status, body)
        status, body, _ = await call(gw, "GET", "/events", params={"limit": "1000"})
        types = {e["type"] for e in body["events"]}
        assert {"ticket.sla_warning", "ticket.sla_breached", "ticket.updated"} <= types
        assert_documented("GET", f"{PREFIX}/events", status, body)
        await chat.close()
