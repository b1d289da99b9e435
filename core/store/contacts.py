"""What a merge of two contacts makes of them, computed once for both store backends."""

from __future__ import annotations

import dataclasses

from core.model import Contact


def merged_contact(source: Contact, into: Contact) -> Contact:
    """``into`` with ``source``'s identities, flags and tags added, VIP if either was, its name if it had none.

    A contact cannot be merged into itself, and a merged one (a pointer) neither merges nor is merged into.
    """
    if source.id == into.id:
        raise ValueError("a contact cannot be merged into itself")
    for contact in (source, into):
        if contact.merged_into is not None:
            raise ValueError(f"contact {contact.id} was already merged into {contact.merged_into}")
    return dataclasses.replace(
        into,
        name=into.name or source.name,
        identities=(*into.identities, *(i for i in source.identities if i not in into.identities)),
        flags=(*into.flags, *(f for f in source.flags if f not in into.flags)),
        tags=(*into.tags, *(t for t in source.tags if t not in into.tags)),
        vip=into.vip or source.vip,
        version=into.version + 1,
    )
