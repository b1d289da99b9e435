"""A number we cannot read with confidence: a contact of its own, flagged, never merged."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from core.model import Channel, Identity, IdentityKind
from gateway.intake import BotSetup
from tests.conftest import make_config, started
from tests.phone.conftest import call_message, cti, phone_inbox, settled, store_of, tickets_of


async def test_national_number_valid_only_in_another_region_is_flagged_and_not_merged(
    tmp_path: Path, bot_setup: BotSetup
) -> None:
    config = make_config(tmp_path, inboxes=[phone_inbox("tel", other_regions=["HK"])])
    async with started(config, bot_setup) as gw:
        store = store_of(gw)
        hk = Identity(IdentityKind.PHONE, "+85291234567")
        wechat = await store.conversation_for(
            Identity(IdentityKind.WECHAT_OPENID, "oHK_0123456789"), channel=Channel.WECHAT, inbox="wx", name="陈",
            now=datetime.now(UTC),
        )  # fmt: skip
        assert await store.add_identity(wechat.contact_id, hk)
        for call_id in ("a1", "a2"):
            base = {"direction": "in", "from": "9123 4567", "to": "4008001234", "callId": call_id}
            await cti(gw, "tel", {**base, "event": "newCall"})
            await cti(gw, "tel", {**base, "event": "hangup", "cause": "noAnswer"})
            await settled(gw)

        first, second = await call_message(gw, "tel", "a1"), await call_message(gw, "tel", "a2")
        assert first is not None and second is not None
        assert first.conversation_id == second.conversation_id, "the same raw number is the same caller"
        assert first.meta["ambiguous_number"] == "91234567"
        assert first.meta["number_candidates"] == ["+85291234567"]
        assert "+852 9123 4567" in first.text
        conversation = await store.get_conversation(first.conversation_id)
        assert conversation is not None
        assert conversation.address == Identity(IdentityKind.PHONE, "raw:CN:91234567")
        assert conversation.contact_id != wechat.contact_id, "never merged with the contact it may be"
        contact = await store.get_contact(conversation.contact_id)
        assert contact is not None and contact.flags == ("ambiguous:phone:raw:CN:91234567",)
        assert hk not in contact.identities
        owner = await store.get_contact(wechat.contact_id)
        assert (
            owner is not None
            and not owner.flags
            and Identity(IdentityKind.PHONE, "raw:CN:91234567") not in (owner.identities)
        )
        (ticket,) = await tickets_of(gw, first)  # we can still try to call back: a callback ticket
        assert "ambiguous-number" in ticket.tags and ticket.subject.endswith("from 91234567")
