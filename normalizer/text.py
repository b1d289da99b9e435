"""Text normalization, two kinds with two names: clean_text for storing, fold_for_matching for comparing."""

from __future__ import annotations

import re
import unicodedata

import opencc

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200e\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"\s+")
_T2S = opencc.OpenCC("t2s")


def clean_text(text: str) -> str:
    """What is stored and shown: NFC, Unix newlines, no invisible control characters; the words as written.

    The raw payload keeps the original.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text).strip()


def fold_for_matching(text: str) -> str:
    """A comparison key, never shown: NFKC (full-width to half-width), casefold, traditional to simplified,
    punctuation and symbols to spaces. "ＡＢＣ，“你好”" and "abc 你好" fold to the same key."""
    text = _T2S.convert(unicodedata.normalize("NFKC", text).casefold())
    return _SPACES.sub(" ", text.translate(_BLANKS)).strip()


class _Blanks(dict[int, str | None]):
    """``str.translate``'s table for folding: punctuation, symbols, separators and control characters (Unicode
    categories P, S, Z, C) become spaces, the apostrophe goes ("don't" is "dont"), the rest stays. Each character's
    category is looked up the first time it is seen and remembered: a translate in C instead of a Python test
    per character (a tenth of a large KB's build went to that test)."""

    def __missing__(self, code: int) -> str | None:
        char = chr(code)
        folded = None if char == "'" else " " if unicodedata.category(char)[0] in "PSZC" else char
        if len(self) < _BLANKS_KEPT:  # bounded: text from outside may bring any of Unicode's 1.1M code points
            self[code] = folded
        return folded


_BLANKS_KEPT = 65_536


_BLANKS = _Blanks()
