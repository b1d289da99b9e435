"""Who may do what, through the real server: scopes per route, inbox limits, the author of a change, the audit."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot.setup import BotSetup
from core.config import ConfigError, parse_config
from core.scopes import Scope, expand
from gateway.access import PUBLIC, Access, Tokens, exposure_problem
from gateway.api import PREFIX
from gateway.app import ACCESS, GATEWAY, build_bot
from tests.conftest import API_TOKEN, ROOT, ChatClient, Gateway, make_config, started
from tests.test_api import all_tickets, open_ticket
from tests.test_openapi import DOC, METHODS, assert_documented

SCOPE_TOKENS = {scope: f"tok-{scope.value.replace(':', '-')}-0123456789" for scope in Scope}
WANG = "wang-token-0123456789"
ZENDESK = "zendesk-token-0123456789"
SHOP_DESK = "shop-desk-token-0123456789"
SHOP_CRM = "shop-crm-token-0123456789"
OPS = API_TOKEN  # the shared helpers (open_ticket, all_tickets) use it: here an admin given by its hash
CTI_TOKEN = "cti-token-0123456789"


def tokens() -> list[dict[str, Any]]:
    per_scope = [
        {"name": f"only-{s.value.replace(':', '-')}", "token": t, "scopes": [s.value]} for s, t in SCOPE_TOKENS.items()
    ]
    return [
        *per_scope,
        {"name": "wang", "token": WANG, "scopes": ["tickets:write"]},
        {"name": "zendesk-sync", "token": ZENDESK, "scopes": ["tickets:write", "agents:act_as"]},
        {"name": "shop-desk", "token": SHOP_DESK, "scopes": ["tickets:write"], "inboxes": ["shop"]},
        {"name": "shop-crm", "token": SHOP_CRM, "scopes": ["contacts:write"], "inboxes": ["shop"]},
        {"name": "ops", "token_sha256": hashlib.sha256(OPS.encode()).hexdigest(), "scopes": ["admin"]},
    ]


INBOXES: list[dict[str, Any]] = [
    {"name": "web", "channel": "webchat", "allowed_origins": ["*"]},
    {"name": "shop", "channel": "webchat", "path": "/shop", "allowed_origins": ["*"]},
    {"name": "oa", "channel": "wechat", "token": "wechat-token", "app_id": "wx0123456789abcdef",
     "app_secret": "secret", "api_base": "http://127.0.0.1:9"},
    {"name": "tel", "channel": "phone", "token": CTI_TOKEN},
]  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def gw(tmp_path: Path, clock: Clock) -> AsyncIterator[Gateway]:
    kb = tmp_path / "faq.yaml"  # a copy: the FAQ admin writes to it
    await asyncio.to_thread(shutil.copy, ROOT / "kb" / "faq.yaml", kb)
    config = make_config(
        tmp_path,
        api={"tokens": tokens(), "audit_retention_days": 30},
        inboxes=INBOXES,
        bot={"kb": str(kb), "kb_watch_s": 0},
    )
    bot = await asyncio.to_thread(build_bot, config)  # its own KB file: the shared bot's is the repository's
    async with started(config, bot, clock=clock) as gateway:
        yield gateway


async def shop_ticket(gw: Gateway) -> tuple[ChatClient, dict[str, Any]]:
    ws = await gw.http.ws_connect(gw.url.replace("http://", "ws://") + "/shop/ws")
    chat = ChatClient(ws)
    await chat.hello(None, 0)
    await chat.say("转人工")
    assert (await chat.expect("status"))["status"] == "waiting_for_agent"
    shop = [t for t in await all_tickets(gw) if t["inbox"] == "shop"]
    return chat, shop[-1]


def api_routes(app: web.Application) -> list[tuple[str, str, Any]]:
    access = app[ACCESS]
    found = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or not resource.canonical.startswith(PREFIX) or route.method == "HEAD":
            continue
        found.append((route.method, resource.canonical, access.requirement(route.method, resource.canonical)))
    return found


# the route table -----------------------------------------------------------------------------------------------


async def test_every_route_declares_what_it_needs(gw: Gateway) -> None:
    app = gw.server.app
    undeclared = [
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and app[ACCESS].requirement(route.method, route.resource.canonical) is None
    ]
    assert undeclared == []
    connector_paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert {"/shop/ws", "/wechat/oa", "/healthz"} <= connector_paths  # the walk did see the channels' routes


async def test_a_route_added_without_a_declaration_is_refused(aiohttp_client: Any) -> None:
    access = Access(Tokens(parse_config({"api": {"tokens": [OPS]}}).api.tokens))
    app = web.Application(middlewares=[access.middleware])

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"secret": True})

    app.router.add_get("/api/v1/forgotten", handler)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    resp = await client.get("/api/v1/forgotten", headers={"Authorization": f"Bearer {OPS}"})
    assert resp.status == 500 and (await resp.json())["error"]["code"] == "undeclared_route"


async def test_the_document_names_the_scope_each_route_needs(gw: Gateway) -> None:
    declared = {(m, p): needed for m, p, needed in api_routes(gw.server.app)}
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            needed = declared[(method.upper(), path)]
            if needed is PUBLIC:
                assert operation["security"] == []
            else:
                assert operation["security"] == [{"bearer": [str(needed)]}], (method, path)
                assert "403" in operation["responses"], (method, path)


@pytest.mark.parametrize("scope", list(Scope))
async def test_a_scope_opens_its_routes_and_no_other(gw: Gateway, scope: Scope) -> None:
    granted = expand([scope])
    routes = [(m, p, n) for m, p, n in api_routes(gw.server.app) if n is not PUBLIC]
    assert len(routes) >= 14
    for method, template, needed in routes:
        path = re.sub(r"{[^}]+}", "nope", template).removeprefix(PREFIX)
        body = {} if method in ("POST", "PUT", "PATCH") else None
        status, payload = await gw.api(method, path, token=SCOPE_TOKENS[scope], json=body)
        if needed in granted:
            assert status not in (401, 403), (scope, method, template, payload)
        else:
            assert status == 403, (scope, method, template, payload)
            assert payload["error"]["code"] == "forbidden" and str(needed) in payload["error"]["message"]
        status, _ = await gw.api(method, path, token="not-a-token-0123456789", json=body)
        assert status == 401


async def test_a_refused_write_changes_nothing(gw: Gateway) -> None:
    chat, ticket = await open_ticket(gw)
    reader = SCOPE_TOKENS[Scope.TICKETS_READ]
    status, _ = await gw.api("PATCH", f"/tickets/{ticket['id']}", token=reader, json={"status": "resolved"})
    assert status == 403
    status, _ = await gw.api("POST", f"/tickets/{ticket['id']}/replies", token=reader, json={"text": "hi"})
    assert status == 403
    status, after = await gw.api("GET", f"/tickets/{ticket['id']}", token=reader)
    assert after["version"] == ticket["version"] and not [m for m in after["messages"] if m["author"] == "agent"]
    status, faq = await gw.api("PUT", "/faqs/refund", token=WANG, json={"questions": ["x"], "answer": "http://evil"})
    assert status == 403 and "kb:admin" in faq["error"]["message"]
    await chat.close()


# inbox limits --------------------------------------------------------------------------------------------------


async def test_an_inbox_limited_token_sees_only_its_inboxes(gw: Gateway) -> None:
    web_chat, web_ticket = await open_ticket(gw)
    shop_chat, mine = await shop_ticket(gw)

    status, body = await gw.api("GET", "/tickets", token=SHOP_DESK)
    assert status == 200 and [t["id"] for t in body["tickets"]] == [mine["id"]]
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "", None),
        ("PATCH", "", {"status": "resolved"}),
        ("POST", "/replies", {"text": "您好"}),
        ("POST", "/typing", {"on": True}),
    ]
    for method, suffix, body in calls:
        for ref in (web_ticket["id"], web_ticket["number"]):
            status, payload = await gw.api(method, f"/tickets/{ref}{suffix}", token=SHOP_DESK, json=body)
            _, absent = await gw.api(method, f"/tickets/HL-999999{suffix}", token=SHOP_DESK, json=body)
            assert status == 404, (method, suffix, payload)  # not 403: another inbox's ticket does not exist for it
            assert payload["error"]["code"] == absent["error"]["code"] == "not_found"
    _, untouched = await gw.api("GET", f"/tickets/{web_ticket['id']}", token=OPS)
    assert untouched["version"] == web_ticket["version"]
    assert not [m for m in untouched["messages"] if m["author"] == "agent"]

    status, _ = await gw.api("POST", f"/tickets/{mine['id']}/replies", token=SHOP_DESK, json={"text": "在的"})
    assert status == 201
    status, events = await gw.api("GET", "/events", token=SHOP_DESK, params={"limit": "1000"})
    assert status == 200 and events["events"]
    assert {e["conversation_id"] for e in events["events"]} == {mine["conversation_id"]}
    _, everything = await gw.api("GET", "/events", token=OPS, params={"limit": "1000"})
    assert events["next_after"] == everything["next_after"]  # the feed's position moves past what it may not see
    await web_chat.close()
    await shop_chat.close()


async def test_a_token_for_an_unknown_inbox_or_scope_stops_the_start(tmp_path: Path) -> None:
    entry = {"name": "x", "token": "0123456789abcdefgh", "scopes": ["tickets:read"], "inboxes": ["web", "shpo"]}
    with pytest.raises(ConfigError, match=r"api\.tokens\[0\]\.inboxes\[1\]: unknown inbox 'shpo'"):
        make_config(tmp_path, api={"tokens": [entry]})
    with pytest.raises(ConfigError, match=r"api\.tokens\[0\]\.scopes\[0\]") as caught:
        make_config(tmp_path, api={"tokens": [{**entry, "inboxes": [], "scopes": ["tickets:delete"]}]})
    assert "tickets:read" in str(caught.value)  # the known scopes are listed
    with pytest.raises(ConfigError, match=r"api\.tokens\[1\]\.name: 'x' is used twice"):
        make_config(tmp_path, api={"tokens": [{**entry, "inboxes": []}, {**entry, "inboxes": [], "token": "z" * 20}]})
    with pytest.raises(ConfigError, match=r"api\.tokens\[0\]: Value error, give exactly one of") as caught:
        make_config(tmp_path, api={"tokens": [{"name": "x", "scopes": ["admin"]}]})
    with pytest.raises(ConfigError, match=r"api\.tokens\[0\]\.token") as caught:
        make_config(tmp_path, api={"tokens": ["short"]})
    assert "short" not in str(caught.value).replace("api.tokens", "")  # a secret is never echoed


async def test_a_plain_string_token_is_an_admin_named_by_position_with_a_warning(
    tmp_path: Path, bot_setup: BotSetup, caplog: pytest.LogCaptureFixture
) -> None:
    plain = "plain-old-token-0123456789"
    config = make_config(tmp_path, api={"tokens": [{"name": "ops", "token": OPS, "scopes": ["admin"]}, plain]})
    assert [(t.name, t.plain) for t in config.api.tokens] == [("ops", False), ("tokens[1]", True)]
    with caplog.at_level(logging.WARNING, logger="gateway.access"):
        async with started(config, bot_setup) as gateway:
            status, _ = await gateway.api("GET", "/audit", token=plain)
            assert status == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "api.tokens[1]" in warnings[0] and "admin" in warnings[0]
    assert plain not in warnings[0]


# the author of a change ----------------------------------------------------------------------------------------


async def agent_messages(gw: Gateway, ticket: dict[str, Any]) -> list[dict[str, Any]]:
    _, body = await gw.api("GET", f"/tickets/{ticket['id']}", token=OPS)
    return [m for m in body["messages"] if m["author"] == "agent"]


async def test_a_reply_is_written_by_the_token_and_may_not_name_another_agent(gw: Gateway) -> None:
    chat, ticket = await open_ticket(gw)
    path = f"/tickets/{ticket['id']}/replies"
    status, refused = await gw.api("POST", path, token=WANG, json={"text": "转账到这里", "agent": "CEO (impersonated)"})
    assert status == 403 and "agents:act_as" in refused["error"]["message"]
    assert await agent_messages(gw, ticket) == []  # nothing was sent to the customer

    status, body = await gw.api("POST", path, token=WANG, json={"text": "您好，我是小王。"})
    assert status == 201 and body["message"]["meta"] == {"agent": "wang"}
    status, body = await gw.api("POST", path, token=WANG, json={"text": "还在吗？", "agent": "wang"})
    assert status == 201 and body["message"]["meta"] == {"agent": "wang"}
    _, after = await gw.api("GET", f"/tickets/{ticket['id']}", token=OPS)
    assert after["assignee"] == "wang"  # the reply that opened the ticket assigned it to its author
    await chat.close()


async def test_an_integration_with_act_as_replies_for_an_agent_and_both_are_recorded(gw: Gateway) -> None:
    chat, ticket = await open_ticket(gw)
    status, body = await gw.api(
        "POST", f"/tickets/{ticket['id']}/replies", token=ZENDESK, json={"text": "您好", "agent": "li"}
    )
    assert status == 201 and body["message"]["meta"] == {"agent": "li", "via": "zendesk-sync"}
    _, after = await gw.api("GET", f"/tickets/{ticket['id']}", token=OPS)
    assert after["assignee"] == "li"
    _, audit = await gw.api("GET", "/audit", token=OPS, params={"action": "ticket.reply"})
    (entry,) = audit["entries"]
    assert (entry["actor"], entry["on_behalf_of"], entry["who"]) == ("zendesk-sync", "li", "li via zendesk-sync")
    _, by_agent = await gw.api("GET", "/audit", token=OPS, params={"actor": "li"})
    assert [e["id"] for e in by_agent["entries"]] == [entry["id"]]
    await chat.close()


# the audit log -------------------------------------------------------------------------------------------------


async def test_every_write_leaves_an_audit_entry(gw: Gateway, clock: Clock) -> None:
    chat, ticket = await open_ticket(gw)
    number = ticket["number"]
    headers = {"X-Request-Id": "req-patch-1"}
    status, _ = await gw.api(
        "PATCH", f"/tickets/{ticket['id']}", token=WANG, json={"priority": "high", "tags": ["vip"]}, headers=headers
    )
    assert status == 200
    status, _ = await gw.api("PATCH", f"/tickets/{ticket['id']}", token=WANG, json={"priority": "high"})
    assert status == 200  # no change: nothing to audit
    await gw.api("POST", f"/tickets/{ticket['id']}/replies", token=WANG, json={"text": "您好"})
    await gw.api("POST", f"/tickets/{ticket['id']}/typing", token=WANG, json={"on": True})  # not a change
    faq = {"id": "audit-test", "questions": ["审计日志在哪里"], "answer": "在管理后台。"}
    kb = SCOPE_TOKENS[Scope.KB_ADMIN]
    assert (await gw.api("POST", "/faqs", token=kb, json=faq))[0] == 201
    changed = {**faq, "answer": "请访问 http://phish.example/"}
    assert (await gw.api("PUT", "/faqs/audit-test", token=kb, json=changed))[0] == 200
    assert (await gw.api("DELETE", "/faqs/audit-test", token=kb))[0] == 204
    assert (await gw.api("POST", "/faqs/reload", token=kb))[0] == 200

    status, body = await gw.api("GET", "/audit", token=OPS)
    assert status == 200 and body["next_cursor"] is None
    entries = list(reversed(body["entries"]))
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
        ("wang", "ticket.update", f"ticket:{number}"),
        ("wang", "ticket.reply", f"ticket:{number}"),
        ("only-kb-admin", "faq.create", "faq:audit-test"),
        ("only-kb-admin", "faq.update", "faq:audit-test"),
        ("only-kb-admin", "faq.delete", "faq:audit-test"),
        ("only-kb-admin", "faq.reload", "kb"),
    ]
    patch, reply, _, update, delete, _ = entries
    assert patch["request_id"] == "req-patch-1" and patch["at"] == clock.now.isoformat()
    assert patch["before"] == {"priority": "normal", "tags": []} and patch["after"] == {
        "priority": "high",
        "tags": ["vip"],
    }
    assert reply["after"]["message_id"] and "您好" not in str(reply["after"])  # the transcript keeps the text
    assert update["before"] == {"answer": "在管理后台。"} and update["after"] == {
        "answer": "请访问 http://phish.example/"
    }
    assert delete["before"]["answer"] == "请访问 http://phish.example/"
    assert all(len(e["request_id"]) >= 16 for e in entries[1:])  # made up where the caller sent none
    await chat.close()


async def test_the_audit_log_filters_and_pages(gw: Gateway, clock: Clock) -> None:
    kb = SCOPE_TOKENS[Scope.KB_ADMIN]
    for n in range(7):
        clock.now += timedelta(minutes=1)
        faq = {"id": f"page-{n}", "questions": [f"问题{n}"], "answer": "答"}
        status, body = await gw.api("POST", "/faqs", token=kb, json=faq)
        assert status == 201, body
    seen: list[str] = []
    params = {"limit": "3", "action": "faq.create"}
    while True:
        status, body = await gw.api("GET", "/audit", token=OPS, params=params)
        assert status == 200 and len(body["entries"]) <= 3
        seen += [e["target"] for e in body["entries"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == [f"faq:page-{n}" for n in reversed(range(7))]
    start = datetime(2026, 12, 1, 2, 3, tzinfo=UTC)
    window = {"since": start.isoformat(), "until": (start + timedelta(minutes=2)).isoformat()}
    _, body = await gw.api("GET", "/audit", token=OPS, params=window)
    assert [e["target"] for e in body["entries"]] == ["faq:page-3", "faq:page-2"]
    _, body = await gw.api("GET", "/audit", token=OPS, params={"target": "faq:page-5", "actor": "only-kb-admin"})
    assert len(body["entries"]) == 1
    for bad in ({"cursor": "zzz"}, {"since": "yesterday"}, {"until": "2026-01-01T00:00:00"}, {"limit": "0"}):
        status, body = await gw.api("GET", "/audit", token=OPS, params=bad)
        assert status == 400 and body["error"]["code"] == "bad_query", bad


async def test_audit_entries_are_kept_for_the_configured_time(gw: Gateway, clock: Clock) -> None:
    kb = SCOPE_TOKENS[Scope.KB_ADMIN]
    assert (await gw.api("POST", "/faqs/reload", token=kb))[0] == 200
    clock.now += timedelta(days=20)
    assert (await gw.api("POST", "/faqs/reload", token=kb))[0] == 200
    auditor = gw.server.app[GATEWAY].auditor
    assert await auditor.sweep() == 0
    clock.now += timedelta(days=15)  # the first is 35 days old, past the 30 days configured
    assert await auditor.sweep() == 1
    _, body = await gw.api("GET", "/audit", token=OPS)
    assert [e["at"] for e in body["entries"]] == [(clock.now - timedelta(days=15)).isoformat()]


# safe defaults -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "token", "refused"),
    [
        ("0.0.0.0", "dev-token-change-me", "is the sample token"),
        ("::", "short-token-123", "shorter than 16"),
        ("10.0.0.5", "a-strong-token-0123456789", None),
        ("gateway.example.com", "dev-token-change-me", "is the sample token"),
        ("127.0.0.1", "dev-token-change-me", None),
        ("localhost", "short-token-123", None),
        ("::1", "short-token-123", None),
    ],
)
def test_serving_off_loopback_needs_strong_tokens(host: str, token: str, refused: str | None) -> None:
    problem = exposure_problem(host, parse_config({"api": {"tokens": [token]}}).api.tokens)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem and "\n" not in problem and "api.tokens[0]" in problem


def test_the_sample_token_is_refused_by_its_hash_too() -> None:
    digest = hashlib.sha256(b"dev-token-change-me").hexdigest()
    config = parse_config({"api": {"tokens": [{"name": "x", "token_sha256": digest, "scopes": ["admin"]}]}})
    assert exposure_problem("0.0.0.0", config.api.tokens) is not None


async def test_tokens_are_compared_by_digest_against_every_entry() -> None:
    config = parse_config({"api": {"tokens": [OPS, {"name": "b", "token": WANG, "scopes": ["metrics"]}]}})
    book = Tokens(config.api.tokens)
    assert book.authenticate(f"Bearer {WANG}") is not None and book.authenticate(f"bearer {OPS}") is not None
    for bad in (f"Bearer {WANG}x", f"Basic {WANG}", WANG, "Bearer ", "", f"Bearer {WANG[:-1]}"):
        assert book.authenticate(bad) is None, bad
    await asyncio.sleep(0)


# contacts ------------------------------------------------------------------------------------------------------


async def test_contacts_are_read_and_changed_with_their_scopes_and_audited(gw: Gateway) -> None:
    chat, ticket = await open_ticket(gw)
    contact = f"/contacts/{ticket['contact_id']}"
    reader, writer = SCOPE_TOKENS[Scope.CONTACTS_READ], SCOPE_TOKENS[Scope.CONTACTS_WRITE]
    status, body = await gw.api("GET", contact, token=reader)
    assert status == 200 and body["id"] == ticket["contact_id"] and body["vip"] is False
    assert [c["id"] for c in body["conversations"]] == [ticket["conversation_id"]]
    assert_documented("GET", f"{PREFIX}/contacts/{{contact}}", status, body)

    status, body = await gw.api("PATCH", contact, token=writer, json={"name": "李女士", "vip": True})
    assert status == 200 and (body["name"], body["vip"]) == ("李女士", True)
    assert_documented("PATCH", f"{PREFIX}/contacts/{{contact}}", status, body)
    for bad in ({"name": "  "}, {"vip": "yes"}, {"identities": []}):
        status, body = await gw.api("PATCH", contact, token=writer, json=bad)
        assert status == 422, bad
        assert_documented("PATCH", f"{PREFIX}/contacts/{{contact}}", status, body)
    status, body = await gw.api("GET", "/contacts/ct_nope", token=reader)
    assert status == 404
    assert_documented("GET", f"{PREFIX}/contacts/{{contact}}", status, body)

    _, audit = await gw.api("GET", "/audit", token=OPS, params={"target": f"contact:{ticket['contact_id']}"})
    (entry,) = audit["entries"]
    assert entry["action"] == "contact.update" and entry["actor"] == "only-contacts-write"
    assert entry["before"] == {"name": None, "vip": False} and entry["after"] == {"name": "李女士", "vip": True}
    await chat.close()


async def test_an_inbox_limited_token_sees_a_contact_only_through_its_inboxes(gw: Gateway) -> None:
    web_chat, web_ticket = await open_ticket(gw)
    shop_chat, shop = await shop_ticket(gw)
    limited = SHOP_CRM
    status, _ = await gw.api("GET", f"/contacts/{web_ticket['contact_id']}", token=limited)
    assert status == 404
    status, _ = await gw.api("PATCH", f"/contacts/{web_ticket['contact_id']}", token=limited, json={"vip": True})
    assert status == 404
    status, body = await gw.api("GET", f"/contacts/{shop['contact_id']}", token=limited)
    assert status == 200 and {c["inbox"] for c in body["conversations"]} == {"shop"}
    # Its tickets, search, links and merges: the same limit.
    assert (await gw.api("GET", f"/contacts/{web_ticket['contact_id']}/tickets", token=limited))[0] == 404
    _, tickets = await gw.api("GET", f"/contacts/{shop['contact_id']}/tickets", token=limited)
    assert [t["id"] for t in tickets["tickets"]] == [shop["id"]]
    web_address = (await gw.api("GET", f"/contacts/{web_ticket['contact_id']}", token=OPS))[1]["identities"][0]
    _, found = await gw.api("GET", "/contacts", token=limited, params={"identity": web_address})
    assert found == {"contacts": []}
    _, found = await gw.api("GET", "/contacts", token=OPS, params={"identity": web_address})
    assert [c["id"] for c in found["contacts"]] == [web_ticket["contact_id"]]
    link = {"identity": "email:li@example.org"}
    assert (await gw.api("POST", f"/contacts/{web_ticket['contact_id']}/identities", token=limited, json=link))[
        0
    ] == 404
    merge = {"source": web_ticket["contact_id"]}
    assert (await gw.api("POST", f"/contacts/{shop['contact_id']}/merge", token=limited, json=merge))[0] == 404
    assert (await gw.api("POST", f"/contacts/{shop['contact_id']}/identities", token=limited, json=link))[0] == 201
    _, audit = await gw.api("GET", "/audit", token=OPS, params={"target": f"contact:{shop['contact_id']}"})
    assert [(e["action"], e["actor"]) for e in audit["entries"]] == [("contact.link_identity", "shop-crm")]
    await web_chat.close()
    await shop_chat.close()


async def test_the_request_id_is_echoed_or_made_up(gw: Gateway) -> None:
    headers = {"Authorization": f"Bearer {OPS}"}
    async with gw.http.get(gw.url + "/api/v1/tickets", headers={**headers, "X-Request-Id": "lb-7f3a"}) as resp:
        assert resp.headers["X-Request-Id"] == "lb-7f3a"
    for odd in ("has space", "x" * 200, ""):
        async with gw.http.get(gw.url + "/api/v1/tickets", headers={**headers, "X-Request-Id": odd}) as resp:
            assert resp.status == 200 and resp.headers["X-Request-Id"] not in (odd, "")
    async with gw.http.get(gw.url + "/api/v1/tickets") as resp:
        assert resp.status == 401 and resp.headers["X-Request-Id"]
