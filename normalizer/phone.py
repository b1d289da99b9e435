"""Phone numbers to E.164, the one form a phone identity is stored in, whatever channel saw it."""

from __future__ import annotations

import re
from dataclasses import dataclass
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
        number, is_valid = _read(candidate, hint)
        if number is None:
            continue
        if is_valid:
            return _e164(number)
        readings.append(number)
    for number in readings:
        if phonenumbers.is_possible_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


@dataclass(frozen=True, slots=True)
class NumberReading:
    """How sure we are of a number: one confident E.164, or the E.164 forms it may be, or nothing."""

    text: str  # the dialable part, as cleaned
    e164: str | None = None
    candidates: tuple[str, ...] = ()

    @property
    def ambiguous(self) -> bool:
        return self.e164 is None and bool(self.candidates)


_EXPLICIT = frozenset(
    {
        phonenumbers.CountryCodeSource.FROM_NUMBER_WITH_PLUS_SIGN,
        phonenumbers.CountryCodeSource.FROM_NUMBER_WITH_IDD,
    }
)


def _parse(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        return None


@lru_cache(maxsize=65536)
def _read(text: str, region: str | None) -> tuple[phonenumbers.PhoneNumber | None, bool]:
    """The parse of a cleaned number and whether it is valid, once per distinct (number, region): ``to_e164``
    (a CDR row's direction), ``read_number`` (its caller) and each other reading of one number share it. The
    parsed number is shared too, so nothing may change it."""
    number = _parse(text, region)
    return number, number is not None and phonenumbers.is_valid_number(number)


# The parse behind each E.164 form read above, for ``display``: a CDR import reads every caller's number
# (``to_e164``, ``read_number``) and then shows it in the call's summary, which parsed it a second time.
_PARSED: dict[str, phonenumbers.PhoneNumber] = {}
_PARSED_MAX = 65536


def _e164(number: phonenumbers.PhoneNumber) -> str:
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if e164 not in _PARSED:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[e164] = number
    return e164


@lru_cache(maxsize=65536)
def read_number(raw: str, region: str = "CN", other_regions: tuple[str, ...] = ()) -> NumberReading:
    """Read a caller's number for identification, saying when it is uncertain.

    Confident: valid in ``region``; or written with its country code (``+``/``00``) and at least possible;
    or, written nationally, valid only when read as international without ``+`` (Zammad's form).
    Ambiguous (the candidates it may be): a national number not valid in ``region`` but valid in one of
    ``other_regions``, or one that is merely possible (short codes, unassigned blocks). Otherwise None.
    """
    text = clean(raw)
    if text.lower() in _NOT_A_NUMBER or not re.fullmatch(r"\+?\d{3,17}", text):
        return NumberReading(text=text)
    national, national_valid = _read(text, region)
    if national is not None and national_valid:
        return NumberReading(text=text, e164=_e164(national))
    if national is not None and national.country_code_source in _EXPLICIT:
        possible = phonenumbers.is_possible_number(national)
        return NumberReading(text=text, e164=_e164(national) if possible else None)
    valid: dict[str, bool] = {}  # E.164 -> read in another configured region
    possible_forms: list[str] = []
    if national is not None and phonenumbers.is_possible_number(national):
        possible_forms.append(_e164(national))
    readings = [("+" + text.lstrip("+"), None), *((text, r) for r in other_regions if r != region)]
    for candidate, hint in readings:
        number, is_valid = _read(candidate, hint)
        if number is None:
            continue
        if is_valid:
            valid[_e164(number)] = valid.get(_e164(number), False) or hint is not None
        elif phonenumbers.is_possible_number(number):
            possible_forms.append(_e164(number))
    if len(valid) == 1 and not any(valid.values()):
        return NumberReading(text=text, e164=next(iter(valid)))
    if valid:
        return NumberReading(text=text, candidates=tuple(valid))
    return NumberReading(text=text, candidates=tuple(dict.fromkeys(possible_forms)))


@lru_cache(maxsize=65536)  # a summary shows the hotline's number on every call
def display(e164: str) -> str:
    """``+86 138 0013 8000``: how agents read a number in a summary."""
    number = _PARSED.get(e164)  # the same number as parsing ``e164`` gives: country code and national number
    if number is None:
        try:
            number = phonenumbers.parse(e164, None)
        except phonenumbers.NumberParseException:
            return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
