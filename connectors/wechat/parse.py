"""Pure parsing of WeChat push XML into an InboundMessage, through a registry of types with a fallback."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.etree.ElementTree import Element, ParseError, XMLParser

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from core.model import Attachment, Channel, Identity, IdentityKind, InboundMessage, MessageKind

Fields = Mapping[str, Any]
# WeChat's deepest push (xml > SendPicsInfo > PicList > item > PicMd5Sum) is five levels; anything far deeper is
# hostile, and reading it recursively would overflow the stack.
MAX_DEPTH = 16


class PushError(ValueError):
    """A push we cannot read; ``code`` is machine-readable (bad_xml, xml_forbidden, bad_push)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Action(enum.StrEnum):
    """What the connector does besides storing the message."""

    NONE = "none"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"


class Opens(enum.StrEnum):
    """Which customer-service allowance a push opens: 48 h after a user message, 1 min after a click or scan."""

    MESSAGE = "message"
    EVENT = "event"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """What one registered type makes of a push."""

    kind: MessageKind
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    bot: bool = False
    action: Action = Action.NONE
    opens: Opens | None = None
    picked_faq: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Push:
    message: InboundMessage
    account: str  # the Official Account's original id (ToUserName): a passive reply comes from it
    action: Action
    opens: Opens | None


# XML -------------------------------------------------------------------------------------------------


def _to_value(element: Element) -> Any:
    children = list(element)
    if not children:
        return (element.text or "").strip()
    out: dict[str, Any] = {}
    for child in children:
        value = _to_value(child)
        if child.tag in out:
            previous = out[child.tag]
            out[child.tag] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[child.tag] = value
    return out


def _check_depth(root: Element) -> None:
    """Walked with a stack, not recursion, so any depth is measured without touching Python's stack limit."""
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PushError("bad_xml", f"XML nested deeper than {MAX_DEPTH} elements")
        stack.extend((child, depth + 1) for child in element)


