"""The REST API helpdesks build on, driven through the real server: auth, errors, filters, paging, changes, events."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tests.conftest import API_TOKEN, ChatClient, Gateway

PROTECTED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/tickets", None),
    ("GET", "/tickets/HL-000001", None),
    ("PATCH", "/tickets/HL-000001", {"status": "open"}),
    ("POST", "/tickets/HL-000001/replies", {"text": "hi"}),
    ("POST", "/tickets/HL-000001/typing", {"on": True}),
    ("GET", "/events", None),
]


# helpers ---------------------------------------------------------------------------------------------------------


async def all_tickets(gw: Gateway, **params: str) -> list[dict[str, Any]]:
    status, body = await gw.api("GET", "/tickets", params={"limit": "200", **params})
    assert status == 200, body
    assert body["next_cursor"] is None
    tickets: list[dict[str, Any]] = body["tickets"]
    return tickets


async def all_events(gw: Gateway, after: int = 0) -> list[dict[str, Any]]:
    status, body = await gw.api("GET", "/events", params={"after": str(after), "limit": "1000"})
    assert status == 200, body
    events: list[dict[str, Any]] = body["events"]
    return events


async def open_ticket(gw: Gateway, text: str = "转人工") -> tuple[ChatClient, dict[str, Any]]:
    """A new visitor asks for a human; returns the visitor's socket and the ticket the handoff created."""
    before = {t["id"] for t in await all_tickets(gw)}
    chat = await gw.chat()
    _, reply = await chat.say(text)
    assert reply["author"] == "bot"
    frame = await chat.expect("status")
    assert frame["status"] == "waiting_for_agent"
    new = [t for t in await all_tickets(gw) if t["id"] not in before]
    assert len(new) == 1, new
    return chat, new[0]


async def settle(chat: ChatClient) -> None:
    """Round-trip a ping so every frame the server pushed before it has arrived, then wait for stragglers."""
    await chat.ws.send_json({"type": "ping"})
    await chat.expect("pong")
    await asyncio.sleep(0.2)
    await chat.ws.send_json({"type": "ping"})
    await chat.expect("pong")


JSON_HEADERS = {"Content-Type": "application/json"}


def oversized(gw: Gateway) -> io.BytesIO:
    """A valid JSON reply body one byte over the server's limit (a stream: aiohttp warns on big raw bytes)."""
    text = "x" * gw.config.server.max_body_bytes
    return io.BytesIO(json.dumps({"text": text}).encode())


def iso(at: datetime) -> str:
    return at.isoformat()


