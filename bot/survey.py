"""Satisfaction survey replies: "5", "4分 很快", "满意 / 一般 / 不满意", read as a 1-5 score and a comment."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# The widget's buttons and the email page send these same words.
WORDS: dict[str, int] = {
    "非常满意": 5,
    "很满意": 5,
    "满意": 5,
    "一般": 3,
    "还行": 3,
    "不满意": 1,
    "非常不满意": 1,
    "很不满意": 1,
}
BUTTONS: tuple[tuple[str, int], ...] = (("满意", 5), ("一般", 3), ("不满意", 1))

_NUMBER = re.compile(
    r"^\s*(\d{1,3})\s*(?:分|星|颗星|stars?|points?|/\s*5)?(?:[\s,，。.:：!！、-]+(?P<comment>.*))?$", re.I | re.S
)
_WORD = re.compile(
    r"^\s*(?P<word>" + "|".join(sorted(map(re.escape, WORDS), key=len, reverse=True)) + r")"
    r"(?:[\s,，。.:：!！、-]*(?P<comment>.*))?$",
    re.S,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rating:
    score: int
    comment: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutOfRange:
    """A number the customer meant as a score, but not 1-5."""

    given: str


def read_rating(text: str, *, max_comment: int = 500) -> Rating | OutOfRange | None:
    """The rating in a survey reply; OutOfRange for "0" or "10"; None for anything that is no rating."""
    plain = unicodedata.normalize("NFKC", text).strip()  # full-width ５ is 5
    if not plain or len(plain) > max_comment + 20:
        return None
    found = _NUMBER.match(plain)
    if found is not None:
        score = int(found.group(1))
        if not 1 <= score <= 5:
            return OutOfRange(given=found.group(1))
        return Rating(score=score, comment=_comment(found.group("comment"), max_comment))
    found = _WORD.match(plain)
    if found is not None:
        return Rating(score=WORDS[found.group("word")], comment=_comment(found.group("comment"), max_comment))
    return None


def _comment(text: str | None, limit: int) -> str | None:
    cleaned = " ".join((text or "").split())
    return cleaned[:limit] or None
