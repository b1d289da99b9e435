"""Web chat frames: parse what a browser sends, without trusting any of it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

import orjson

_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FAQ_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_VISITOR = re.compile(r"^[0-9a-f]{32}$")


class FrameError(Exception):
    def __init__(self, code: str, message: str, client_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_id = client_id  # the message the error is about, so the widget can mark it unsent


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    token: str | None
    last_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatText:
    id: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Pick:
    id: str
    faq_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Typing:
    on: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    pass


ClientFrame = Hello | ChatText | Pick | Typing | Ping


def parse_frame(data: str | bytes, *, max_bytes: int, max_text_chars: int) -> ClientFrame:
    if isinstance(data, bytes):
        raise FrameError("bad_frame", "frames are JSON text; binary frames are not accepted")
    if len(data) * 4 > max_bytes:  # a character is at most 4 bytes of UTF-8: shorter text needs no counting
        size = len(data.encode("utf-8"))
        if size > max_bytes:
            raise FrameError("frame_too_large", f"frame is {size} bytes; the limit is {max_bytes}")
    try:
        obj = orjson.loads(data)
    except (ValueError, UnicodeError) as exc:
        raise FrameError("bad_json", f"frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FrameError("bad_frame", "frame must be a JSON object")
    kind = obj.get("type")
    if kind == "hello":
        return _hello(obj)
    if kind == "message":
        client_id = _client_id(obj)
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            raise FrameError("bad_frame", "message.text must be a non-empty string", client_id)
        if len(text) > max_text_chars:
            raise FrameError(
                "bad_frame", f"message.text has {len(text)} characters; the limit is {max_text_chars}", client_id
            )
        return ChatText(id=client_id, text=text)
    if kind == "pick":
        client_id = _client_id(obj)
        faq_id = obj.get("faq_id")
        if not isinstance(faq_id, str) or not _FAQ_ID.match(faq_id):
            raise FrameError("bad_frame", "pick.faq_id must be a FAQ id from a suggestion", client_id)
        return Pick(id=client_id, faq_id=faq_id)
    if kind == "typing":
        on = obj.get("on")
        if not isinstance(on, bool):
            raise FrameError("bad_frame", "typing.on must be true or false")
        return Typing(on=on)
    if kind == "ping":
        return Ping()
    if not isinstance(kind, str):
        raise FrameError("bad_frame", "frame needs a string 'type'")
    raise FrameError("unknown_type", f"unknown frame type {kind[:40]!r}")


def _hello(obj: dict[str, Any]) -> Hello:
    token = obj.get("token")
    last_seq = obj.get("last_seq", 0)
    if token is not None and not isinstance(token, str):
        raise FrameError("bad_frame", "hello.token must be a string or null")
    if isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < 0:
        raise FrameError("bad_frame", "hello.last_seq must be a non-negative integer")
    return Hello(token=token, last_seq=last_seq)


def _client_id(obj: dict[str, Any]) -> str:
    value = obj.get("id")
    if not isinstance(value, str) or not _CLIENT_ID.match(value):
        raise FrameError("bad_frame", "id must be 1-64 characters of A-Z a-z 0-9 _ -")
    return value


def issue_token(visitor_id: str, key: bytes) -> str:
    """A resumable session token: the visitor id, signed so nobody can take over another visitor."""
    mac = hmac.new(key, visitor_id.encode(), hashlib.sha256).digest()[:18]
    return f"v1.{visitor_id}.{base64.urlsafe_b64encode(mac).decode()}"


def verify_token(token: str, key: bytes) -> str | None:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != "v1" or not _VISITOR.match(parts[1]):
        return None
    return parts[1] if hmac.compare_digest(issue_token(parts[1], key), token) else None