# authentication --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0000", f"Basic {API_TOKEN}", API_TOKEN, "Bearer ", f"Bearer {API_TOKEN}x"],
)
async def test_missing_or_wrong_bearer_token_is_401(
    gateway: Gateway, method: str, path: str, body: dict[str, Any] | None, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with gateway.http.request(method, gateway.url + "/api/v1" + path, headers=headers, json=body) as resp:
        assert resp.status == 401
        assert resp.content_type == "application/json"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        payload = await resp.json()
    assert payload == {"error": {"code": "unauthorized", "message": payload["error"]["message"]}}
    assert payload["error"]["message"]


async def test_bearer_scheme_is_case_insensitive(gateway: Gateway) -> None:
    headers = {"Authorization": f"bearer {API_TOKEN}"}
    async with gateway.http.get(gateway.url + "/api/v1/tickets", headers=headers) as resp:
        assert resp.status == 200


async def test_openapi_document_needs_no_token(gateway: Gateway) -> None:
    async with gateway.http.get(gateway.url + "/api/v1/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        doc = await resp.json()
    assert doc["openapi"].startswith("3.1")


# errors ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["tk_doesnotexist", "HL-999999"])
async def test_unknown_ticket_is_404_everywhere(gateway: Gateway, ref: str) -> None:
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/tickets/{ref}", None),
        ("PATCH", f"/tickets/{ref}", {"status": "open"}),
        ("POST", f"/tickets/{ref}/replies", {"text": "您好"}),
        ("POST", f"/tickets/{ref}/typing", {"on": True}),
    ]
    for method, path, body in calls:
        status, payload = await gateway.api(method, path, json=body)
        assert status == 404, (method, path, payload)
        assert payload["error"]["code"] == "not_found"
        assert ref in payload["error"]["message"]


async def test_unknown_route_and_method_are_json_errors(gateway: Gateway) -> None:
    status, payload = await gateway.api("GET", "/nope")
    assert status == 404 and payload["error"]["code"]
    status, payload = await gateway.api("DELETE", "/tickets/HL-000001")
    assert status == 405 and payload["error"]["code"]


@pytest.mark.parametrize("data", [b"{not json", b"", b'{"status": "open"', b"\xff\xfe{}"])
async def test_bad_json_body_is_400(gateway: Gateway, data: bytes) -> None:
    _, ticket = await open_ticket(gateway)
    headers = {"Content-Type": "application/json"}
    for method, path in [
        ("PATCH", f"/tickets/{ticket['id']}"),
        ("POST", f"/tickets/{ticket['id']}/replies"),
        ("POST", f"/tickets/{ticket['id']}/typing"),
    ]:
        status, payload = await gateway.api(method, path, data=data, headers=headers)
        assert status == 400, (method, path, payload)
        assert payload["error"]["code"] == "bad_json"
    # nothing was changed or sent
    status, after = await gateway.api("GET", f"/tickets/{ticket['id']}")
    assert after["version"] == ticket["version"]
    assert [m for m in after["messages"] if m["author"] == "agent"] == []


async def test_oversized_body_is_413_json(gateway: Gateway) -> None:
    _, ticket = await open_ticket(gateway)
    status, payload = await gateway.api(
        "POST", f"/tickets/{ticket['id']}/replies", data=oversized(gateway), headers=JSON_HEADERS
    )
    assert status == 413, payload
    assert payload["error"]["code"] and payload["error"]["message"]


@pytest.mark.parametrize(
    ("path_suffix", "body", "field"),
    [
        ("", {"status": "done"}, "status"),
        ("", {"priority": "asap"}, "priority"),
        ("", {"tags": "vip"}, "tags"),
        ("", {"tags": ["ok", "   "]}, "tags.1"),
        ("", {"assignee": ""}, "assignee"),
        ("", {"colour": "red"}, "colour"),
        ("", ["status", "open"], "body"),
        ("/replies", {"text": ""}, "text"),
        ("/replies", {"text": "   \n "}, "text"),
        ("/replies", {}, "text"),
        ("/replies", {"text": "hi", "cc": "boss"}, "cc"),
        ("/replies", {"text": "hi", "agent": ""}, "agent"),
        ("/typing", {"on": "maybe"}, "on"),
        ("/typing", {}, "on"),
    ],
)
async def test_invalid_field_is_422_naming_the_field(gateway: Gateway, path_suffix: str, body: Any, field: str) -> None:
    _, ticket = await open_ticket(gateway)
    method = "PATCH" if path_suffix == "" else "POST"
    status, payload = await gateway.api(method, f"/tickets/{ticket['number']}{path_suffix}", json=body)
    assert status == 422, payload
    assert payload["error"]["code"] == "invalid"
    assert payload["error"]["message"].startswith(f"{field}:") or f"; {field}:" in payload["error"]["message"]
    status, after = await gateway.api("GET", f"/tickets/{ticket['id']}")
    assert after["version"] == ticket["version"]
    assert [m for m in after["messages"] if m["author"] == "agent"] == []


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/tickets", {"status": "bogus"}),
        ("/tickets", {"channel": "fax"}),
        ("/tickets", {"limit": "0"}),
        ("/tickets", {"limit": "abc"}),
        ("/tickets", {"limit": "201"}),
        ("/tickets", {"limit": "-1"}),
        ("/tickets", {"updated_since": "yesterday"}),
        ("/tickets", {"updated_since": "2026-01-01T00:00:00"}),  # no timezone
        ("/tickets", {"cursor": "garbage"}),
        ("/tickets", {"cursor": "MQ"}),  # base64 of "1": one part, not two
        ("/tickets", {"cursor": "!!!"}),
        ("/events", {"after": "-1"}),
        ("/events", {"after": "abc"}),
        ("/events", {"limit": "0"}),
        ("/events", {"limit": "1001"}),
    ],
)
async def test_bad_query_is_400(gateway: Gateway, path: str, params: dict[str, str]) -> None:
    status, payload = await gateway.api("GET", path, params=params)
    assert status == 400, payload
    assert payload["error"]["code"] == "bad_query"
    assert payload["error"]["message"]


