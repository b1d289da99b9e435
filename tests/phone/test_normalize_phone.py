"""E.164 normalization: every form a PBX sends becomes the one identity value."""

from __future__ import annotations

import phonenumbers
import pytest

from normalizer.phone import display, read_number, to_e164


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("13800138000", "CN", "+8613800138000"),
        ("138 0013 8000", "CN", "+8613800138000"),
        ("+86 138-0013-8000", "CN", "+8613800138000"),
        ("008613800138000", "CN", "+8613800138000"),
        ("tel:+8613800138000", "CN", "+8613800138000"),
        ("sip:13800138000@pbx.example.com;user=phone", "CN", "+8613800138000"),
        ("010 6552 9988", "CN", "+861065529988"),
        ("4930600000000", "CN", "+4930600000000"),  # Zammad's form: international without +
        ("030 600000000", "DE", "+4930600000000"),
        ("anonymous", "CN", None),
        ("", "CN", None),
        ("201", "CN", None),  # an extension, not a customer's number
        ("call me", "CN", None),
    ],
)
def test_numbers_become_e164_with_a_configurable_default_region(raw: str, region: str, expected: str | None) -> None:
    assert to_e164(raw, region) == expected


def test_display_groups_the_number_for_agents() -> None:
    assert display("+8613800138000") == "+86 138 0013 8000"


@pytest.mark.parametrize(
    ("raw", "region", "others", "e164", "candidates"),
    [
        ("13800138000", "CN", ("HK",), "+8613800138000", ()),  # valid at home: confident
        ("4930600000000", "CN", (), "+4930600000000", ()),  # valid only as international: Zammad's form
        ("+49999992222222", "DE", (), "+49999992222222", ()),  # explicit country code: one reading
        ("91234567", "CN", ("HK",), None, ("+85291234567",)),  # not Chinese, but a Hong Kong mobile
        ("0912345678", "CN", ("TW",), None, ("+886912345678",)),
        ("91234567", "CN", (), None, ("+8691234567", "+91234567")),  # possible, valid nowhere
        ("201", "CN", (), None, ()),
        ("anonymous", "CN", ("HK",), None, ()),
    ],
)
def test_reading_says_when_a_number_is_ambiguous(
    raw: str, region: str, others: tuple[str, ...], e164: str | None, candidates: tuple[str, ...]
) -> None:
    reading = read_number(raw, region, others)
    assert (reading.e164, reading.candidates) == (e164, candidates)
    assert reading.ambiguous == bool(candidates)


@pytest.mark.parametrize(
    ("raw", "region", "others"),
    [
        ("13800138000", "CN", ("HK",)),
        ("010 6552 9988", "CN", ()),
        ("4930600000000", "CN", ()),
        ("030 600000000", "DE", ()),
        ("06 6982 0000", "IT", ()),  # Italian numbers keep their leading zero
        ("+49999992222222", "DE", ()),
        ("91234567", "CN", ("HK",)),
        ("0912345678", "CN", ("TW",)),
        ("91234567", "CN", ()),
    ],
)
def test_a_number_read_first_is_shown_as_its_e164_form_alone_would_be(
    raw: str, region: str, others: tuple[str, ...]
) -> None:
    """``display`` takes the parse that reading the number made (parsed once per distinct number): the summary
    shows what parsing the E.164 form afresh shows."""
    reading = read_number(raw, region, others)
    shown = [*(() if reading.e164 is None else (reading.e164,)), *reading.candidates]
    assert shown
    for e164 in shown:
        fresh = phonenumbers.format_number(phonenumbers.parse(e164, None), phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        display.cache_clear()
        assert display(e164) == fresh
