"""The contacts API: read, edit (with a version check), tickets, search by identity, agent links, merges."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bot.setup import BotSetup
from core.model import Conversation
from gateway.app import GATEWAY
from tests.conftest import Gateway, make_config, started


async def _visitor_with_ticket(gw: Gateway) -> tuple[dict[str, Any], dict[str, Any]]:
    chat = await gw.chat()
    await chat.say("转人工")
    await chat.expect("status")
    _, page = await gw.api("GET", "/tickets")
    ticket = max(page["tickets"], key=lambda t: t["number"])  # this visitor's, the newest
    status, contact = await gw.api("GET", f"/contacts/{ticket['contact_id']}")
    assert status == 200
    await chat.close()
    return contact, ticket


async def _events(gw: Gateway, kind: str) -> list[dict[str, Any]]:
    _, body = await gw.api("GET", "/events?limit=1000")
    return [e for e in body["events"] if e["type"] == kind]


async def test_a_contact_shows_its_identities_and_its_tickets(gateway: Gateway) -> None:
    contact, ticket = await _visitor_with_ticket(gateway)
    assert contact["identities"][0].startswith("webchat:")
    assert contact["vip"] is False and contact["tags"] == [] and contact["version"] == 1
    status, body = await gateway.api("GET", f"/contacts/{contact['id']}/tickets")
    assert status == 200 and [t["number"] for t in body["tickets"]] == [ticket["number"]]
    assert (await gateway.api("GET", "/contacts/ct_nobody"))[0] == 404
    assert (await gateway.api("GET", "/contacts/ct_nobody/tickets"))[0] == 404


async def test_patch_sets_vip_name_and_tags_and_a_stale_version_conflicts(gateway: Gateway) -> None:
    contact, _ = await _visitor_with_ticket(gateway)
    path = f"/contacts/{contact['id']}"
    status, saved = await gateway.api(
        "PATCH", path, json={"vip": True, "name": "王芳", "tags": ["大客户"], "version": 1}
    )
    assert status == 200 and saved["vip"] is True and saved["name"] == "王芳" and saved["version"] == 2
    status, body = await gateway.api("PATCH", path, json={"vip": False, "version": 1})
    assert status == 409 and body["error"]["code"] == "conflict"
    assert (await gateway.api("GET", path))[1]["vip"] is True
    [event] = await _events(gateway, "contact.updated")
    assert event["data"]["changes"]["vip"] == {"from": False, "to": True}
    for bad in ({"vip": "yes"}, {"tags": [""]}, {"version": 0}, {"identities": []}):
        assert (await gateway.api("PATCH", path, json=bad))[0] == 422
    assert (await gateway.api("PATCH", path, data=b"{", headers={"Content-Type": "application/json"}))[0] == 400
    assert (await gateway.api("PATCH", "/contacts/ct_nobody", json={"vip": True}))[0] == 404


async def test_a_vip_set_through_the_api_goes_straight_to_a_human(tmp_path: Path, bot_setup: BotSetup) -> None:
    bot = dataclasses.replace(bot_setup, policy=dataclasses.replace(bot_setup.policy, vip_handoff=True))
    async with started(make_config(tmp_path, bot={"vip_handoff": True}), bot) as gw:
        chat = await gw.chat()
        _, answer = await chat.say("我想退款")
        assert "退款" in answer["text"]
        conversation = await _only_conversation(gw)
        status, _ = await gw.api("PATCH", f"/contacts/{conversation.contact_id}", json={"vip": True})
        assert status == 200
        _, reply = await chat.say("我想退款")
        assert "人工" in reply["text"]
        [ticket] = (await gw.api("GET", "/tickets"))[1]["tickets"]
        assert ticket["handoff_reason"] == "vip" and ticket["priority"] == "high"


async def _only_conversation(gw: Gateway) -> Conversation:
    store = gw.server.app[GATEWAY].store
    events = await store.events_after(0, limit=100)
    ids = {e.conversation_id for e in events if e.conversation_id}
    assert len(ids) == 1
    conversation = await store.get_conversation(ids.pop())
    assert conversation is not None
    return conversation


async def test_search_by_identity_and_an_audited_agent_link(gateway: Gateway) -> None:
    contact, _ = await _visitor_with_ticket(gateway)
    path = f"/contacts/{contact['id']}/identities"
    status, linked = await gateway.api("POST", path, json={"identity": "phone:138 0013 8000"})
    assert status == 201 and "phone:+8613800138000" in linked["identities"]
    status, found = await gateway.api("GET", "/contacts", params={"identity": "phone:+8613800138000"})
    assert status == 200 and [c["id"] for c in found["contacts"]] == [contact["id"]]
    assert (await gateway.api("GET", "/contacts", params={"identity": "email:none@example.org"}))[1] == {"contacts": []}
    assert (await gateway.api("GET", "/contacts", params={"identity": "phone:abc"}))[0] == 400
    assert (await gateway.api("GET", "/contacts"))[0] == 400
    [event] = await _events(gateway, "contact.identity_linked")
    assert event["data"]["identity"] == "phone:+8613800138000" and event["data"]["by"] == "tokens[0]"
    assert event["data"]["how"] == "agent"
    # Somebody else's identity is not taken over: the answer says to merge.
    other, _ = await _visitor_with_ticket(gateway)
    status, body = await gateway.api(
        "POST", f"/contacts/{other['id']}/identities", json={"identity": "phone:+8613800138000"}
    )
    assert status == 409 and body["error"]["code"] == "identity_taken"
    assert (await gateway.api("POST", path, json={"identity": "fax:1"}))[0] == 422
    assert (await gateway.api("POST", path, json={"identity": "email:nope"}))[0] == 422
    assert (await gateway.api("POST", path, json={"identity": "email:a@b.cn", "agent": "wang"}))[
        0
    ] == 422  # the token is who


async def test_merge_keeps_every_conversation_and_ticket_with_an_event(gateway: Gateway) -> None:
    first, first_ticket = await _visitor_with_ticket(gateway)
    second, second_ticket = await _visitor_with_ticket(gateway)
    status, merged = await gateway.api("POST", f"/contacts/{second['id']}/merge", json={"source": first["id"]})
    assert status == 200 and set(merged["identities"]) == {*first["identities"], *second["identities"]}
    _, tickets = await gateway.api("GET", f"/contacts/{second['id']}/tickets")
    assert {t["number"] for t in tickets["tickets"]} == {first_ticket["number"], second_ticket["number"]}
    _, pointer = await gateway.api("GET", f"/contacts/{first['id']}")
    assert pointer["merged_into"] == second["id"] and pointer["identities"] == []
    _, moved = await gateway.api("GET", f"/tickets/{first_ticket['number']}")
    assert moved["contact_id"] == second["id"] and moved["messages"]
    [event] = await _events(gateway, "contact.merged")
    assert event["data"]["from"] == first["id"] and event["data"]["into"] == second["id"]
    # into itself, again, or from nowhere: a clear answer and nothing changed
    again = await gateway.api("POST", f"/contacts/{second['id']}/merge", json={"source": first["id"]})
    assert again[0] == 422
    assert (await gateway.api("POST", f"/contacts/{second['id']}/merge", json={"source": second["id"]}))[0] == 422
    assert (await gateway.api("POST", f"/contacts/{second['id']}/merge", json={"source": "ct_x"}))[0] == 404
    assert len(await _events(gateway, "contact.merged")) == 1