async def test_bad_idempotency_key_is_400(gateway: Gateway) -> None:
    _, ticket = await open_ticket(gateway)
    status, payload = await gateway.api(
        "POST", f"/tickets/{ticket['id']}/replies", json={"text": "hi"}, headers={"Idempotency-Key": "k" * 201}
    )
    assert status == 400 and payload["error"]["code"] == "bad_header"


# listing -----------------------------------------------------------------------------------------------------------


async def test_list_filters_by_status_and_channel(gateway: Gateway) -> None:
    _, first = await open_ticket(gateway)
    _, second = await open_ticket(gateway)
    status, _ = await gateway.api("PATCH", f"/tickets/{first['id']}", json={"status": "pending"})
    assert status == 200

    assert [t["id"] for t in await all_tickets(gateway, status="pending")] == [first["id"]]
    assert [t["id"] for t in await all_tickets(gateway, status="new")] == [second["id"]]
    assert await all_tickets(gateway, status="closed") == []
    assert {t["id"] for t in await all_tickets(gateway, channel="webchat")} == {first["id"], second["id"]}
    assert await all_tickets(gateway, channel="email") == []
    assert [t["id"] for t in await all_tickets(gateway, status="pending", channel="webchat")] == [first["id"]]
    assert await all_tickets(gateway, status="pending", channel="wechat") == []


async def test_cursor_pagination_returns_every_ticket_once_in_order(gateway: Gateway) -> None:
    created = [(await open_ticket(gateway))[1] for _ in range(5)]
    everything = await all_tickets(gateway)
    assert [t["id"] for t in everything] == [t["id"] for t in created]  # oldest update first

    seen: list[dict[str, Any]] = []
    pages: list[int] = []
    params: dict[str, str] = {"limit": "2"}
    for _ in range(10):
        status, body = await gateway.api("GET", "/tickets", params=params)
        assert status == 200, body
        seen += body["tickets"]
        pages.append(len(body["tickets"]))
        if body["next_cursor"] is None:
            break
        params = {"limit": "2", "cursor": body["next_cursor"]}
    assert pages == [2, 2, 1]
    assert [t["id"] for t in seen] == [t["id"] for t in everything]
    assert len({t["id"] for t in seen}) == 5
    stamps = [datetime.fromisoformat(t["updated_at"]) for t in seen]
    assert stamps == sorted(stamps)

    # a page that reaches the last ticket has no next_cursor (no empty trailing page)
    status, body = await gateway.api("GET", "/tickets", params={"limit": "5"})
    assert len(body["tickets"]) == 5 and body["next_cursor"] is None

    # filters keep applying on later pages
    for t in created[:3]:
        await gateway.api("PATCH", f"/tickets/{t['id']}", json={"status": "pending"})
    status, page1 = await gateway.api("GET", "/tickets", params={"status": "pending", "limit": "2"})
    status, page2 = await gateway.api(
        "GET", "/tickets", params={"status": "pending", "limit": "2", "cursor": page1["next_cursor"]}
    )
    assert status == 200
    assert [t["id"] for t in page1["tickets"] + page2["tickets"]] == [t["id"] for t in created[:3]]
    assert page2["next_cursor"] is None


