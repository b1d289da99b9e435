"""Authentication-Results parsing and the sender verdict, and the signed ticket tags: pure functions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connectors.email.authres import SenderAuth, checked_by_trusted, parse_authentication_results, sender_auth
from connectors.email.tagsig import signature, signed_tag, subject_tags
from connectors.email.threading import base_subject

TRUSTED = ("mx.example.com",)


def test_a_gmail_style_header_parses_into_methods_and_properties() -> None:
    value = (
        "mx.google.com; dkim=pass header.i=@example.org header.s=s1 header.b=AbC+/d; "
        "spf=pass (google.com: domain of a@example.org designates 1.2.3.4 as permitted sender)"
        ' smtp.mailfrom="a@example.org"; '
        "dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=example.org"
    )
    parsed = parse_authentication_results(value)
    assert parsed is not None and parsed.authserv_id == "mx.google.com"
    assert [(r.method, r.result) for r in parsed.results] == [("dkim", "pass"), ("spf", "pass"), ("dmarc", "pass")]
    assert parsed.results[0].props["header.i"] == "@example.org"
    assert parsed.results[1].props["smtp.mailfrom"] == "a@example.org"  # quoted, comment dropped
    assert parsed.results[2].props == {"header.from": "example.org"}


def test_version_none_and_method_versions_are_understood() -> None:
    parsed = parse_authentication_results("mx.example.com 1; none")
    assert parsed is not None and parsed.authserv_id == "mx.example.com" and parsed.results == ()
    parsed = parse_authentication_results("mx.example.com; dkim/1=pass header.d=example.org")
    assert parsed is not None and parsed.results[0].method == "dkim" and parsed.results[0].result == "pass"


def test_malformed_headers_prove_nothing() -> None:
    for value in ("", ";", "mx.example.com; dmarc", "mx.example.com; dmarc=pass header.from", "x" * 9000):
        assert parse_authentication_results(value) is None
    assert sender_auth(["mx.example.com; dmarc"], trusted=TRUSTED, from_domain="example.org") is SenderAuth.NONE


def test_dmarc_pass_from_a_trusted_server_for_the_from_domain_passes() -> None:
    header = "mx.example.com; dmarc=pass header.from=example.org"
    assert sender_auth([header], trusted=TRUSTED, from_domain="example.org") is SenderAuth.PASS
    assert sender_auth([header], trusted=("MX.EXAMPLE.COM",), from_domain="Example.ORG") is SenderAuth.PASS


def test_results_from_servers_we_do_not_trust_or_about_another_domain_are_ignored() -> None:
    forged = "mx.evil.example; dmarc=pass header.from=example.org"
    assert sender_auth([forged], trusted=TRUSTED, from_domain="example.org") is SenderAuth.NONE
    assert sender_auth([forged], trusted=(), from_domain="example.org") is SenderAuth.NONE
    other = "mx.example.com; dmarc=pass header.from=evil.example"
    assert sender_auth([other], trusted=TRUSTED, from_domain="example.org") is SenderAuth.NONE
    # A comment cannot smuggle in a result.
    comment = "mx.example.com; spf=neutral (dmarc=pass header.from=example.org)"
    assert sender_auth([comment], trusted=TRUSTED, from_domain="example.org") is SenderAuth.NONE


def test_dkim_counts_only_when_its_domain_aligns_with_the_from_domain() -> None:
    aligned = "mx.example.com; dkim=pass header.d=mail.example.org"
    assert sender_auth([aligned], trusted=TRUSTED, from_domain="example.org") is SenderAuth.PASS
    by_identity = "mx.example.com; dkim=pass header.i=@example.org"
    assert sender_auth([by_identity], trusted=TRUSTED, from_domain="example.org") is SenderAuth.PASS
    foreign = "mx.example.com; dkim=pass header.d=mailer.evil.example"
    assert sender_auth([foreign], trusted=TRUSTED, from_domain="example.org") is SenderAuth.NONE
    lookalike = "mx.example.com; dkim=pass header.d=notexample.org"
    assert sender_auth([lookalike], trusted=TRUSTED, from_domain="example.org") is SenderAuth.NONE


def test_a_dmarc_failure_outweighs_any_pass() -> None:
    headers = [
        "mx.example.com; dkim=pass header.d=example.org",
        "mx.example.com; dmarc=fail (p=reject) header.from=example.org",
    ]
    assert sender_auth(headers, trusted=TRUSTED, from_domain="example.org") is SenderAuth.FAIL


SECRET = b"0123456789abcdef0123456789abcdef"


def test_a_signed_tag_verifies_and_a_bare_or_wrong_one_does_not() -> None:
    tag = signed_tag("HL-000001", SECRET)
    assert tag == f"[HL-000001-{signature('HL-000001', SECRET)}]" and len(tag) == len("[HL-000001-7f3a9c]")
    [good] = subject_tags(f"Re: 订单退款 {tag}", SECRET)
    assert good.number == "HL-000001" and good.signed
    [upper] = subject_tags(f"RE: {tag.upper()}", SECRET)
    assert upper.signed  # some clients upper-case the subject
    assert [(t.number, t.signed) for t in subject_tags("Re: [HL-000001] hi", SECRET)] == [("HL-000001", False)]
    forged = f"[HL-000002-{signature('HL-000001', SECRET)}]"  # one ticket's signature on another's number
    assert [t.signed for t in subject_tags(forged, SECRET)] == [False]
    assert [t.signed for t in subject_tags(tag, b"another secret, another deployment")] == [False]


def test_the_signature_is_not_the_secret_and_base_subject_drops_signed_tags() -> None:
    assert SECRET.hex()[:6] not in signed_tag("HL-000001", SECRET)
    assert base_subject(f"Re: 回复：{signed_tag('HL-000123', SECRET)} 订单退款") == "订单退款"


@given(st.text(alphabet=st.sampled_from(list('ab.=;/()"\\ @-1é中')), max_size=80))
def test_any_header_parses_or_is_refused_without_raising(value: str) -> None:
    parse_authentication_results(value)
    sender_auth([value], trusted=("a",), from_domain="b")


def test_spf_counts_only_when_the_envelope_domain_aligns_with_the_from_domain() -> None:
    aligned = "mx.example.com; spf=pass smtp.mailfrom=bounces@mail.example.org"
    assert sender_auth([aligned], trusted=TRUSTED, from_domain="example.org") is SenderAuth.PASS
    foreign = "mx.example.com; spf=pass smtp.mailfrom=mallory@evil.example"
    assert sender_auth([foreign], trusted=TRUSTED, from_domain="example.org") is SenderAuth.NONE
    assert sender_auth(["mx.example.com; spf=pass"], trusted=TRUSTED, from_domain="example.org") is SenderAuth.NONE


def test_a_mail_counts_as_checked_only_by_a_trusted_servers_well_formed_results() -> None:
    """Checked but not passed is what makes a From: address only claimed (SenderCheck.UNVERIFIED)."""
    unaligned = "mx.example.com; spf=softfail smtp.mailfrom=evil.example; dkim=none; dmarc=none"
    assert checked_by_trusted([unaligned], trusted=TRUSTED)
    assert checked_by_trusted(["mx.example.com; none"], trusted=TRUSTED)
    assert not checked_by_trusted([unaligned], trusted=())
    assert not checked_by_trusted(["mx.evil.example; dmarc=none"], trusted=TRUSTED)
    assert not checked_by_trusted(["mx.example.com; dmarc"], trusted=TRUSTED)
    assert not checked_by_trusted([], trusted=TRUSTED)
