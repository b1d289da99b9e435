"""Broken input never crashes a parser: real samples, mutated at random, give a result or the documented error.

Each parser either reads what it is given or raises its one error type, which the connector turns into a clear
refusal or a quarantined item. Any other exception would be a 500 or a stuck mailbox, so it fails the test.
The runs are derandomized: CI sees the same cases every time, and a failure shrinks to a small example.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.email.parse import MailParseError, ParsedMail, parse_mail
from connectors.email.quote import extract_reply, strip_signature
from connectors.phone.cdr import CdrFormat, CdrOptions, ParsedCdr, parse_cdr
from connectors.phone.cti import CtiError, form_params, multipart_pairs, parse_params
from connectors.webchat.protocol import FrameError, parse_frame
from connectors.wechat import crypto
from connectors.wechat.parse import MAX_DEPTH, Push, PushError, parse_push
from connectors.wechat.signature import sign
from gateway.app import GATEWAY, build_bot
from gateway.intake import BotSetup
from normalizer.phone import display, read_number, to_e164
from normalizer.text import clean_text, fold_for_matching
from tests.conftest import SHARED, make_config, need, started
from tests.email.corpus import mail_files
from tests.phone.rows import asterisk, freeswitch, fs_json

FUZZ = settings(
    max_examples=int(os.environ.get("HUILIU_FUZZ_EXAMPLES", "300")),
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
WECHAT = SHARED / "corpora" / "wechat" / "plain"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
WECHAT_TOKEN = "fuzz-token"
CTI_TOKEN = "cti-fuzz-token-0123456789"
# Bytes that matter to the formats: markup, quoting, line structure, encodings.
SPECIAL = [b"<", b">", b"/", b"&", b"<![CDATA[", b"]]>", b'"', b",", b"\r\n", b"\n", b"=?", b"?=", b"\x00", b"\xff",
           b"\xe4\xbd\xa0", b"--", b":", b";", b"{", b"}", b"<!DOCTYPE x [<!ENTITY a 'b'>]>", b"&a;"]  # fmt: skip


def mangle(
    sample: bytes,
    randint: Callable[[int, int], int],
    pick: Callable[[Sequence[Any]], Any],
    noise: Callable[[int], bytes],
) -> bytes:
    """A sample with a few random edits: bytes flipped, cut, repeated or inserted, or the tail dropped. The
    choices come from hypothesis (so a failure shrinks) or from a seeded generator (the end-to-end runs)."""
    data = bytearray(sample)
    for _ in range(randint(1, 5)):
        at = randint(0, len(data))
        op = pick(["flip", "cut", "repeat", "insert", "special", "truncate"])
        if op == "flip" and at < len(data):
            data[at] = randint(0, 255)
        elif op == "cut":
            del data[at : at + randint(1, 64)]
        elif op == "repeat":
            data[at:at] = data[at : at + randint(1, 200)]
        elif op == "insert":
            data[at:at] = noise(randint(1, 24))
        elif op == "special":
            data[at:at] = pick(SPECIAL)
        else:
            del data[at:]
    return bytes(data)


@st.composite
def mutated(draw: st.DrawFn, samples: list[bytes]) -> bytes:
    return mangle(
        draw(st.sampled_from(samples)),
        lambda lo, hi: draw(st.integers(lo, hi)),
        lambda options: draw(st.sampled_from(options)),
        lambda n: draw(st.binary(min_size=n, max_size=n)),
    )


def _mangle(rng: random.Random, sample: bytes) -> bytes:
    return mangle(sample, rng.randint, rng.choice, rng.randbytes)


def _wechat_samples() -> list[bytes]:
    need(WECHAT.is_dir(), f"the WeChat corpus is not at {WECHAT}")
    return [p.read_bytes() for p in sorted(WECHAT.rglob("*.xml"))]


@FUZZ
@given(data=st.data())
def test_a_mangled_wechat_push_parses_or_is_refused_with_a_push_error(data: st.DataObject) -> None:
    body = data.draw(mutated(_wechat_samples()))
    try:
        push = parse_push(body, inbox="oa", received_at=NOW, menu_faq={"MENU_A": "invoice"})
    except PushError as exc:
        assert exc.code and exc.message
    else:
        assert isinstance(push, Push) and push.message.external_id


def nested(sample: bytes, depth: int, tag: bytes = b"a") -> bytes:
    """A sample with elements nested ``depth`` deep inside its root: hostile shape, validly formed."""
    at = sample.rfind(b"</xml>")
    at = at if at >= 0 else len(sample)
    return sample[:at] + b"<%s>" % tag * depth + b"x" + b"</%s>" % tag * depth + sample[at:]


@FUZZ
@given(data=st.data(), depth=st.integers(1, 3000))
def test_a_deeply_nested_wechat_push_parses_or_is_refused_with_a_push_error(data: st.DataObject, depth: int) -> None:
    body = nested(data.draw(st.sampled_from(_wechat_samples())), depth)
    try:
        push = parse_push(body, inbox="oa", received_at=NOW, menu_faq={"MENU_A": "invoice"})
    except PushError as exc:
        assert exc.code == "bad_xml" and depth + 1 > MAX_DEPTH  # the root is the first level
    else:
        assert isinstance(push, Push) and depth + 1 <= MAX_DEPTH


def _mail_samples() -> list[bytes]:
    files = mail_files()
    need(bool(files), "the email corpora are not in ../shared/corpora/email")
    # Every 8th file of the corpora (bounces, replies, charsets, MIME), kept small so the run stays quick.
    return [p.read_bytes()[:20_000] for p in files[::8]]


@FUZZ
@given(data=st.data())
def test_a_mangled_mail_parses_or_is_quarantined_with_a_reason(data: st.DataObject) -> None:
    raw = data.draw(mutated(_mail_samples()))
    try:
        mail = parse_mail(raw)
    except MailParseError as exc:
        assert str(exc)
    else:
        assert isinstance(mail, ParsedMail) and mail.dedupe_key


_CDR = {
    CdrFormat.ASTERISK_CSV: "\n".join([asterisk(), asterisk(src="", disposition="NO ANSWER", answer=""), asterisk()]),
    CdrFormat.FREESWITCH_CSV: "\n".join([freeswitch(), freeswitch(billsec="0", answer_stamp="")]),
    CdrFormat.FREESWITCH_JSON: "\n".join([fs_json(), fs_json()]),
}


@FUZZ
@given(fmt=st.sampled_from(list(_CDR)), data=st.data())
def test_a_mangled_cdr_file_reports_bad_rows_and_never_raises(fmt: CdrFormat, data: st.DataObject) -> None:
    text = data.draw(mutated([_CDR[fmt].encode()])).decode("utf-8", "replace")
    parsed = parse_cdr(text, fmt, CdrOptions(timezone=ZoneInfo("Asia/Shanghai")))
    assert isinstance(parsed, ParsedCdr)
    assert all(bad.line >= 1 and bad.reason for bad in parsed.bad)


_CTI = (
    b"event=newCall&from=013800138000&to=4008001234&direction=in&callId=abc-1&user%5B%5D=Li&user%5B%5D=Wang",
    b"event=hangup&cause=normalClearing&callId=abc-1&from=013800138000&to=4008001234&direction=in&answeringNumber=201",
    b"event=answer&callId=abc-1&user=Li&from=013800138000&to=4008001234&direction=in",
)


@FUZZ
@given(data=st.data())
def test_a_mangled_cti_event_is_read_or_refused_with_a_cti_error(data: st.DataObject) -> None:
    body = data.draw(mutated(list(_CTI))).decode("utf-8", "replace")
    try:
        parse_params(form_params(parse_qsl(body, keep_blank_values=True)))
    except CtiError as exc:
        assert str(exc)


_BOUNDARY = "fuzz-b0undary"
_MULTIPART_TYPE = f"multipart/form-data; boundary={_BOUNDARY}"


def _multipart(body: bytes) -> bytes:
    """A CTI event as multipart/form-data, the way some PBXes post it."""
    parts = [
        b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (_BOUNDARY.encode(), k.encode(), v.encode())
        for k, v in parse_qsl(body.decode(), keep_blank_values=True)
    ]
    return b"".join(parts) + b"--%s--\r\n" % _BOUNDARY.encode()


@FUZZ
@given(data=st.data(), cut=st.integers(0, 400))
def test_a_mangled_or_truncated_multipart_cti_event_is_read_or_refused_with_a_cti_error(
    data: st.DataObject, cut: int
) -> None:
    body = data.draw(mutated([_multipart(b) for b in _CTI]))
    body = body[: max(0, len(body) - cut)]
    try:
        parse_params(form_params(multipart_pairs(_MULTIPART_TYPE, body)))
    except CtiError as exc:
        assert str(exc)


_FRAMES = (
    b'{"type": "hello", "token": null, "last_seq": 0}',
    b'{"type": "message", "id": "c1", "text": "\\u6211\\u60f3\\u9000\\u6b3e"}',
    b'{"type": "pick", "id": "c2", "faq_id": "refund"}',
    b'{"type": "typing", "on": true}',
)


@FUZZ
@given(data=st.data())
def test_a_mangled_chat_frame_is_read_or_refused_with_a_frame_error(data: st.DataObject) -> None:
    frame = data.draw(mutated(list(_FRAMES)))
    try:
        parse_frame(frame, max_bytes=8192, max_text_chars=2000)
    except FrameError as exc:
        assert str(exc)


def test_the_fuzzed_samples_are_there() -> None:
    """The mutations start from real input: a run over an empty corpus would prove nothing."""
    assert len(_wechat_samples()) >= 40
    assert len(_mail_samples()) >= 20


async def test_the_gateway_answers_mangled_pushes_and_cti_events_without_a_server_error(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    """Through the real HTTP server, signed and authenticated, so the bodies reach the connectors' own code:
    every answer is a success or a clear 4xx, never a 500, and the gateway is still ready afterwards."""
    rng = random.Random(20261203)
    wechat = _wechat_samples()
    config = make_config(
        tmp_path,
        inboxes=[
            {"name": "oa", "channel": "wechat", "token": WECHAT_TOKEN, "app_id": "wx0123456789abcdef",
             "app_secret": "secret", "api_base": "http://127.0.0.1:9"},
            {"name": "tel", "channel": "phone", "token": CTI_TOKEN, "settle_s": 0.1},
        ],
    )  # fmt: skip
    statuses: collections.Counter[int] = collections.Counter()
    async with started(config, bot_setup) as gw:
        for n in range(300):
            timestamp, nonce = str(int(time.time())), f"fuzz{n}"
            query = {"timestamp": timestamp, "nonce": nonce, "signature": sign(WECHAT_TOKEN, timestamp, nonce)}
            sample = rng.choice(wechat)
            pushed = nested(sample, rng.randint(1, 3000)) if n % 10 == 0 else _mangle(rng, sample)
            async with gw.http.post(f"{gw.url}/wechat/oa", params=query, data=pushed) as r:
                statuses[r.status] += 1
            body = _mangle(rng, rng.choice(_CTI))
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            if n % 3 == 0:  # multipart, often cut short as a dropped connection leaves it
                body = _multipart(rng.choice(_CTI))
                body, headers = body[: rng.randint(0, len(body))], {"Content-Type": _MULTIPART_TYPE}
            async with gw.http.post(f"{gw.url}/cti/tel?token={CTI_TOKEN}", data=body, headers=headers) as r:
                statuses[r.status] += 1
        async with gw.http.get(f"{gw.url}/readyz") as r:
            assert r.status == 200
        await gw.server.app[GATEWAY].tasks.drain(10)
    assert all(status < 500 for status in statuses), statuses
    assert statuses[200] > 30 and statuses[400] > 30, statuses  # the edits both kept and broke bodies


async def test_a_chat_socket_fed_mangled_frames_stays_usable(tmp_path: Path, bot_setup: BotSetup) -> None:
    """Garbage on a visitor's socket gets error frames (or, at worst, a closed socket), and the visitor's next
    good message is still taken in."""
    rng = random.Random(7)
    web = {"name": "web", "channel": "webchat", "allowed_origins": ["*"], "frames_per_minute": 10_000}
    async with started(make_config(tmp_path, inboxes=[web]), bot_setup) as gw:
        chat = await gw.chat()
        for _ in range(200):
            await chat.send_raw(_mangle(rng, rng.choice(_FRAMES)).decode("utf-8", "replace"))
        if chat.ws.closed:
            chat = await gw.chat(token=chat.token)
        await chat.ws.send_json({"type": "message", "id": "after-fuzz", "text": "怎么开发票"})
        while (await chat.expect("ack"))["id"] != "after-fuzz":  # acks of mangled frames that still read
            pass
        errors = [f for f in chat.frames if f["type"] == "error"]
        assert errors and all(f["code"] and f["message"] for f in errors)


@FUZZ
@given(data=st.data())
def test_reply_extraction_never_fails_on_a_mangled_mail_body(data: st.DataObject) -> None:
    raw = data.draw(mutated(_mail_samples()))
    try:
        text = parse_mail(raw).text
    except MailParseError:
        return
    reply = strip_signature(extract_reply(text))
    assert isinstance(reply, str) and len(reply) <= len(text) + 1


def _vectors() -> list[dict[str, Any]]:
    from tests.wechat.test_parse import vectors

    found = vectors()
    need(bool(found), "the WeChat encrypted vectors are not in ../shared/corpora/wechat/encrypted")
    return found


@FUZZ
@given(data=st.data())
def test_a_mangled_ciphertext_is_refused_with_a_crypto_error(data: st.DataObject) -> None:
    vector = data.draw(st.sampled_from(_vectors()))
    encrypt = data.draw(mutated([vector["encrypt"].encode()])).decode("latin-1")
    key = crypto.aes_key(vector["encoding_aes_key"])
    try:
        plain = crypto.decrypt(encrypt, key=key, app_id=vector["appid"])
    except crypto.CryptoError as exc:
        assert str(exc)
    else:
        # AES-CBC has no integrity of its own (msg_signature over the ciphertext is WeChat's): an edit may still
        # decrypt, to text that differs where the edit hit.
        assert isinstance(plain, str)


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value: what a confused or hostile API client might send where an object is expected."""
    kinds = ["null", "bool", "int", "float", "str"] + (["list", "dict"] * 2 if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, -1, 1, 2**31, 2**63, -(2**70), rng.randint(-1000, 1000)])
    if kind == "float":
        return rng.choice([0.5, -1e308, 1e308, rng.uniform(-10, 10)])
    if kind == "str":
        return rng.choice(["", " ", "退款", "open", "high", "x" * 5000, "\u0000", "HL-000001", "wang", "🙂"])
    if kind == "list":
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["text", "agent", "status", "priority", "assignee", "tags", "id", "questions", "answer", "keywords"]
    return {rng.choice(keys): _json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


async def test_the_rest_api_answers_any_json_with_a_clear_status_never_a_server_error(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    rng = random.Random(42)
    kb = tmp_path / "faq.yaml"
    kb.write_text((Path(__file__).parent.parent / "kb" / "faq.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    config = make_config(tmp_path, bot={"kb": str(kb)})
    statuses: collections.Counter[int] = collections.Counter()
    bot = await asyncio.to_thread(build_bot, config)
    async with started(config, bot) as gw:
        chat = await gw.chat()
        await chat.say("转人工")  # a ticket to act on
        _, body = await gw.api("GET", "/tickets")
        ticket = body["tickets"][0]["id"]
        targets = [
            ("PATCH", f"/tickets/{ticket}"),
            ("POST", f"/tickets/{ticket}/replies"),
            ("POST", f"/tickets/{ticket}/typing"),
            ("POST", "/faqs"),
            ("PUT", "/faqs/refund"),
        ]
        for n in range(int(os.environ.get("HUILIU_FUZZ_EXAMPLES", "400"))):
            method, path = rng.choice(targets)
            payload = json.dumps(_json_value(rng), ensure_ascii=False)
            if n % 5 == 0:
                payload = payload[: rng.randint(0, len(payload))]  # cut short: not JSON at all
            headers = {"Content-Type": "application/json", "Idempotency-Key": f"k{n % 7}"}
            status, _ = await gw.api(method, path, data=payload.encode(), headers=headers)
            statuses[status] += 1
        assert (await gw.api("GET", "/tickets"))[0] == 200
    assert all(status < 500 for status in statuses), statuses
    assert statuses[400] + statuses[422] > 100, statuses


NUMBERISH = st.text(alphabet="0123456789+()- .#*;@:telsipx\u3000０１２３", max_size=24)


@FUZZ
@given(raw=st.one_of(NUMBERISH, st.text(max_size=24)), region=st.sampled_from(["CN", "HK", "US", "ZZ", ""]))
def test_any_caller_id_reads_as_a_number_or_as_none(raw: str, region: str) -> None:
    e164 = to_e164(raw, region)
    reading = read_number(raw, region, ("HK", "TW"))
    for found in (e164, reading.e164, *reading.candidates):
        assert found is None or (found.startswith("+") and found[1:].isdigit())
        assert found is None or display(found)


@FUZZ
@given(text=st.text(max_size=200))
def test_any_text_cleans_to_text_and_analyzes_for_the_bot(text: str) -> None:
    cleaned = clean_text(text)
    assert isinstance(cleaned, str)
    assert isinstance(fold_for_matching(cleaned), str)


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.sampled_from(["", " ", "？？？", "我想退款" * 200, "a" * 2000])))
def test_the_bot_ranks_any_text_without_failing(bot_setup: BotSetup, text: str) -> None:
    hits = bot_setup.index.search(text, limit=3)
    assert len(hits) <= 3 and all(0.0 <= h.score <= 1.0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