async def test_updated_since_filters(gateway: Gateway) -> None:
    _, first = await open_ticket(gateway)
    _, second = await open_ticket(gateway)
    status, patched = await gateway.api("PATCH", f"/tickets/{first['id']}", json={"priority": "high"})
    assert status == 200
    since = datetime.fromisoformat(patched["updated_at"])
    assert since > datetime.fromisoformat(second["updated_at"])

    # inclusive, any timezone, and the '+' survives because params are percent-encoded
    assert [t["id"] for t in await all_tickets(gateway, updated_since=iso(since))] == [first["id"]]
    in_shanghai = since.astimezone(timezone(timedelta(hours=8)))
    assert [t["id"] for t in await all_tickets(gateway, updated_since=iso(in_shanghai))] == [first["id"]]
    zulu = since.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert [t["id"] for t in await all_tickets(gateway, updated_since=zulu)] == [first["id"]]
    earlier = datetime.fromisoformat(first["created_at"]) - timedelta(seconds=1)
    assert [t["id"] for t in await all_tickets(gateway, updated_since=iso(earlier))] == [second["id"], first["id"]]
    later = since + timedelta(seconds=1)
    assert await all_tickets(gateway, updated_since=iso(later)) == []


# changing tickets --------------------------------------------------------------------------------------------------


async def test_patch_changes_fields_and_emits_ticket_updated(gateway: Gateway) -> None:
    _, ticket = await open_ticket(gateway)
    mark = (await all_events(gateway))[-1]["id"]

    status, updated = await gateway.api(
        "PATCH",
        f"/tickets/{ticket['number']}",
        json={"status": "pending", "priority": "urgent", "tags": [" vip ", "refund", "vip"], "assignee": "wang"},
    )
    assert status == 200, updated
    assert updated["id"] == ticket["id"]
    assert updated["status"] == "pending" and updated["priority"] == "urgent"
    assert updated["tags"] == ["vip", "refund"]
    assert updated["assignee"] == "wang"
    assert updated["version"] == ticket["version"] + 1
    assert datetime.fromisoformat(updated["updated_at"]) > datetime.fromisoformat(ticket["updated_at"])
    assert "messages" not in updated
    status, fetched = await gateway.api("GET", f"/tickets/{ticket['id']}")
    assert {k: fetched[k] for k in updated} == updated

    events = [e for e in await all_events(gateway, mark) if e["type"] == "ticket.updated"]
    assert len(events) == 1
    event = events[0]
    assert event["ticket_id"] == ticket["id"] and event["conversation_id"] == ticket["conversation_id"]
    assert event["data"]["changes"] == {
        "status": {"from": "new", "to": "pending"},
        "priority": {"from": "normal", "to": "urgent"},
        "tags": {"from": [], "to": ["vip", "refund"]},
        "assignee": {"from": None, "to": "wang"},
    }
    assert event["data"]["ticket"] == updated

    # assignee: null clears it; leaving a field out keeps it
    status, cleared = await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"assignee": None})
    assert status == 200
    assert cleared["assignee"] is None
    assert cleared["tags"] == ["vip", "refund"] and cleared["priority"] == "urgent" and cleared["status"] == "pending"
    events = [e for e in await all_events(gateway, event["id"]) if e["type"] == "ticket.updated"]
    assert [e["data"]["changes"] for e in events] == [{"assignee": {"from": "wang", "to": None}}]

    # tags: [] clears the tags
    status, untagged = await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"tags": []})
    assert status == 200 and untagged["tags"] == []

    # a patch that changes nothing is a no-op: same version, no event
    last = (await all_events(gateway))[-1]["id"]
    status, same = await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"priority": "urgent", "tags": []})
    assert status == 200 and same == untagged
    status, same = await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={})
    assert status == 200 and same == untagged
    assert await all_events(gateway, last) == []


