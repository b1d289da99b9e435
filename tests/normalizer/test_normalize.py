"""The normalizer stage: pure steps from an InboundMessage to a NormalizedMessage."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from core.model import Channel, Identity, IdentityKind, InboundMessage, Language, NormalizedMessage
from normalizer import DEFAULT_STEPS, normalize
from normalizer.identity import canonical_identity


def _inbound(text: str, sender: Identity, **kw: object) -> InboundMessage:
    return InboundMessage(
        channel=Channel.EMAIL,
        inbox="support",
        external_id="m1",
        sender=sender,
        text=text,
        received_at=datetime(2026, 1, 5, tzinfo=UTC),
        **kw,  # type: ignore[arg-type]
    )


def test_text_is_cleaned_and_the_inbound_kept_as_given() -> None:
    inbound = _inbound("\ufeff 你好\r\n世界\u200b ", Identity(IdentityKind.EMAIL, "a@b.com"))
    normalized = normalize(inbound)
    assert normalized.text == "你好\n世界"
    assert normalized.inbound is inbound
    assert inbound.text == "\ufeff 你好\r\n世界\u200b "


def test_email_identities_are_lowercased_and_aliases_too() -> None:
    inbound = _inbound(
        "hi",
        Identity(IdentityKind.EMAIL, " Wang.Fang@Example.COM"),
        aliases=(Identity(IdentityKind.EMAIL, "W@B.cn"),),
    )
    normalized = normalize(inbound)
    assert normalized.sender == Identity(IdentityKind.EMAIL, "wang.fang@example.com")
    assert normalized.aliases == (Identity(IdentityKind.EMAIL, "w@b.cn"),)


def test_phone_identities_become_e164_but_uncertain_ones_are_never_rewritten() -> None:
    assert canonical_identity(Identity(IdentityKind.PHONE, "138 0013 8000")).value == "+8613800138000"
    e164 = Identity(IdentityKind.PHONE, "+8613800138000")
    assert canonical_identity(e164) is e164
    for kept in ("raw:CN:91234567", "unknown:phone:call-1"):
        assert canonical_identity(Identity(IdentityKind.PHONE, kept)).value == kept


def test_wechat_ids_keep_their_case() -> None:
    openid = Identity(IdentityKind.WECHAT_OPENID, "oAbC-123_xYz")
    assert canonical_identity(openid) is openid


def test_language_is_chinese_when_any_chinese_is_written() -> None:
    sender = Identity(IdentityKind.EMAIL, "a@b.com")
    assert normalize(_inbound("我的order到哪了", sender)).language is Language.ZH
    assert normalize(_inbound("Where is my order?", sender)).language is Language.EN
    assert normalize(_inbound("👍 123", sender)).language is Language.UNKNOWN


def test_thread_key_names_inbox_canonical_address_and_thread() -> None:
    inbound = _inbound("hi", Identity(IdentityKind.EMAIL, "A@B.com"), thread="<root@b.com>")
    assert normalize(inbound).thread_key == "support|email:a@b.com|<root@b.com>"


def test_a_rule_plugs_in_as_one_more_step() -> None:
    def shout(message: NormalizedMessage) -> NormalizedMessage:
        return dataclasses.replace(message, text=message.text.upper())

    inbound = _inbound(" hello ", Identity(IdentityKind.EMAIL, "a@b.com"))
    assert normalize(inbound, (*DEFAULT_STEPS, shout)).text == "HELLO"
