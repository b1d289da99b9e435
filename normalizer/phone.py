"""Phone numbers to E.164, the one form a phone identity is stored in, whatever channel saw it."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

_NOISE = re.compile(r"[\s\-().]")
_NOT_A_NUMBER = frozenset({"", "anonymous", "unknown", "private", "restricted", "unavailable", "withheld"})


def clean(raw: str) -> str:
    """The dialable part of ``raw``: no ``tel:``/``sip:`` scheme, SIP host, spaces or punctuation."""
    text = raw.strip().strip('"').strip()
    lowered = text.lower()
    for scheme in ("tel:", "sip:", "sips:"):
        if lowered.startswith(scheme):
            text = text[len(scheme) :]
            break
    text = text.split("@", 1)[0].split(";", 1)[0]
    return _NOISE.sub("", text)


@lru_cache(maxsize=65536)  # pure, and a CDR file repeats its numbers (the hotline on every row)
def to_e164(raw: str, region: str = "CN") -> str | None:
    """``+8613800138000`` for ``138 0013 8000`` (region CN), or None when ``raw`` is not a number.

    PBXs send numbers in every form: national (``13800138000``), with the international prefix
    (``008613800138000``), with ``+``, or international without it (``4930600000000``, as Zammad's
    CTI does). A number valid in ``region`` wins; then one valid when read as international; then,
    leniently, one that is merely possible (test ranges, new number blocks), national reading first.
    """
    text = clean(raw)
    if text.lower() in _NOT_A_NUMBER or not any(ch.isdigit() for ch in text):
        return None
    if not re.fullmatch(r"\+?\d{3,17}", text):
        return None
    readings: list[phonenumbers.PhoneNumber] = []
    for candidate, hint in ((text, region), ("+" + text.lstrip("+"), None)):
        try:
            number = phonenumbers.parse(candidate, hint)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        readings.append(number)
    for number in readings:
        if phonenumbers.is_possible_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


def display(e164: str) -> str:
    """``+86 138 0013 8000``: how agents read a number in a summary."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