async def test_resolving_the_ticket_resolves_the_conversation_and_the_bot_returns(gateway: Gateway) -> None:
    chat, ticket = await open_ticket(gateway)
    mark = (await all_events(gateway))[-1]["id"]

    status, resolved = await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved"})
    assert status == 200 and resolved["status"] == "resolved"
    frame = await chat.expect("status")
    assert frame["status"] == "resolved"
    status, fetched = await gateway.api("GET", f"/tickets/{ticket['id']}")
    assert fetched["conversation"]["status"] == "resolved"
    moves = [e["data"] for e in await all_events(gateway, mark) if e["type"] == "conversation.status_changed"]
    assert moves == [{"conversation_id": ticket["conversation_id"], "from": "waiting_for_agent", "to": "resolved"}]

    # the customer writes again: a fresh bot episode answers, and the old ticket stays resolved and untouched
    _, answer = await chat.say("我想退款")
    assert answer["author"] == "bot"
    assert "退款" in answer["text"]
    status, after = await gateway.api("GET", f"/tickets/{ticket['id']}")
    assert after["status"] == "resolved"
    assert after["conversation"]["episode"] == fetched["conversation"]["episode"] + 1
    assert after["conversation"]["status"] == "bot"
    assert after["conversation"]["ticket_id"] is None
    assert [m["text"] for m in after["messages"]] == [m["text"] for m in fetched["messages"]]
    assert [t["id"] for t in await all_tickets(gateway)] == [ticket["id"]]  # no new ticket: the bot answered
    moves = [e["data"] for e in await all_events(gateway, mark) if e["type"] == "conversation.status_changed"]
    assert moves[-1] == {"conversation_id": ticket["conversation_id"], "from": "resolved", "to": "bot"}

    # asking for a human again opens a second ticket on the same conversation
    _, handoff = await chat.say("转人工")
    assert handoff["author"] == "bot"
    assert (await chat.expect("status"))["status"] == "waiting_for_agent"
    tickets = await all_tickets(gateway)
    assert len(tickets) == 2
    assert tickets[-1]["conversation_id"] == ticket["conversation_id"] and tickets[-1]["status"] == "new"


async def test_reopening_a_ticket_opens_the_conversation(gateway: Gateway) -> None:
    chat, ticket = await open_ticket(gateway)
    await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "closed"})
    assert (await chat.expect("status"))["status"] == "resolved"
    status, reopened = await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "open"})
    assert status == 200 and reopened["status"] == "open"
    assert (await chat.expect("status"))["status"] == "open"


# replies -----------------------------------------------------------------------------------------------------------


async def test_reply_with_the_same_idempotency_key_is_sent_once(gateway: Gateway) -> None:
    chat, ticket = await open_ticket(gateway)
    mark = (await all_events(gateway))[-1]["id"]
    path = f"/tickets/{ticket['id']}/replies"
    headers = {"Idempotency-Key": "reply-1"}

    status, first = await gateway.api("POST", path, json={"text": "您好，请稍等。", "agent": "li"}, headers=headers)
    assert status == 201, first
    assert first["duplicate"] is False and first["delivery"] == "sent"
    message = first["message"]
    assert message["author"] == "agent" and message["direction"] == "outbound"
    assert message["text"] == "您好，请稍等。" and message["ticket_id"] == ticket["id"]
    assert message["meta"] == {"agent": "li", "via": "tokens[0]"}  # the (admin) test token acts for li
    assert "raw" not in message

    status, again = await gateway.api("POST", path, json={"text": "您好，请稍等。", "agent": "li"}, headers=headers)
    assert status == 200, again
    assert again["duplicate"] is True and again["delivery"] is None
    assert again["message"] == message
    # the same key by the ticket number is the same request
    status, by_number = await gateway.api(
        "POST", f"/tickets/{ticket['number']}/replies", json={"text": "您好，请稍等。"}, headers=headers
    )
    assert status == 200 and by_number["message"]["id"] == message["id"]

    await settle(chat)
    received = [f for f in chat.frames if f["type"] == "message" and f["author"] == "agent"]
    assert [f["text"] for f in received] == ["您好，请稍等。"]

    status, fetched = await gateway.api("GET", f"/tickets/{ticket['id']}")
    assert [m["id"] for m in fetched["messages"] if m["author"] == "agent"] == [message["id"]]
    created = [e for e in await all_events(gateway, mark) if e["type"] == "message.created"]
    assert [e["data"]["message"]["id"] for e in created] == [message["id"]]

    # a different key, or none, is a new reply
    status, other = await gateway.api("POST", path, json={"text": "第二条"}, headers={"Idempotency-Key": "reply-2"})
    assert status == 201 and other["message"]["id"] != message["id"]
    status, plain1 = await gateway.api("POST", path, json={"text": "第三条"})
    status, plain2 = await gateway.api("POST", path, json={"text": "第三条"})
    assert status == 201 and plain1["message"]["id"] != plain2["message"]["id"]


