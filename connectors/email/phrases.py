"""Case-insensitive phrase sets, searched case-sensitively over case-folded text: the same verdicts, ~3x cheaper."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

# What could make a pattern match differently once it runs case-sensitively over case-folded text: a capital, a
# character given by its code, an inline flag, or a non-ASCII character.
_CASE_SENSITIVE_BITS = re.compile(r"[A-Z]|\\[xuUN0]|\(\?[a-zA-Z-]|[^\x00-\x7f]")
# Case-insensitive, an ASCII letter matches its other case and, of all other characters, only these four.
_TO_ASCII_CASE = {
    **{ord(c): c.lower() for c in string.ascii_uppercase},
    0x130: "i",  # İ
    0x131: "i",  # ı
    0x17F: "s",  # ſ
    0x212A: "k",  # K (Kelvin sign)
}


def fold_case(text: str) -> str:
    """The text as an ASCII-lowercase pattern sees it case-insensitively; same length, so positions still hold."""
    return text.lower() if text.isascii() else text.translate(_TO_ASCII_CASE)


@dataclass(frozen=True, slots=True)
class Phrases:
    """Case-insensitive phrases, searched for cheaply in case-folded text.

    re cannot skip ahead over text on a case-insensitive literal, so it tries every alternative at every position.
    For a pattern of ASCII with no capitals, no escaped code points and no inline flags, ignoring case is the same
    as matching case-sensitively against ``fold_case(text)`` (ASCII capitals lowered, and the four non-ASCII letters
    that IGNORECASE folds onto ASCII ones replaced by them): about 3x cheaper. Other patterns keep the
    case-insensitive search.
    """

    ignorecase: re.Pattern[str]
    lowercase: re.Pattern[str] | None

    def found_in(self, text: str, folded: str) -> bool:
        """Whether the text says it; ``folded`` is ``fold_case(text)``."""
        if self.lowercase is not None:
            return self.lowercase.search(folded) is not None
        return self.ignorecase.search(text) is not None


def phrases(*alternatives: str) -> Phrases:
    """Any of the alternatives (regular expressions), case-insensitively."""
    pattern = "|".join(f"(?:{a})" for a in alternatives)
    without_escapes = re.sub(r"\\[^xuUN0]", "", pattern)
    safe = _CASE_SENSITIVE_BITS.search(without_escapes) is None
    return Phrases(ignorecase=re.compile(pattern, re.IGNORECASE), lowercase=re.compile(pattern) if safe else None)