def _declares_nothing(body: bytes | str) -> str | None:
    """The document as text when it can hold no declaration to refuse: UTF-8, every ``<!`` the start of a CDATA
    section (so no DOCTYPE, hence no entity, internal or external, and no comment), and no other encoding
    declared. None otherwise.

    Such a document (every push WeChat sends) is read by the standard library's C parser; any other goes through
    defusedxml, whose parser is the pure-Python one, a callback in Python per element: reading the two documents
    of an encrypted push that way was about a tenth of the event loop's time. Both run expat and build the same
    elements; undefined entity references are errors in both."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    else:
        text = body
    if text.count("<!") != text.count("<![CDATA["):
        return None
    if text.startswith("<?xml"):
        declaration = text[: text.find("?>")].lower()
        if "encoding" in declaration and "utf-8" not in declaration:
            return None  # bytes read as UTF-8 would not be what the document says they are
    return text


def read_xml(body: bytes | str) -> dict[str, Any]:
    """The ``<xml>`` document as a dict; a DOCTYPE or entity is refused before anything is expanded."""
    plain = _declares_nothing(body)
    try:
        if plain is not None:
            parser = XMLParser()
            parser.feed(plain)
            root = parser.close()
        else:
            root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise PushError("xml_forbidden", f"XML with a DOCTYPE or entities is refused ({type(exc).__name__})") from None
    except (ParseError, ValueError) as exc:
        raise PushError("bad_xml", f"not well-formed XML: {exc}") from None
    if root.tag != "xml":
        raise PushError("bad_xml", f"root element must be <xml>, not <{root.tag}>")
    _check_depth(root)
    value = _to_value(root)
    return value if isinstance(value, dict) else {}


# the registry ----------------------------------------------------------------------------------------

Reader = Callable[[Fields, Mapping[str, str]], Reading]
MESSAGES: dict[str, Reader] = {}
EVENTS: dict[str, Reader] = {}


def _message(*names: str) -> Callable[[Reader], Reader]:
    def register(reader: Reader) -> Reader:
        for name in names:
            MESSAGES[name] = reader
        return reader

    return register


def _event(*names: str) -> Callable[[Reader], Reader]:
    def register(reader: Reader) -> Reader:
        for name in names:
            EVENTS[name.lower()] = reader
        return reader

    return register


def _s(fields: Fields, name: str) -> str:
    value = fields.get(name, "")
    return value if isinstance(value, str) else ""


def _media(fields: Fields, name: str, content_type: str) -> Attachment:
    return Attachment(
        name=name, content_type=content_type, media_id=_s(fields, "MediaId") or None, url=_s(fields, "PicUrl") or None
    )


@_message("text")
def _text(fields: Fields, menu: Mapping[str, str]) -> Reading:
    # A click on a customer-service menu (msgmenu) arrives as text with the option's id: a FAQ pick.
    picked = _s(fields, "bizmsgmenuid") or None
    return Reading(kind=MessageKind.TEXT, text=_s(fields, "Content"), bot=True, opens=Opens.MESSAGE, picked_faq=picked)


@_message("image")
def _image(fields: Fields, menu: Mapping[str, str]) -> Reading:
    return Reading(kind=MessageKind.IMAGE, attachments=(_media(fields, "image", "image/jpeg"),), opens=Opens.MESSAGE)


@_message("voice")
def _voice(fields: Fields, menu: Mapping[str, str]) -> Reading:
    recognition = _s(fields, "Recognition")
    fmt = _s(fields, "Format").lower() or "amr"
    return Reading(
        kind=MessageKind.VOICE,
        text=recognition,
        attachments=(_media(fields, "voice", f"audio/{fmt}"),),
        bot=bool(recognition),  # the bot answers what WeChat recognised
        opens=Opens.MESSAGE,
        meta={"recognition": recognition} if recognition else {},
    )


@_message("video", "shortvideo")
def _video(fields: Fields, menu: Mapping[str, str]) -> Reading:
    thumb = _s(fields, "ThumbMediaId")
    return Reading(
        kind=MessageKind.VIDEO,
        attachments=(_media(fields, "video", "video/mp4"),),
        opens=Opens.MESSAGE,
        meta={"thumb_media_id": thumb} if thumb else {},
    )


@_message("location")
def _location(fields: Fields, menu: Mapping[str, str]) -> Reading:
    lat, lng, label = _s(fields, "Location_X"), _s(fields, "Location_Y"), _s(fields, "Label")
    return Reading(
        kind=MessageKind.LOCATION,
        text=f"{label} ({lat}, {lng})" if label else f"({lat}, {lng})",
        opens=Opens.MESSAGE,
        meta={"latitude": lat, "longitude": lng, "scale": _s(fields, "Scale"), "label": label},
    )


@_message("link")
def _link(fields: Fields, menu: Mapping[str, str]) -> Reading:
    parts = [_s(fields, "Title"), _s(fields, "Description"), _s(fields, "Url")]
    return Reading(
        kind=MessageKind.LINK,
        text="\n".join(p for p in parts if p),
        opens=Opens.MESSAGE,
        meta={"title": parts[0], "description": parts[1], "url": parts[2]},
    )


@_event("subscribe")
def _subscribe(fields: Fields, menu: Mapping[str, str]) -> Reading:
    key = _s(fields, "EventKey")
    meta: dict[str, Any] = {}
    if key.startswith("qrscene_"):
        meta = {"scene": key.removeprefix("qrscene_"), "qr_ticket": _s(fields, "Ticket")}
    elif key:
        meta = {"event_key": key}
    scene = f" (scene {meta['scene']})" if "scene" in meta else ""
    return Reading(
        kind=MessageKind.EVENT, text=f"[关注 subscribed{scene}]", action=Action.SUBSCRIBE, opens=Opens.EVENT, meta=meta
    )


@_event("unsubscribe")
def _unsubscribe(fields: Fields, menu: Mapping[str, str]) -> Reading:
    return Reading(kind=MessageKind.EVENT, text="[取消关注 unsubscribed]", action=Action.UNSUBSCRIBE)


@_event("SCAN")
def _scan(fields: Fields, menu: Mapping[str, str]) -> Reading:
    scene = _s(fields, "EventKey")
    return Reading(
        kind=MessageKind.EVENT,
        text=f"[扫码 scanned a QR code, scene {scene}]",
        opens=Opens.EVENT,
        meta={"scene": scene, "qr_ticket": _s(fields, "Ticket")},
    )


@_event("CLICK")
def _click(fields: Fields, menu: Mapping[str, str]) -> Reading:
    key = _s(fields, "EventKey")
    faq = menu.get(key)
    return Reading(
        kind=MessageKind.EVENT if faq is None else MessageKind.TEXT,
        text=f"[菜单 menu click {key}]" if faq is None else "",
        bot=faq is not None,
        opens=Opens.EVENT,
        picked_faq=faq,
        meta={"event_key": key},
    )


@_event("VIEW")
def _view(fields: Fields, menu: Mapping[str, str]) -> Reading:
    url = _s(fields, "EventKey")
    return Reading(kind=MessageKind.EVENT, text=f"[菜单 opened menu link {url}]", meta={"url": url})


@_event("LOCATION")
def _reported_location(fields: Fields, menu: Mapping[str, str]) -> Reading:
    lat, lng = _s(fields, "Latitude"), _s(fields, "Longitude")
    return Reading(
        kind=MessageKind.EVENT,
        text=f"[位置上报 location report ({lat}, {lng})]",
        meta={"latitude": lat, "longitude": lng, "precision": _s(fields, "Precision")},
    )


@_event("location_select")
def _location_select(fields: Fields, menu: Mapping[str, str]) -> Reading:
    info = fields.get("SendLocationInfo")
    info = info if isinstance(info, dict) else {}
    lat, lng, label = _s(info, "Location_X"), _s(info, "Location_Y"), _s(info, "Label")
    return Reading(
        kind=MessageKind.LOCATION,
        text=f"{label} ({lat}, {lng})" if label else f"({lat}, {lng})",
        opens=Opens.EVENT,
        meta={"latitude": lat, "longitude": lng, "label": label, "event_key": _s(fields, "EventKey")},
    )


@_event("scancode_push", "scancode_waitmsg")
def _scancode(fields: Fields, menu: Mapping[str, str]) -> Reading:
    info = fields.get("ScanCodeInfo")
    info = info if isinstance(info, dict) else {}
    result = _s(info, "ScanResult")
    return Reading(
        kind=MessageKind.EVENT,
        text=f"[扫码 scanned {_s(info, 'ScanType')}: {result}]",
        opens=Opens.EVENT,
        meta={"scan_type": _s(info, "ScanType"), "scan_result": result, "event_key": _s(fields, "EventKey")},
    )


@_event("TEMPLATESENDJOBFINISH", "MASSSENDJOBFINISH")
def _send_job(fields: Fields, menu: Mapping[str, str]) -> Reading:
    status = _s(fields, "Status")
    return Reading(
        kind=MessageKind.EVENT,
        text=f"[{_s(fields, 'Event')}: {status}]",
        meta={"job_msg_id": _s(fields, "MsgID"), "status": status},
    )


@_event("kf_create_session", "kf_close_session", "kf_switch_session")
def _kf_session(fields: Fields, menu: Mapping[str, str]) -> Reading:
    accounts = {k: _s(fields, k) for k in ("KfAccount", "FromKfAccount", "ToKfAccount") if _s(fields, k)}
    return Reading(kind=MessageKind.EVENT, text=f"[{_s(fields, 'Event')}]", meta={"kf": accounts})


def _other_event(fields: Fields, menu: Mapping[str, str]) -> Reading:
    """Any other event (card, invoice, verification, ...): kept for audit, never answered."""
    return Reading(kind=MessageKind.EVENT, text=f"[{_s(fields, 'Event') or 'event'}]")


def _unknown(fields: Fields, menu: Mapping[str, str]) -> Reading:
    """A type we do not know: stored as unsupported with its raw XML, never an error."""
    return Reading(kind=MessageKind.UNSUPPORTED, text="")


# the push --------------------------------------------------------------------------------------------


def _scalars(fields: Fields) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if isinstance(v, str)}


def parse_push(
    xml: bytes | str, *, inbox: str, received_at: datetime, menu_faq: Mapping[str, str] | None = None
) -> Push:
    """One push (already decrypted) → the message intake stores, plus what the connector does about it."""
    fields = read_xml(xml)
    openid, msg_type, created = _s(fields, "FromUserName"), _s(fields, "MsgType"), _s(fields, "CreateTime")
    if not openid or not msg_type:
        raise PushError("bad_push", "a push needs FromUserName and MsgType")
    try:
        sent_at = datetime.fromtimestamp(int(created), UTC)
    except (ValueError, OverflowError, OSError):
        raise PushError("bad_push", f"CreateTime must be a Unix timestamp, got {created!r}") from None
    event = _s(fields, "Event")
    lowered = msg_type.lower()
    if lowered == "event":
        reader = EVENTS.get(event.lower(), _other_event)
        external_id = f"{openid}:{created}:{event}"
    else:
        reader = MESSAGES.get(lowered, _unknown)
        msg_id = _s(fields, "MsgId")
        external_id = msg_id or f"{openid}:{created}:{msg_type}"
    reading = reader(fields, menu_faq or {})
    union = _s(fields, "UnionId") or _s(fields, "UnionID") or _s(fields, "unionid")
    text_xml = xml if isinstance(xml, str) else xml.decode("utf-8", "replace")
    meta: dict[str, Any] = {"wechat": {"msg_type": msg_type, **({"event": event} if event else {})}, **reading.meta}
    if reading.kind is MessageKind.UNSUPPORTED or reader is _other_event:
        meta["wechat"]["fields"] = _scalars(fields)
    message = InboundMessage(
        channel=Channel.WECHAT,
        inbox=inbox,
        external_id=external_id,
        sender=Identity(IdentityKind.WECHAT_OPENID, openid),
        aliases=(Identity(IdentityKind.WECHAT_UNIONID, union),) if union else (),
        text=reading.text,
        kind=reading.kind,
        sent_at=sent_at,
        received_at=received_at,
        attachments=reading.attachments,
        raw=text_xml,
        picked_faq=reading.picked_faq,
        bot=reading.bot,
        meta=meta,
    )
    return Push(message=message, account=_s(fields, "ToUserName"), action=reading.action, opens=reading.opens)
