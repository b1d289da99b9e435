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


def cdata_safe(value: str) -> str:
    """``]]>`` split across two CDATA sections: wechatpy puts values into CDATA unescaped, so an FAQ answer
    holding it could close the section and add elements of its own to the reply."""
    return value.replace("]]>", "]]]]><![CDATA[>")


def passive_xml(*, account: str, openid: str, text: str, at: int) -> str:
    """The passive reply XML: from the Official Account (``account``) to the user."""
    reply = TextReply(source=cdata_safe(account), target=cdata_safe(openid), content=cdata_safe(text), time=at)
    rendered: str = reply.render()
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
