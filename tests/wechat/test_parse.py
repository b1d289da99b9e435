"""Pure parsing, signatures and crypto over the shared WeChat corpus and its golden vectors."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError

import pytest
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

from connectors.wechat import crypto
from connectors.wechat.parse import (
    Action,
    Opens,
    PushError,
    _check_depth,
    _declares_nothing,
    _to_value,
    parse_push,
    read_xml,
)
from connectors.wechat.render import passive_xml
from connectors.wechat.signature import sign, verify
from connectors.wechat.window import open_allowances
from core.config import ConfigError
from core.model import IdentityKind, MessageKind
from tests.conftest import SHARED, make_config, need
from tests.wechat.conftest import CORPUS, inbox, manifest

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MESSAGE_KINDS = {
    "text": MessageKind.TEXT,
    "image": MessageKind.IMAGE,
    "voice": MessageKind.VOICE,
    "video": MessageKind.VIDEO,
    "shortvideo": MessageKind.VIDEO,
    "location": MessageKind.LOCATION,
    "link": MessageKind.LINK,
}


def sample(entry: dict[str, Any]) -> bytes:
    return (CORPUS / entry["file"]).read_bytes()


def ids(entry: dict[str, Any]) -> str:
    return str(entry["file"]).rsplit("/", 1)[-1].removesuffix(".xml")


@pytest.mark.parametrize("entry", manifest(), ids=ids)
def test_every_plain_sample_becomes_a_message_with_a_stable_key(entry: dict[str, Any]) -> None:
    push = parse_push(sample(entry), inbox="oa", received_at=NOW)
    message = push.message
    fields = read_xml(sample(entry))
    assert message.sender.kind is IdentityKind.WECHAT_OPENID
    assert message.sender.value == fields["FromUserName"]
    assert message.raw == sample(entry).decode()
    assert message.sent_at == datetime.fromtimestamp(int(fields["CreateTime"]), UTC)
    msg_type = entry["MsgType"]
    if msg_type == "event":
        assert message.external_id == f"{fields['FromUserName']}:{fields['CreateTime']}:{entry['Event']}"
        assert message.kind in (MessageKind.EVENT, MessageKind.LOCATION, MessageKind.TEXT)
    elif msg_type in MESSAGE_KINDS:
        assert message.external_id == fields["MsgId"]
        assert message.kind is MESSAGE_KINDS[msg_type]
        assert push.opens is Opens.MESSAGE  # a user message opens the 48 h window
    else:  # unknown and device types: stored as unsupported, never an error
        assert message.kind is MessageKind.UNSUPPORTED
        assert message.meta["wechat"]["fields"]["MsgType"] == msg_type
    assert message.bot is (msg_type == "text")


def test_manifest_covers_every_documented_message_type() -> None:
    need(SHARED.exists(), "the shared corpus is not present")
    types = {e["MsgType"] for e in manifest()}
    assert {"text", "image", "voice", "video", "location", "link", "event"} <= types


def _xml(body: str, *, msg_type: str = "text", msg_id: str = "1") -> bytes:
    return (
        "<xml><ToUserName><![CDATA[gh_x]]></ToUserName><FromUserName><![CDATA[oU1]]></FromUserName>"
        f"<CreateTime>1700000000</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType>{body}<MsgId>{msg_id}</MsgId>"
        "</xml>"
    ).encode()


def test_voice_uses_recognition_as_text_and_keeps_the_media_reference() -> None:
    xml = _xml(
        "<MediaId><![CDATA[m-voice]]></MediaId><Format><![CDATA[amr]]></Format>"
        "<Recognition><![CDATA[怎么开发票]]></Recognition>",
        msg_type="voice",
    )
    message = parse_push(xml, inbox="oa", received_at=NOW).message
    assert (message.kind, message.text, message.bot) == (MessageKind.VOICE, "怎么开发票", True)
    assert message.attachments[0].media_id == "m-voice"
    assert message.attachments[0].content_type == "audio/amr"


def test_image_becomes_an_attachment_reference_with_media_id_and_pic_url() -> None:
    xml = _xml("<PicUrl><![CDATA[http://mmbiz/pic]]></PicUrl><MediaId><![CDATA[m1]]></MediaId>", msg_type="image")
    (attachment,) = parse_push(xml, inbox="oa", received_at=NOW).message.attachments
    assert (attachment.media_id, attachment.url) == ("m1", "http://mmbiz/pic")


def test_subscribe_with_a_scene_and_unsubscribe_are_contact_updates() -> None:
    need(SHARED.exists(), "the shared corpus is not present")
    sub = parse_push(
        (CORPUS / "plain/wechatpy/wechatpy__test_subscribe_scan_event.xml").read_bytes(), inbox="oa", received_at=NOW
    )
    assert sub.action is Action.SUBSCRIBE and sub.message.meta["scene"] == "123123" and not sub.message.bot
    unsub = parse_push(
        (CORPUS / "plain/wechatpy/wechatpy__test_unsubscribe_event.xml").read_bytes(), inbox="oa", received_at=NOW
    )
    assert unsub.action is Action.UNSUBSCRIBE and unsub.opens is None


def test_menu_click_maps_to_a_faq_pick_only_when_configured() -> None:
    need(SHARED.exists(), "the shared corpus is not present")
    xml = (CORPUS / "plain/wechatpy/wechatpy__test_click_event.xml").read_bytes()
    mapped = parse_push(xml, inbox="oa", received_at=NOW, menu_faq={"EVENTKEY": "invoice"}).message
    assert (mapped.picked_faq, mapped.bot) == ("invoice", True)
    plain = parse_push(xml, inbox="oa", received_at=NOW).message
    assert (plain.picked_faq, plain.bot, plain.kind) == (None, False, MessageKind.EVENT)


def test_unionid_becomes_an_alias() -> None:
    message = parse_push(_xml("<Content>hi</Content><UnionId>uX</UnionId>"), inbox="oa", received_at=NOW).message
    assert [str(a) for a in message.aliases] == ["wechat_union:uX"]


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<xml><FromUserName>a</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&lol3;</Content></xml>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><FromUserName>a</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&xxe;</Content></xml>"""


