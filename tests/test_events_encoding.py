"""A message is encoded once for its row and its message.created event, without keeping large ones alive."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from core import events
from core.codec import dumps
from core.model import Author, Channel, Direction, Message, MessageKind


def _message(raw: str) -> Message:
    return Message(
        id="msg_1",
        conversation_id="conv_1",
        channel=Channel.WECHAT,
        inbox="oa",
        direction=Direction.INBOUND,
        author=Author.CUSTOMER,
        kind=MessageKind.TEXT,
        text="你好",
        created_at=datetime(2026, 12, 7, 8, 0, tzinfo=UTC),
        external_id="1",
        raw=raw,
        meta={"faq": "invoice", "score": 0.5},
    )


def test_the_row_is_the_encoding_the_event_made_byte_for_byte() -> None:
    message = _message("<xml><MsgId>1</MsgId></xml>")
    events.message_created(message)
    assert id(message) in events._ENCODED
    assert events.message_json(message) == dumps(message)
    assert id(message) not in events._ENCODED  # taken once written


def test_a_large_raw_is_not_kept_alive_for_its_row() -> None:
    message = _message("x" * (events._ENCODED_RAW_MAX + 1))
    events.message_created(message)
    assert id(message) not in events._ENCODED
    assert events.message_json(message) == dumps(message)


def test_a_message_seen_by_no_event_is_encoded_afresh() -> None:
    message = dataclasses.replace(_message(""), id="msg_2")
    assert events.message_json(message) == dumps(message)