async def test_idempotency_keys_are_per_ticket(gateway: Gateway) -> None:
    _, first = await open_ticket(gateway)
    _, second = await open_ticket(gateway)
    headers = {"Idempotency-Key": "same"}
    s1, r1 = await gateway.api("POST", f"/tickets/{first['id']}/replies", json={"text": "a"}, headers=headers)
    s2, r2 = await gateway.api("POST", f"/tickets/{second['id']}/replies", json={"text": "b"}, headers=headers)
    assert (s1, s2) == (201, 201)
    assert r1["message"]["conversation_id"] != r2["message"]["conversation_id"]


async def test_first_reply_opens_a_new_ticket_and_assigns_the_agent(gateway: Gateway) -> None:
    chat, ticket = await open_ticket(gateway)
    mark = (await all_events(gateway))[-1]["id"]
    status, _ = await gateway.api("POST", f"/tickets/{ticket['id']}/replies", json={"text": "在的", "agent": "wang"})
    assert status == 201
    assert (await chat.expect("status"))["status"] == "open"
    status, after = await gateway.api("GET", f"/tickets/{ticket['id']}")
    assert after["status"] == "open" and after["assignee"] == "wang"
    changes = [e["data"]["changes"] for e in await all_events(gateway, mark) if e["type"] == "ticket.updated"]
    assert changes == [{"status": {"from": "new", "to": "open"}, "assignee": {"from": None, "to": "wang"}}]


# events ------------------------------------------------------------------------------------------------------------


