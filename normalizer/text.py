"""Text cleanup every channel's messages get before they are stored."""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200e\u200f\u2028\u2029\ufeff]")


def clean_text(text: str) -> str:
    """NFC, Unix newlines, no invisible control characters; the raw payload keeps the original."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text).strip()
