"""Replays Zammad's 31 ordered generic-CTI requests against the real server and checks what they leave."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from core.model import HandoffReason, MessageKind, Priority
from gateway.intake import BotSetup
from tests.conftest import make_config, need, started
from tests.phone.conftest import CORPUS, call_message, cti, phone_inbox, settled, store_of, tickets_of

SPEC = CORPUS / "zammad-cti" / "zammad_generic_cti_events_from_spec.json"

# Each rspec example starts from an empty database; here each gets its own inbox on one server, so
# call ids the examples reuse stay apart. The spec's one "Feature not configured" request goes to an
# inbox with the CTI switched off, as Zammad's test switches the integration off before it.
GROUP_INBOX = {
    "does basic call": "basic",
    "does log call": "log",
    "does log call with notify group with two a log entry": "notify2",
    "does log call with notify group without a log entry": "notify0",
    "does queue param tests": "queue",
}
ZAMMAD_SETTINGS: dict[str, Any] = {
    "blocked_callers": ["491715000000"],
    "caller_id_routes": [
        {"dest": "41*", "caller_id": "41715880339000"},
        {"dest": "491714000000", "caller_id": "41715880339000"},
    ],
    "default_caller_id": "4930777000000",
    "default_region": "DE",
}


def _expected_body(expected: dict[str, Any]) -> dict[str, Any] | None:
    if expected.get("body") == "blank {}":
        return {}
    if "action" in expected:
        return {k: v for k, v in expected.items() if k in ("action", "reason", "number", "caller_id")}
    if "error" in expected:
        return {"error": expected["error"]}
    return None  # the spec checks only the status here


async def test_replay_of_zammad_cti_spec_gives_its_responses_and_one_record_per_finished_call(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    need(SPEC.exists(), f"{SPEC} is missing")
    requests = json.loads(await asyncio.to_thread(SPEC.read_text))
    assert len(requests) == 31
    inboxes = [phone_inbox(name, **ZAMMAD_SETTINGS) for name in GROUP_INBOX.values()]
    inboxes.append(phone_inbox("off", cti_enabled=False, **ZAMMAD_SETTINGS))
    config = make_config(tmp_path, inboxes=inboxes)
    async with started(config, bot_setup) as gw:
        replayed = 0
        for i, request in enumerate(requests):
            if request["url_token"] != "valid":
                continue  # #31 marks a caller-log entry done in Zammad's UI; here that is resolving the ticket
            expected = request["expected_response"]
            inbox = "off" if "error" in expected else GROUP_INBOX[request["test"]]
            status, body = await cti(gw, inbox, request["params"], form=i % 2 == 1)
            want_status = {"ok": 200, "unprocessable_entity": 422}.get(expected.get("http_status", "ok"))
            assert status == want_status, (i + 1, request, body)
            if (want := _expected_body(expected)) is not None:
                assert body == want, (i + 1, request)
            replayed += 1
            await asyncio.sleep(0.02)  # events of one call are seconds apart on a real PBX
        assert replayed == 30
        await settled(gw)

        # "does log call": the five calls that hung up, all on the one customer 4912347114711.
        out_cancel = await call_message(gw, "log", "1234567890-1")
        assert out_cancel is not None and out_cancel.kind is MessageKind.CALL
        assert out_cancel.meta["direction"] == "out"
        assert out_cancel.meta["from"] == "4930777000000"  # the caller id the customer saw, as Zammad logs it
        assert out_cancel.meta["to"] == "4912347114711"
        assert out_cancel.meta["queue"] == "4930777000000"
        assert out_cancel.meta["agent"] == "user 1"
        assert out_cancel.meta["disposition"] == "cancel" and out_cancel.meta["cause"] == "cancel"
        assert out_cancel.meta["wait_s"] > 0 and out_cancel.meta["talk_s"] is None
        assert out_cancel.meta["answered_at"] is None and out_cancel.meta["ended_at"]

        out_talk = await call_message(gw, "log", "1234567890-2")
        assert out_talk is not None
        assert out_talk.meta["disposition"] == "answered" and out_talk.meta["cause"] == "normalClearing"
        assert out_talk.meta["wait_s"] > 0 and out_talk.meta["talk_s"] > 0

        answered = await call_message(gw, "log", "1234567890-3")
        assert answered is not None
        assert answered.meta["direction"] == "in" and answered.meta["queue"] == "4930600000000"
        assert answered.meta["agent"] == "user 1"
        assert answered.meta["disposition"] == "answered"
        assert answered.meta["wait_s"] > 0 and answered.meta["talk_s"] > 0
        assert "ticket_request" not in answered.meta

        voicemail = await call_message(gw, "log", "1234567890-4")
        assert voicemail is not None
        assert voicemail.meta["disposition"] == "voicemail" and voicemail.meta["agent"] is None
        assert voicemail.meta["talk_s"] is not None  # Zammad: talking time truthy, done false

        unanswered = await call_message(gw, "log", "1234567890-5")
        assert unanswered is not None
        assert unanswered.meta["disposition"] == "no_answer" and unanswered.meta["agent"] == "user 1,user 2"
        assert unanswered.meta["answered_at"] is None and unanswered.meta["talk_s"] is None

        conversations = {m.conversation_id for m in (out_cancel, out_talk, answered, voicemail, unanswered)}
        assert len(conversations) == 1, "every call with +49 1234 7114711 is on that customer's conversation"

        # Not done in Zammad's caller log (voicemail, then an unanswered call) = one callback ticket here,
        # raised a step by the repeat.
        (ticket,) = await tickets_of(gw, unanswered)
        assert ticket.handoff_reason is HandoffReason.VOICEMAIL
        assert ticket.priority is Priority.HIGH
        status, detail = await gw.api("GET", f"/tickets/{ticket.number}")
        assert status == 200
        assert [m["external_id"] for m in detail["messages"]][-2:] == ["1234567890-4", "1234567890-5"]
        status, _ = await gw.api("PATCH", f"/tickets/{ticket.id}", json={"status": "resolved"})
        assert status == 200  # the spec's last request: the caller-log entry is done

        # Calls still ringing (a newCall only) have no record yet; blocked and outbound dials neither.
        for inbox, call_id in [
            ("log", "1234567890-6"),
            ("log", "1234567890-7"),
            ("basic", "4991155921769858278-1"),
            ("basic", "4991155921769858278-2"),
            ("basic", "8621106404543334274-3"),
            ("queue", "1234567890-1"),
            ("queue", "1234567890-2"),
            ("notify2", "1234567890-1"),
            ("off", "4991155921769858278-6"),
        ]:
            assert await call_message(gw, inbox, call_id) is None, (inbox, call_id)

        status, listed = await gw.api("GET", "/tickets?channel=phone")
        assert status == 200 and [t["id"] for t in listed["tickets"]] == [ticket.id]
        assert await store_of(gw).get_checkpoint("phone:queue:call:1234567890-2:newCall") is not None