async def test_event_feed_is_ordered_versioned_and_pages_with_next_after(gateway: Gateway) -> None:
    _, ticket = await open_ticket(gateway)
    await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"priority": "high"})
    await gateway.api("POST", f"/tickets/{ticket['id']}/replies", json={"text": "好的"})

    events = await all_events(gateway)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] >= 1
    for event in events:
        assert event["v"] == 1
        assert isinstance(event["idempotency_key"], str) and event["idempotency_key"]
        assert event["idempotency_key"].startswith(event["type"] + ":")
        datetime.fromisoformat(event["occurred_at"])
    keys = [e["idempotency_key"] for e in events]
    assert len(set(keys)) == len(keys)

    # one at a time via next_after gives the same feed
    paged: list[dict[str, Any]] = []
    after = 0
    for _ in range(len(events) + 2):
        status, body = await gateway.api("GET", "/events", params={"after": str(after), "limit": "1"})
        assert status == 200
        if not body["events"]:
            assert body["next_after"] == after
            break
        assert body["next_after"] == body["events"][-1]["id"]
        paged += body["events"]
        after = body["next_after"]
    assert paged == events

    # from the middle
    middle = ids[len(ids) // 2]
    assert await all_events(gateway, middle) == [e for e in events if e["id"] > middle]
    # past the end: nothing, and next_after stays put
    status, body = await gateway.api("GET", "/events", params={"after": str(ids[-1] + 100)})
    assert status == 200 and body == {"events": [], "next_after": ids[-1] + 100}
    # defaults
    status, body = await gateway.api("GET", "/events")
    assert status == 200 and body["events"] == events and body["next_after"] == ids[-1]


async def test_handoff_emits_ticket_created_handoff_and_status_changed(gateway: Gateway) -> None:
    _, ticket = await open_ticket(gateway)
    events = await all_events(gateway)
    kinds = [e["type"] for e in events]
    assert kinds.count("ticket.created") == 1
    assert kinds.count("conversation.handoff") == 1
    assert kinds.count("conversation.status_changed") == 1
    created = events[kinds.index("ticket.created")]
    handoff = events[kinds.index("conversation.handoff")]
    moved = events[kinds.index("conversation.status_changed")]
    assert created["id"] < handoff["id"] < moved["id"]

    assert created["ticket_id"] == ticket["id"] and created["conversation_id"] == ticket["conversation_id"]
    assert created["data"]["ticket"] == ticket
    assert handoff["ticket_id"] == ticket["id"]
    assert handoff["data"]["ticket_id"] == ticket["id"]
    assert handoff["data"]["ticket_number"] == ticket["number"]
    assert handoff["data"]["conversation_id"] == ticket["conversation_id"]
    assert handoff["data"]["reason"] == "asked_for_human"
    assert moved["ticket_id"] == ticket["id"] and moved["conversation_id"] == ticket["conversation_id"]
    assert moved["data"] == {"conversation_id": ticket["conversation_id"], "from": "bot", "to": "waiting_for_agent"}

    # the customer's message and the bot's handoff reply are in the feed too, before the ticket
    messages = [e for e in events if e["type"] == "message.created"]
    assert [m["data"]["message"]["author"] for m in messages] == ["customer", "bot"]
    assert all("raw" not in m["data"]["message"] for m in messages)
    assert messages[0]["id"] < created["id"]


async def test_bot_returning_is_shown_to_the_visitor(gateway: Gateway) -> None:
    chat, ticket = await open_ticket(gateway)
    await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved"})
    assert (await chat.expect("status"))["status"] == "resolved"
    await chat.say("我想退款")
    assert [f["status"] for f in chat.frames if f["type"] == "status"][-1] == "bot"


async def test_agent_reply_on_an_old_ticket_takes_the_conversation_back_from_the_bot(gateway: Gateway) -> None:
    chat, ticket = await open_ticket(gateway)
    await gateway.api("PATCH", f"/tickets/{ticket['id']}", json={"status": "resolved"})
    await chat.say("我想退款")  # the bot holds the conversation again
    status, _ = await gateway.api("POST", f"/tickets/{ticket['id']}/replies", json={"text": "退款已处理"})
    assert status == 201
    frame = await chat.expect("message")
    assert frame["author"] == "agent"
    status, after = await gateway.api("GET", f"/tickets/{ticket['id']}")
    assert after["status"] == "open"
    assert after["conversation"]["status"] == "open" and after["conversation"]["ticket_id"] == ticket["id"]
    # With an agent holding it again, the bot stays silent.
    await chat.ws.send_json({"type": "message", "id": "later", "text": "怎么开发票"})
    await chat.expect("ack")
    await settle(chat)
    assert [f for f in chat.frames if f["type"] == "message"][-1]["author"] == "agent"


async def test_acting_on_an_old_ticket_while_another_is_active_is_a_conflict(gateway: Gateway) -> None:
    chat, first = await open_ticket(gateway)
    await gateway.api("PATCH", f"/tickets/{first['id']}", json={"status": "resolved"})
    await chat.say("转人工")
    assert (await chat.expect("status"))["status"] == "waiting_for_agent"
    second = (await all_tickets(gateway, status="new"))[0]
    status, body = await gateway.api("POST", f"/tickets/{first['id']}/replies", json={"text": "hello"})
    assert status == 409 and second["number"] in body["error"]["message"]
    status, body = await gateway.api("PATCH", f"/tickets/{first['id']}", json={"status": "open"})
    assert status == 409
    status, unchanged = await gateway.api("GET", f"/tickets/{first['id']}")
    assert unchanged["status"] == "resolved"


async def test_idempotency_key_reused_for_another_text_is_422(gateway: Gateway) -> None:
    _, ticket = await open_ticket(gateway)
    headers = {"Idempotency-Key": "k-1"}
    status, _ = await gateway.api("POST", f"/tickets/{ticket['id']}/replies", json={"text": "one"}, headers=headers)
    assert status == 201
    status, body = await gateway.api("POST", f"/tickets/{ticket['id']}/replies", json={"text": "two"}, headers=headers)
    assert status == 422 and body["error"]["code"] == "idempotency_key_reused"
