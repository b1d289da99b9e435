"""What kind of question a text asks: what is / how to / how long / why / can I / how much / where (zh and en).

Two texts can share every topic word and still ask different things: "什么是柜面通" wants a definition, "柜面通怎么
开通" a procedure, and the answer to one does not answer the other. The types are read from the folded text
with a few patterns; a text can ask several (or none: "play some jazz").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Types, each a pattern over text folded for matching (normalizer.text.fold_for_matching: casefolded, simplified
# Chinese, punctuation as spaces, "what's" as "whats"). English patterns match whole words; "how long" is a
# duration, not a procedure, so "how" only counts as one when a verb of asking follows it.
_PATTERNS: dict[str, tuple[str, str]] = {  # a kind: (Chinese, English)
    "what": (
        r"什么是|是什么|啥是|是啥|什么叫|指什么|什么意思|是指",
        r"what is|whats|what are|what does \w+ mean|define|meaning of",
    ),
    "how": (r"怎么(?!会|样|回事)|如何|怎样(?!了)|咋(?!回事)|步骤|流程", r"how (?:do|can|should|would|to|does)"),
    "when": (r"多久|多长时间|几天|多少天|什么时候|何时|几点", r"how long|when|what time|how many days"),
    "why": (r"为什么|为何|怎么会|什么原因", r"why|how come"),
    "can": (
        r"能不能|能否|可不可以|可以.{0,10}[吗么]|能.{0,10}[吗么]|是否可以|行不行",
        r"can i|could i|am i able|is it possible|may i",
    ),
    "much": (r"多少钱|费用|收费|手续费", r"how much|how many|fee|fees|cost"),
    "where": (r"哪里|在哪|哪儿|什么地方|哪个网点", r"where"),
}
_COMPILED = tuple((name, re.compile(rf"{zh}|\b(?:{en})\b")) for name, (zh, en) in _PATTERNS.items())


def question_types(folded: str) -> frozenset[str]:
    """The kinds of question a folded text asks; empty when it asks none of them."""
    return frozenset(name for name, pattern in _COMPILED if pattern.search(folded))


def disagree(asked: frozenset[str], offered: frozenset[str]) -> bool:
    """The query asks something the entry's phrasings never ask, and nothing they do: e.g. a definition of what
    every phrasing asks how to do. An entry with no question types (statements) agrees with anything."""
    return bool(asked) and bool(offered) and not (asked & offered)


def union(types: Iterable[frozenset[str]]) -> frozenset[str]:
    return frozenset().union(*types)
