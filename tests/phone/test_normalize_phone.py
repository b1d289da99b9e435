"""E.164 normalization: every form a PBX sends becomes the one identity value."""

from __future__ import annotations

import pytest

from normalizer.phone import display, to_e164


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
