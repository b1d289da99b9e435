"""Ticket fields from the customer's words: the operator's named patterns, phone numbers, emails, money amounts."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import phonenumbers

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}")
_CURRENCY_BEFORE = {"¥": "CNY", "￥": "CNY", "RMB": "CNY", "CNY": "CNY", "$": "USD", "USD": "USD", "US$": "USD"}
_CURRENCY_AFTER = {"元": "CNY", "块": "CNY", "块钱": "CNY", "人民币": "CNY", "RMB": "CNY", "CNY": "CNY", "美元": "USD"}
_MONEY = re.compile(
    r"(?:(?P<pre>US\$|RMB|CNY|USD|[¥￥$])\s?(?P<a1>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<c1>\d{1,2}))?)"
    r"|(?:(?P<a2>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<c2>\d{1,2}))?\s?(?P<post>块钱|人民币|元|块|RMB|CNY|美元))",
    re.IGNORECASE,
)
# A phone number has at least seven digits in a row (spaces, dashes and dots between them allowed): text
# without such a run is not worth phonenumbers' matcher, the costliest step here.
_DIGIT_RUN = re.compile(r"\d(?:[\s.-]?\d){6}")
PHONE_REGION = "CN"


def compile_patterns(patterns: Mapping[str, str]) -> dict[str, re.Pattern[str]]:
    """Operator patterns are case-insensitive; they were checked at config load."""
    return {name: re.compile(p, re.IGNORECASE) for name, p in patterns.items()}


def extract_fields(
    text: str, patterns: Mapping[str, re.Pattern[str]], *, max_chars: int, region: str = PHONE_REGION
) -> dict[str, str]:
    """Named fields found in ``text``: the first match of each pattern (its group 1, or the whole match), then
    ``phone`` (E.164), ``email`` and ``amount`` ("128.00 CNY"). Patterns see at most ``max_chars`` characters,
    so a pattern that backtracks badly costs a bounded time on a long message."""
    seen = text[:max_chars]
    fields: dict[str, str] = {}
    for name, pattern in patterns.items():
        m = pattern.search(seen)
        if m is not None:
            value = m.group(1) if pattern.groups else m.group(0)
            if value:
                fields[name] = value.strip()
    for name, value in builtin_fields(seen, region).items():
        fields.setdefault(name, value)
    return fields


def builtin_fields(text: str, region: str = PHONE_REGION) -> dict[str, str]:
    found: dict[str, str] = {}
    email = _EMAIL.search(text)
    if email is not None:
        found["email"] = email.group(0).lower()
    # Leniency VALID: only numbers that could be dialled; an order number is not a phone number.
    if _DIGIT_RUN.search(text):
        matches = phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID, max_tries=20)
        for match in matches:
            found["phone"] = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
            break
    money = _MONEY.search(text)
    if money is not None:
        whole = money.group("a1") or money.group("a2")
        cents = money.group("c1") or money.group("c2") or "0"
        unit = money.group("pre") or money.group("post")
        currency = _CURRENCY_BEFORE.get(unit.upper()) if money.group("pre") else _CURRENCY_AFTER.get(unit.upper())
        found["amount"] = f"{whole.replace(',', '')}.{cents.ljust(2, '0')} {currency or 'CNY'}"
    return found


def merge_fields(earlier: Mapping[str, str], later: Iterable[tuple[str, str]]) -> dict[str, str]:
    """What was found first stays: a later message adds fields, it does not overwrite them."""
    merged = dict(earlier)
    for name, value in later:
        merged.setdefault(name, value)
    return merged
