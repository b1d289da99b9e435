"""A customer linking an address to themself in chat: "绑定邮箱 a@b.com", then the six-digit code sent there."""

from __future__ import annotations

import re

_LINK = re.compile(
    r"^\s*(?:(?:绑定|关联|验证)(?:我的)?(?P<zh>邮箱|手机号?|电话)|link\s+(?:my\s+)?(?P<en>e-?mail|phone))"
    r"\s*[:：]?\s*(?P<value>\S{3,200})\s*$",
    re.IGNORECASE,
)
_CODE = re.compile(r"^\s*(?:验证码|code)?\s*[:：]?\s*(?P<code>\d{6})\s*$", re.IGNORECASE)


def link_request(text: str) -> str | None:
    """The identity the customer asks to link, as ``kind:value`` (not yet validated), or None."""
    found = _LINK.match(text)
    if found is None:
        return None
    what = (found.group("zh") or found.group("en") or "").lower()
    kind = "email" if what in ("邮箱", "email", "e-mail") else "phone"
    return f"{kind}:{found.group('value')}"


def code_entry(text: str) -> str | None:
    """A six-digit code as the customer types it ("123456", "验证码 123456")."""
    found = _CODE.match(text)
    return found.group("code") if found else None
