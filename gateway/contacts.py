"""Contact flags that connectors report (a bounce, an unfollow, an uncertain number), set by intake."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from core.model import ContactFlag
from core.store.roles import Contacts


async def apply_flags(store: Contacts, changes: Sequence[ContactFlag], now: datetime) -> None:
    """Set or clear each flag on the contact of its address (created if the address is new); a flag already
    as wanted writes nothing, so a repeat is free."""
    for change in changes:
        contact = await store.contact_for(change.identity, name=None, now=now)
        present = change.flag in contact.flags
        if change.on and not present:
            await store.save_contact(dataclasses.replace(contact, flags=(*contact.flags, change.flag)))
        elif not change.on and present:
            flags = tuple(f for f in contact.flags if f != change.flag)
            await store.save_contact(dataclasses.replace(contact, flags=flags))