@pytest.mark.parametrize("body", [BOMB, XXE, b"<!DOCTYPE xml><xml/>"], ids=["billion-laughs", "xxe", "doctype"])
def test_doctype_and_entities_are_refused_without_expansion(body: bytes) -> None:
    with pytest.raises(PushError) as caught:
        read_xml(body)
    assert caught.value.code == "xml_forbidden"


@pytest.mark.parametrize(
    "body",
    [
        "<!DOCTYPE xml><xml/>".encode("utf-16"),  # not UTF-8: the byte search for "<!" would miss it
        b"<xml><![CDATA[a]]><!DOCTYPE x [<!ENTITY a 'b'>]><Content>&a;</Content></xml>",
        b"<xml><!-- <![CDATA[ --><!DOCTYPE x [<!ENTITY a 'b'>]></xml>",
    ],
    ids=["utf-16", "after-cdata", "in-comment"],
)
def test_a_doctype_is_refused_however_it_is_dressed(body: bytes) -> None:
    with pytest.raises(PushError) as caught:
        read_xml(body)
    assert caught.value.code in ("xml_forbidden", "bad_xml")  # never read, never expanded


def _as_defusedxml_reads_it(body: bytes) -> object:
    """What ``read_xml`` gave when defusedxml read every document: the dict, or the PushError's code and text."""
    try:
        root = defused_fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        return ("xml_forbidden", type(exc).__name__)
    except (ParseError, ValueError) as exc:
        return ("bad_xml", f"not well-formed XML: {exc}")
    if root.tag != "xml":
        return ("bad_xml", f"root element must be <xml>, not <{root.tag}>")
    try:
        _check_depth(root)
    except PushError as exc:
        return (exc.code, exc.message)
    value = _to_value(root)
    return value if isinstance(value, dict) else {}


def _read(body: bytes) -> object:
    try:
        return read_xml(body)
    except PushError as exc:
        return (exc.code, exc.message.removeprefix("XML with a DOCTYPE or entities is refused (").rstrip(")"))


def test_the_c_parser_reads_every_push_as_defusedxml_did() -> None:
    """Pushes declaring nothing are read by the standard library's C parser (``_declares_nothing``): the same
    dicts and the same errors as defusedxml's pure-Python parser, on the corpus and on mangled copies of it."""
    need(CORPUS.exists(), "the shared WeChat corpus")
    rnd = random.Random(23)
    bodies = [path.read_bytes() for path in sorted(CORPUS.rglob("*.xml"))]
    assert bodies
    pieces = [
        b"<",
        b">",
        b"&",
        b"&amp;",
        b"&a;",
        b"<!",
        b"]]>",
        b"<![CDATA[",
        b"<a>",
        b"</a>",
        b"\x00",
        b"\xe4\xbd\xa0",
    ]
    mangled = []
    for body in bodies:
        for _ in range(40):
            copy = bytearray(body)
            for _ in range(rnd.randint(1, 3)):
                at = rnd.randrange(len(copy) + 1)
                if rnd.random() < 0.4 and copy:
                    del copy[min(at, len(copy) - 1)]
                else:
                    copy[at:at] = rnd.choice(pieces)
            mangled.append(bytes(copy))
    fast = 0
    for body in [*bodies, *mangled]:
        fast += _declares_nothing(body) is not None
        assert _read(body) == _as_defusedxml_reads_it(body), body
    assert fast >= len(bodies)  # most documents took the C parser


