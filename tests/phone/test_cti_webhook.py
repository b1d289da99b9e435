"""The CTI webhook on the real server: auth, bodies, out-of-order and repeated events, tickets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.config import ConfigError, PhoneInbox
from core.model import Author, Channel, Direction, HandoffReason, Identity, IdentityKind, Priority
from gateway.intake import BotSetup
from tests.conftest import Gateway, make_config, started
from tests.phone.conftest import SECRET, TOKEN, call_message, cti, phone_inbox, settled, signed, store_of, tickets_of

CALLER = "13800138000"  # a Chinese mobile as a PBX in China sends it: national, no +86
E164 = "+8613800138000"


@pytest.fixture
async def gw(tmp_path: Path, bot_setup: BotSetup) -> AsyncIterator[Gateway]:
    inboxes = [
        phone_inbox("tel", blocked_callers=["+86 139 0000 0000"], settle_s=0.3),
        phone_inbox("signed", token=None, hmac_secret=SECRET),
        phone_inbox("off", cti_enabled=False),
    ]
    async with started(make_config(tmp_path, inboxes=inboxes), bot_setup) as gateway:
        yield gateway


def new_call(call_id: str, caller: str = CALLER, **extra: object) -> dict[str, object]:
    return {"event": "newCall", "direction": "in", "from": caller, "to": "4008001234", "callId": call_id, **extra}


def hangup(call_id: str, cause: str, caller: str = CALLER, **extra: object) -> dict[str, object]:
    return {"event": "hangup", "direction": "in", "from": caller, "to": "4008001234", "callId": call_id,
            "cause": cause, **extra}  # fmt: skip


async def test_missed_inbound_call_opens_callback_ticket_with_a_readable_summary(gw: Gateway) -> None:
    assert await cti(gw, "tel", new_call("c1", queue="sales", user=["Wang", "Li"]), form=True) == (200, {})
    await asyncio.sleep(0.05)
    assert await cti(gw, "tel", hangup("c1", "noAnswer")) == (200, {})
    await settled(gw)
    message = await call_message(gw, "tel", "c1")
    assert message is not None and message.author is Author.CUSTOMER
    assert message.text.startswith(
        "未接来电 / Missed call from +86 138 0013 8000, queue sales, agent Wang, Li, waited "
    )
    assert message.meta["disposition"] == "no_answer" and message.meta["wait_s"] >= 0.05
    conversation = await store_of(gw).get_conversation(message.conversation_id)
    assert conversation is not None and conversation.address == Identity(IdentityKind.PHONE, E164)
    (ticket,) = await tickets_of(gw, message)
    assert ticket.handoff_reason is HandoffReason.MISSED_CALL and ticket.priority is Priority.NORMAL
    assert ticket.subject == "未接来电 / Missed call from +86 138 0013 8000"
    assert set(ticket.tags) == {"phone", "missed-call"}
    replies = [m for m in await store_of(gw).messages(message.conversation_id) if m.direction is Direction.OUTBOUND]
    assert replies == [], "the bot never answers a call"


async def test_repeat_missed_call_joins_the_open_ticket_and_raises_its_priority(gw: Gateway) -> None:
    for call_id, cause in (("r1", "cancel"), ("r2", "busy"), ("r3", "noAnswer")):
        await cti(gw, "tel", new_call(call_id))
        await cti(gw, "tel", hangup(call_id, cause))
        await settled(gw)
    first = await call_message(gw, "tel", "r1")
    assert first is not None
    (ticket,) = await tickets_of(gw, first)
    assert ticket.priority is Priority.URGENT  # normal, then high, then urgent
    status, detail = await gw.api("GET", f"/tickets/{ticket.id}")
    assert status == 200 and [m["external_id"] for m in detail["messages"]] == ["r1", "r2", "r3"]
    assert [m["meta"]["disposition"] for m in detail["messages"]] == ["cancel", "busy", "no_answer"]


async def test_answered_call_is_logged_without_a_ticket(gw: Gateway) -> None:
    await cti(gw, "tel", new_call("a1", user="Wang"))
    await cti(gw, "tel", {"event": "answer", "callId": "a1", "direction": "in", "user": "Wang"}, form=True)
    await asyncio.sleep(0.05)
    await cti(gw, "tel", hangup("a1", "normalClearing", answeringNumber="wang@example.com"))
    await settled(gw)
    message = await call_message(gw, "tel", "a1")
    assert message is not None and message.meta["disposition"] == "answered"
    assert message.meta["agent"] == "Wang" and message.meta["talk_s"] >= 0.05
    assert message.text.startswith("已接来电 / Answered call from +86 138 0013 8000")
    assert await tickets_of(gw, message) == []


async def test_hangup_before_its_new_call_still_makes_one_complete_record(gw: Gateway) -> None:
    assert await cti(gw, "tel", hangup("o1", "cancel")) == (200, {})
    assert await call_message(gw, "tel", "o1") is None, "waits for the newCall that has the queue and agents"
    await cti(gw, "tel", new_call("o1", queue="support", user="Zhao"), form=True)
    await settled(gw)
    message = await call_message(gw, "tel", "o1")
    assert message is not None
    assert message.meta["queue"] == "support" and message.meta["agent"] == "Zhao"
    assert message.meta["disposition"] == "cancel"
    assert message.meta["wait_s"] is None, "times in the wrong order give no invented waiting time"
    await asyncio.sleep(0.4)  # past settle_s: the waiting hangup must not log the call a second time
    await settled(gw)
    calls = await store_of(gw).messages(message.conversation_id)
    assert [m.external_id for m in calls] == ["o1"]


async def test_hangup_whose_new_call_never_comes_is_logged_after_the_settle_time(gw: Gateway) -> None:
    await cti(gw, "tel", hangup("h1", "busy"))
    await asyncio.sleep(0.5)
    await settled(gw)
    message = await call_message(gw, "tel", "h1")
    assert message is not None and message.meta["disposition"] == "busy"
    assert message.meta["from"] == CALLER and message.meta["queue"] == "4008001234"
    (ticket,) = await tickets_of(gw, message)
    assert ticket.handoff_reason is HandoffReason.MISSED_CALL


async def test_concurrent_repeats_of_every_event_make_one_call_record_and_one_ticket(gw: Gateway) -> None:
    events = [new_call("d1"), hangup("d1", "noAnswer")] * 4
    results = await asyncio.gather(*(cti(gw, "tel", e, form=i % 2 == 0) for i, e in enumerate(events)))
    assert all(status == 200 for status, _ in results)
    await settled(gw)
    message = await call_message(gw, "tel", "d1")
    assert message is not None
    assert [m.external_id for m in await store_of(gw).messages(message.conversation_id)] == ["d1"]
    status, listed = await gw.api("GET", "/tickets?channel=phone")
    assert status == 200 and len(listed["tickets"]) == 1


async def test_blocked_caller_is_rejected_busy_and_its_call_opens_no_ticket(gw: Gateway) -> None:
    status, body = await cti(gw, "tel", new_call("b1", caller="13900000000"))
    assert (status, body) == (200, {"action": "reject", "reason": "busy"})
    await cti(gw, "tel", hangup("b1", "busy", caller="13900000000"))
    await settled(gw)
    message = await call_message(gw, "tel", "b1")
    assert message is not None and message.meta["disposition"] == "blocked"
    assert await tickets_of(gw, message) == []


async def test_voicemail_transcript_and_recording_go_on_the_ticket(gw: Gateway) -> None:
    await cti(gw, "tel", new_call("v1"))
    await cti(gw, "tel", {"event": "answer", "callId": "v1", "user": "voicemail"})
    transcript = "你好，我的订单还没到，请回电"
    await cti(gw, "tel", hangup("v1", "normalClearing", voicemailTranscript=transcript,
                                recordingUrl="https://pbx.example.com/rec/v1.wav"))  # fmt: skip
    await settled(gw)
    message = await call_message(gw, "tel", "v1")
    assert message is not None
    assert message.meta["transcript"] == transcript
    assert message.meta["recording_url"] == "https://pbx.example.com/rec/v1.wav"
    assert transcript in message.text and "https://pbx.example.com/rec/v1.wav" in message.text
    (ticket,) = await tickets_of(gw, message)
    assert ticket.handoff_reason is HandoffReason.VOICEMAIL
    assert ticket.subject == "语音留言 / Voicemail from +86 138 0013 8000"


async def test_anonymous_missed_call_is_logged_on_its_own_and_opens_no_ticket(gw: Gateway) -> None:
    for call_id in ("x1", "x2"):
        await cti(gw, "tel", new_call(call_id, caller="anonymous"))
        await cti(gw, "tel", hangup(call_id, "cancel", caller="anonymous"))
    await settled(gw)
    first, second = await call_message(gw, "tel", "x1"), await call_message(gw, "tel", "x2")
    assert first is not None and second is not None
    assert first.conversation_id != second.conversation_id, "strangers are not lumped into one contact"
    assert first.text.startswith("未接来电（来电者挂断）/ Abandoned call from anonymous")
    assert await tickets_of(gw, first) == []


async def test_outbound_dial_gets_the_configured_caller_id(tmp_path: Path, bot_setup: BotSetup) -> None:
    inbox = phone_inbox("tel", default_caller_id="4008001234",
                        caller_id_routes=[{"dest": "0086*", "caller_id": "01065529988"}])  # fmt: skip
    async with started(make_config(tmp_path, inboxes=[inbox]), bot_setup) as gw:
        out = {"event": "newCall", "direction": "out", "from": "201", "callId": "o9", "user": "Wang"}
        assert await cti(gw, "tel", {**out, "to": "008613800138000"}) == (
            200, {"action": "dial", "number": "008613800138000", "caller_id": "01065529988"})  # fmt: skip
        assert (await cti(gw, "tel", {**out, "callId": "o10", "to": "13800138000"}))[1]["caller_id"] == "4008001234"


async def test_a_signed_request_older_than_the_window_is_refused_and_the_old_scheme_is_selectable(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    """CTI signatures had no timestamp: a captured signed request was accepted forever."""
    inboxes = [
        phone_inbox("signed", token=None, hmac_secret=SECRET),
        phone_inbox("legacy", token=None, hmac_secret=SECRET, hmac_scheme="body"),
    ]
    async with started(make_config(tmp_path, inboxes=inboxes), bot_setup) as gw:
        now = int(datetime.now(UTC).timestamp())
        assert (await cti(gw, "signed", new_call("t1"), token=None, secret=SECRET, at=now - 30))[0] == 200
        assert (await cti(gw, "signed", new_call("t2"), token=None, secret=SECRET, at=now - 3600))[0] == 401
        assert (await cti(gw, "signed", new_call("t3"), token=None, secret=SECRET, legacy=True))[0] == 401
        assert (await cti(gw, "legacy", new_call("t4"), token=None, secret=SECRET, legacy=True))[0] == 200
        # A valid signature moved to another time does not verify: the timestamp is signed.
        body = json.dumps(new_call("t5")).encode()
        headers = signed(SECRET, body, timestamp=now - 3600) | {"Content-Type": "application/json"}
        headers["X-Huiliu-Timestamp"] = str(now)
        async with gw.http.post(f"{gw.url}/cti/signed", data=body, headers=headers) as resp:
            assert resp.status == 401


async def test_hmac_signed_event_is_accepted_and_a_bad_signature_or_token_is_refused(gw: Gateway) -> None:
    assert await cti(gw, "signed", new_call("s1"), token=None, secret=SECRET) == (200, {})
    assert await cti(gw, "signed", new_call("s1"), token=None, form=True, secret=SECRET) == (200, {})
    status, body = await cti(gw, "signed", new_call("s2"), token=None, secret="another-secret-0123456789")
    assert status == 401 and body == {"error": "Invalid token, please contact your admin!"}
    assert (await cti(gw, "signed", new_call("s3"), token=TOKEN))[0] == 401, "this inbox takes signatures only"
    assert (await cti(gw, "tel", new_call("s4"), token="wrong-token-0000"))[0] == 401
    assert (await cti(gw, "tel", new_call("s5"), token=None))[0] == 401
    assert await store_of(gw).get_checkpoint("phone:tel:call:s4:newCall") is None
    async with gw.http.post(f"{gw.url}/cti/tel/{TOKEN}", json=new_call("s6")) as resp:  # Zammad's URL form
        assert resp.status == 200 and await resp.json() == {}


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b'{"event": "newCall", "direction": "in", "from": "1"}', "application/json", "callId: missing"),
        (b'{"event": "ringing", "callId": "1"}', "application/json", "event: 'ringing' is not newCall"),
        (b'{"event": "newCall", "callId": "1"', "application/json", "body: not valid JSON"),
        (b'["newCall"]', "application/json", "body: expected a JSON object"),
        (b'{"event": "newCall", "callId": "1", "direction": "in", "from": ["a"]}', "application/json", "from: "),
        (b"event=newCall&callId=1&direction=sideways", "application/x-www-form-urlencoded", "direction: 'sideways'"),
        (b"\xff\xfe", "application/json", "body: not UTF-8"),
    ],
)
async def test_malformed_event_gets_400_naming_the_field_and_is_quarantined(
    gw: Gateway, body: bytes, content_type: str, reason: str
) -> None:
    async with gw.http.post(
        f"{gw.url}/cti/tel?token={TOKEN}", data=body, headers={"Content-Type": content_type}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"].startswith(reason)
    (item,) = await store_of(gw).quarantined()
    assert item.channel is Channel.PHONE and item.raw == body and item.reason.startswith(reason)


async def test_oversized_body_and_switched_off_cti_are_refused(gw: Gateway) -> None:
    async with gw.http.post(f"{gw.url}/cti/tel?token={TOKEN}", data=b"x" * 70_000) as resp:
        assert resp.status == 413
    status, body = await cti(gw, "off", new_call("f1"))
    assert (status, body) == (422, {"error": "Feature not configured, please contact your admin!"})


def multipart(fields: list[tuple[str, str]], boundary: str = "cti-boundary-1") -> tuple[bytes, dict[str, str]]:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def test_a_multipart_event_is_read_and_a_truncated_one_is_400_and_quarantined(gw: Gateway) -> None:
    fields = [(k, str(v)) for k, v in new_call("m1").items()] + [("user[]", "李"), ("user[]", "Wang")]
    body, headers = multipart(fields)
    async with gw.http.post(f"{gw.url}/cti/tel?token={TOKEN}", data=body, headers=headers) as resp:
        assert resp.status == 200
    seen = await store_of(gw).get_checkpoint("phone:tel:call:m1:newCall")
    assert seen is not None and "李" in seen
    cut = body[: len(body) - 30]  # the closing boundary and part of the last field are gone
    async with gw.http.post(f"{gw.url}/cti/tel?token={TOKEN}", data=cut, headers=headers) as resp:
        assert resp.status == 400 and "multipart" in (await resp.json())["error"]
    (item,) = await store_of(gw).quarantined()
    assert item.raw == cut and "multipart" in item.reason


async def test_a_multipart_body_is_not_parsed_before_the_token_is_checked(gw: Gateway) -> None:
    body, headers = multipart([(k, str(v)) for k, v in new_call("m2").items()])
    async with gw.http.post(f"{gw.url}/cti/tel?token=wrong-token-0000", data=body[:-10], headers=headers) as resp:
        assert resp.status == 401
    assert await store_of(gw).quarantined() == []


async def test_a_chunked_body_past_the_cap_is_413_whatever_its_type(gw: Gateway) -> None:
    """A chunked body declares no length: the cap is enforced as it streams in."""
    big, headers = multipart([*((k, str(v)) for k, v in new_call("m3").items()), ("pad", "x" * 100_000)])

    async def chunks() -> AsyncIterator[bytes]:
        for at in range(0, len(big), 8192):
            yield big[at : at + 8192]

    for content_type in (headers["Content-Type"], "application/json"):
        url = f"{gw.url}/cti/tel?token={TOKEN}"
        async with gw.http.post(url, data=chunks(), headers={"Content-Type": content_type}) as resp:
            assert resp.status == 413
    assert await store_of(gw).get_checkpoint("phone:tel:call:m3:newCall") is None


async def test_call_from_a_number_on_a_wechat_contact_lands_on_that_contact(gw: Gateway) -> None:
    store = store_of(gw)
    now = datetime.now(UTC)
    wechat = await store.conversation_for(
        Identity(IdentityKind.WECHAT_OPENID, "oWx_0123456789abcdef"), channel=Channel.WECHAT, inbox="wx",
        name="李雷", now=now,
    )  # fmt: skip
    assert await store.add_identity(wechat.contact_id, Identity(IdentityKind.PHONE, E164))
    await cti(gw, "tel", new_call("w1", caller="+86 138-0013-8000"))
    await cti(gw, "tel", hangup("w1", "noAnswer", caller="+86 138-0013-8000"))
    await settled(gw)
    message = await call_message(gw, "tel", "w1")
    assert message is not None
    conversation = await store.get_conversation(message.conversation_id)
    assert conversation is not None and conversation.contact_id == wechat.contact_id
    contact = await store.get_contact(wechat.contact_id)
    assert contact is not None and contact.name == "李雷" and not contact.flags
    status, detail = await gw.api("GET", f"/tickets/{conversation.ticket_id}")
    assert status == 200 and detail["contact"]["id"] == wechat.contact_id


async def test_call_state_expires_after_call_state_ttl_s_and_a_late_repeat_logs_nothing_new(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    # Each event's state is kept call_state_ttl_s (7 days by default), then expires and is swept:
    # a busy call centre no longer grows the store with every call ever taken.
    inbox = phone_inbox("tel", settle_s=0.1, call_state_ttl_s=0.5)
    async with started(make_config(tmp_path, inboxes=[inbox]), bot_setup) as gw:
        store = store_of(gw)
        assert await cti(gw, "tel", new_call("x1")) == (200, {})
        assert await cti(gw, "tel", hangup("x1", "noAnswer")) == (200, {})
        await settled(gw)
        first = await call_message(gw, "tel", "x1")
        assert first is not None
        assert await store.get_checkpoint("phone:tel:call:x1:newCall") is not None
        await asyncio.sleep(0.6)
        assert await store.get_checkpoint("phone:tel:call:x1:newCall") is None
        assert await store.get_checkpoint("phone:tel:call:x1:hangup") is None
        assert await store.purge_expired() == 2  # both rows really go
        # The PBX repeats the hangup a week later: state is gone, but the call is not logged twice.
        assert await cti(gw, "tel", hangup("x1", "noAnswer")) == (200, {})
        await asyncio.sleep(0.3)  # past settle_s: the lone hangup has been logged (as a repeat)
        await settled(gw)
        again = await call_message(gw, "tel", "x1")
        assert again is not None and again.id == first.id
        assert len(await tickets_of(gw, first)) == 1


def test_call_state_ttl_defaults_to_a_week_and_must_outlast_settle_s(tmp_path: Path) -> None:
    [inbox] = make_config(tmp_path, inboxes=[phone_inbox("tel")]).inboxes
    assert isinstance(inbox, PhoneInbox) and inbox.call_state_ttl_s == 7 * 86400
    with pytest.raises(ConfigError, match="call_state_ttl_s must be longer than settle_s"):
        make_config(tmp_path, inboxes=[phone_inbox("tel", settle_s=60, call_state_ttl_s=30)])
