"""Replies in WeChat's shapes: passive reply XML (via wechatpy) and customer-service API payloads."""

from __future__ import annotations

from typing import Any

from wechatpy.replies import TextReply

from core.meta import suggestions_of
from core.model import Message

# WeChat cuts text messages at 2048 bytes; keep well inside so the end is never garbled mid-character.
MAX_TEXT_CHARS = 600


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"


def plain_text(message: Message) -> str:
    """The reply as one text: suggestions become a numbered list."""
    lines = [message.text, *(f"{i}. {s.question}" for i, s in enumerate(suggestions_of(message), 1))]
    return _clip("\n".join(line for line in lines if line))


def passive_xml(*, account: str, openid: str, text: str, at: int) -> str:
    """The passive reply XML: from the Official Account (``account``) to the user."""
    rendered: str = TextReply(source=account, target=openid, content=text, time=at).render()
    return rendered


def custom_payload(openid: str, message: Message) -> dict[str, Any]:
    """A customer-service message; suggestions become a menu whose click comes back as a FAQ pick."""
    suggestions = suggestions_of(message)
    if suggestions:
        return {
            "touser": openid,
            "msgtype": "msgmenu",
            "msgmenu": {
                "head_content": _clip(message.text),
                "list": [{"id": s.faq_id, "content": s.question} for s in suggestions],
                "tail_content": "",
            },
        }
    return {"touser": openid, "msgtype": "text", "text": {"content": _clip(message.text)}}