@pytest.mark.parametrize("body", [b"", b"<xml>", b"<notxml/>", b"\xff\xfe"])
def test_malformed_xml_is_a_clear_error(body: bytes) -> None:
    with pytest.raises(PushError) as caught:
        read_xml(body)
    assert caught.value.code == "bad_xml"


def test_push_without_sender_is_refused() -> None:
    with pytest.raises(PushError):
        parse_push(b"<xml><MsgType>text</MsgType></xml>", inbox="oa", received_at=NOW)


def test_url_signature_vector() -> None:
    # SOURCE.md's plain-mode vector: token 'test', timestamp 1410685589, nonce 'test'.
    assert verify("f21891de399b4e33a1a93c9a7b8a8fffb5a443ff", "test", "1410685589", "test")
    assert not verify("f21891de399b4e33a1a93c9a7b8a8fffb5a443fe", "test", "1410685589", "test")
    assert not verify("", "test", "1410685589", "test")


def vectors() -> list[dict[str, Any]]:
    path = CORPUS / "encrypted" / "vectors.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    flat = [v for group in data for v in (group if isinstance(group, list) else [group])]
    return [v for v in flat if isinstance(v, dict) and v.get("msg_signature") and v.get("decrypted_plaintext")]


@pytest.mark.parametrize("vector", vectors(), ids=lambda v: str(v["id"]))
def test_encrypted_vectors_verify_and_decrypt(vector: dict[str, Any]) -> None:
    assert verify(vector["msg_signature"], vector["token"], vector["timestamp"], vector["nonce"], vector["encrypt"])
    key = crypto.aes_key(vector["encoding_aes_key"])
    assert crypto.decrypt(vector["encrypt"], key=key, app_id=vector["appid"]) == vector["decrypted_plaintext"]
    with pytest.raises(crypto.CryptoError):
        crypto.decrypt(vector["encrypt"], key=key, app_id="wx-someone-else")


def test_encrypted_pamtest_vector_decrypts_to_the_expected_message() -> None:
    need((CORPUS / "encrypted").exists(), "the shared corpus is not present")
    body = (CORPUS / "encrypted/oa_easywechat_pamtest.post_body.xml").read_bytes()
    expected = (CORPUS / "encrypted/oa_easywechat_pamtest.decrypted.xml").read_text(encoding="utf-8")
    encrypt = read_xml(body)["Encrypt"]
    assert sign("pamtest", "1458300676", "260774613", encrypt) == "4f3ad57b6989f09f4eb392acce4f9e93942ed890"
    key = crypto.aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
    plain = crypto.decrypt(encrypt, key=key, app_id="wxb11529c136998cb6")
    assert plain == expected.strip()
    message = parse_push(plain, inbox="oa", received_at=NOW).message
    assert (message.text, message.sender.value, message.external_id) == ("hello", "asdasdasdsadasd", "12345")


def test_tampered_ciphertext_is_refused() -> None:
    key = crypto.aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
    token = crypto.encrypt("<xml/>", key=key, app_id="wxA")
    for bad in (token[:-8] + "AAAAAAA=", "not base64!", ""):
        with pytest.raises(crypto.CryptoError):
            crypto.decrypt(bad, key=key, app_id="wxA")


def test_window_rules() -> None:
    opened = {Opens.MESSAGE: NOW, Opens.EVENT: NOW}
    assert [a.quota for a in open_allowances(opened, NOW + timedelta(seconds=30))] == [5, 3]
    assert [a.quota for a in open_allowances(opened, NOW + timedelta(minutes=2))] == [5]
    assert open_allowances(opened, NOW + timedelta(hours=48)) == []


def test_encrypted_modes_need_an_aes_key_in_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs encoding_aes_key"):
        make_config(tmp_path, inboxes=[inbox(mode="safe")])
    with pytest.raises(ConfigError, match="reply_budget_s"):
        make_config(tmp_path, inboxes=[inbox(reply_budget_s=6)])


def test_an_answer_holding_a_cdata_end_cannot_add_elements_to_the_passive_reply() -> None:
    """wechatpy does not escape ``]]>``: an FAQ answer could close the CDATA and inject, say, a <MsgType>."""
    evil = "退款请看]]></Content><MsgType><![CDATA[news]]></MsgType><Content><![CDATA[x"
    xml = passive_xml(account="gh_huiliu", openid="oUser]]>1", text=evil, at=1_700_000_000)
    fields = read_xml(xml)
    assert fields["Content"] == evil and fields["MsgType"] == "text" and fields["ToUserName"] == "oUser]]>1"
    assert set(fields) == {"ToUserName", "FromUserName", "CreateTime", "MsgType", "Content"}
