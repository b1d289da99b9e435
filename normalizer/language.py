"""The language a customer wrote in (Chinese or English), for rules and replies that depend on it."""

from __future__ import annotations

import re

from core.model import Language

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def detect_language(text: str) -> Language:
    """zh when the text has any Chinese character (customers mix in English words: "我的order到哪了"),
    en when it has Latin letters only, unknown when it has neither."""
    if _CJK.search(text):
        return Language.ZH
    if _LATIN.search(text):
        return Language.EN
    return Language.UNKNOWN
