"""What is done to contacts: flags that connectors report, set by intake; an agent's edits, links and merges, and a
customer's link by one-time code; every change an agent or customer makes leaves an event."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.linking import code_entry, link_request
from core.clock import Clock
from core.codec import to_jsonable
from core.model import (
    Contact,
    ContactFlag,
    Delivery,
    DeliveryStatus,
    DownstreamEvent,
    EventType,
    Identity,
    IdentityKind,
)
from core.store import NotFound, Store, VersionConflict
from core.store.roles import Contacts
from normalizer.phone import to_e164

_MAX_RETRIES = 8
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,63}$")

CODE_TTL = timedelta(minutes=10)
CODE_RESEND_S = 60.0  # one code per contact (and per claimed address) a minute
CODE_TRIES = 5  # wrong entries before a code is burnt


LINK_TEXTS = {
    "sent": "验证码已发送到 {identity}，10 分钟内有效，请直接回复 6 位验证码。/ "
    "A code is on its way to {identity}; reply with its 6 digits within 10 minutes.",
    "wait": "验证码刚刚发送过，请稍后再试。/ A code was sent a moment ago; please try again in a minute.",
    "unsupported": "暂时只能验证邮箱地址。/ Only email addresses can be verified here for now.",
    "undeliverable": "验证码未能发送到 {identity}，请检查地址。/ The code could not be sent to {identity}.",
    "invalid": "这不是有效的邮箱地址或手机号。/ That is not a valid email address or phone number.",
    "linked": "已绑定 {identity}。/ {identity} is now linked to you.",
    "wrong": "验证码不正确，请重试。/ That code is not right; please try again.",
    "expired": "验证码已失效，请重新获取。/ That code has expired; ask for a new one.",
    "too_many": "尝试次数过多，请重新获取验证码。/ Too many tries; ask for a new code.",
}


class IdentityTaken(Exception):
    """The identity belongs to another contact (API: 409); merging the two is the way to join them."""

    def __init__(self, owner: str) -> None:
        super().__init__(f"identity belongs to contact {owner}; merge the contacts instead")
        self.owner = owner


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


def parse_identity(text: str, *, region: str = "CN") -> Identity:
    """An identity as an agent or customer writes it, in the one form the store keeps (E.164, lower-case mail).

    ValueError (with what was wrong) for anything else.
    """
    identity = Identity.parse(text.strip())
    if identity.kind is IdentityKind.PHONE:
        e164 = to_e164(identity.value, region)
        if e164 is None:
            raise ValueError(f"{identity.value!r} is not a phone number")
        return Identity(IdentityKind.PHONE, e164)
    if identity.kind is IdentityKind.EMAIL:
        if not _EMAIL.match(identity.value):
            raise ValueError(f"{identity.value!r} is not an email address")
        return Identity(IdentityKind.EMAIL, identity.value.lower())
    if not identity.value or len(identity.value) > 200 or not identity.value.isprintable():
        raise ValueError("identity value must be 1-200 printable characters")
    return identity


def contact_event(kind: EventType, contact: Contact, at: datetime, **data: Any) -> DownstreamEvent:
    return DownstreamEvent(
        type=kind,
        data={"contact": to_jsonable(contact), **to_jsonable(data)},
        occurred_at=at,
        idempotency_key=f"{kind}:{contact.id}:{contact.version}:{uuid.uuid4().hex[:8]}",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactPatch:
    name: str | None = None
    clear_name: bool = False
    vip: bool | None = None
    tags: tuple[str, ...] | None = None
    version: int | None = None  # the version the agent read: a conflict if it changed since


CodeSender = Callable[[Identity, str], Awaitable[Delivery | None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeResult:
    """What came of a customer's step in linking an identity; ``outcome`` names it for the reply."""

    outcome: str  # sent, wait, unsupported, undeliverable, linked, wrong, expired, too_many, none
    identity: Identity | None = None
    contact: Contact | None = None


class ContactService:
    def __init__(self, store: Store, clock: Clock, send_code: CodeSender | None = None) -> None:
        self._store = store
        self._clock = clock
        self._send_code = send_code

    async def require(self, contact_id: str) -> Contact:
        contact = await self._store.get_contact(contact_id)
        if contact is None:
            raise NotFound(f"no contact {contact_id!r}")
        return contact

    async def patch(self, contact_id: str, patch: ContactPatch, *, agent: str | None) -> Contact:
        for _ in range(_MAX_RETRIES):
            contact = await self.require(contact_id)
            if patch.version is not None and contact.version != patch.version:
                raise VersionConflict(f"contact {contact_id} is at version {contact.version}, not {patch.version}")
            changed = dataclasses.replace(
                contact,
                name=None if patch.clear_name else (patch.name if patch.name is not None else contact.name),
                vip=contact.vip if patch.vip is None else patch.vip,
                tags=contact.tags if patch.tags is None else patch.tags,
            )
            diff = {
                field: {"from": getattr(contact, field), "to": getattr(changed, field)}
                for field in ("name", "vip", "tags")
                if getattr(contact, field) != getattr(changed, field)
            }
            if not diff:
                return contact
            try:
                saved = await self._store.save_contact(changed, expected_version=contact.version)
            except VersionConflict:
                if patch.version is not None:
                    raise
                continue
            event = contact_event(EventType.CONTACT_UPDATED, saved, self._clock(), changes=diff, by=agent)
            await self._store.append_events([event])
            return saved
        raise VersionConflict(f"contact {contact_id} kept changing")

    async def link(self, contact_id: str, identity: Identity, *, by: str, how: str) -> Contact:
        """Link a free identity to the contact, with an event naming who did it and how (the audit trail)."""
        contact = await self.require(contact_id)
        if contact.merged_into is not None:
            raise NotFound(f"contact {contact_id} was merged into {contact.merged_into}")
        if identity in contact.identities:
            return contact
        if not await self._store.add_identity(contact_id, identity):
            owner = await self._store.contact_by_identity(identity)
            raise IdentityTaken(owner.id if owner else "?")
        linked = await self.require(contact_id)
        event = contact_event(
            EventType.CONTACT_IDENTITY_LINKED, linked, self._clock(), identity=str(identity), by=by, how=how
        )
        await self._store.append_events([event])
        return linked

    async def merge(self, source_id: str, into_id: str, *, by: str, how: str) -> Contact:
        """``source`` into ``into``: every conversation and ticket kept; ValueError for itself or a merged one."""
        source = await self.require(source_id)
        event = DownstreamEvent(
            type=EventType.CONTACT_MERGED,
            data={"from": source_id, "into": into_id, "identities": [str(i) for i in source.identities], "by": by,
                  "how": how},
            occurred_at=self._clock(),
            idempotency_key=f"contact.merged:{source_id}:{into_id}",
        )  # fmt: skip
        return await self._store.merge_contacts(source_id, into_id, events=[event])

    # a customer proves an identity with a one-time code -------------------------------------------
    def _secret_name(self, contact_id: str) -> str:
        return f"link-code:{contact_id}"

    @staticmethod
    def _digest(contact_id: str, identity: Identity, code: str) -> str:
        """Only a digest is kept: the code itself never reaches the store or a log."""
        return hashlib.sha256(f"{contact_id}|{identity}|{code}".encode()).hexdigest()

    async def request_code(self, contact_id: str, identity: Identity) -> CodeResult:
        """Send a one-time code to the claimed address, at most one a minute per contact and per address."""
        if self._send_code is None or identity.kind is not IdentityKind.EMAIL:
            return CodeResult(outcome="unsupported", identity=identity)
        contact = await self.require(contact_id)
        if identity in contact.identities:
            return CodeResult(outcome="linked", identity=identity, contact=contact)
        if not await self._store.claim(f"link-code:send:{contact_id}", CODE_RESEND_S):
            return CodeResult(outcome="wait", identity=identity)
        if not await self._store.claim(f"link-code:send-to:{identity}", CODE_RESEND_S):
            return CodeResult(outcome="wait", identity=identity)
        code = f"{secrets.randbelow(1_000_000):06d}"
        now = self._clock()
        record = {"identity": str(identity), "digest": self._digest(contact_id, identity, code),
                  "nonce": uuid.uuid4().hex}  # fmt: skip
        await self._store.set_secret(self._secret_name(contact_id), json.dumps(record), now + CODE_TTL)
        text = (
            f"您的验证码是 {code}，10 分钟内有效。如非本人操作请忽略。/ "
            f"Your verification code is {code}; it is valid for 10 minutes. Ignore this mail if you did not ask."
        )
        delivery = await self._send_code(identity, text)
        if delivery is None or delivery.status is DeliveryStatus.FAILED:
            await self._store.set_secret(self._secret_name(contact_id), "", now)
            return CodeResult(outcome="undeliverable", identity=identity)
        return CodeResult(outcome="sent", identity=identity)

    async def pending_code(self, contact_id: str) -> bool:
        return bool(await self._store.get_secret(self._secret_name(contact_id), self._clock()))

    @staticmethod
    def may_step(text: str) -> bool:
        """Whether ``chat_step`` could take ``text`` as a step of linking (and so read the store): when not, it
        answers None without a read, and the bot may answer at once."""
        return link_request(text) is not None or code_entry(text) is not None

    async def chat_step(self, contact_id: str, text: str) -> str | None:
        """A customer linking an address in chat: "绑定邮箱 a@b.com" sends a code there, the code typed back links
        it. What to answer, or None when the message is no step of linking (a six-digit number with no code
        pending is an ordinary message)."""
        claimed = link_request(text)
        if claimed is not None:
            try:
                identity = parse_identity(claimed)
            except ValueError:
                return LINK_TEXTS["invalid"]
            result = await self.request_code(contact_id, identity)
            return LINK_TEXTS[result.outcome].format(identity=identity.value)
        code = code_entry(text)
        if code is None or not await self.pending_code(contact_id):
            return None
        result = await self.enter_code(contact_id, code)
        return LINK_TEXTS[result.outcome].format(identity=result.identity.value if result.identity else "")

    async def enter_code(self, contact_id: str, code: str) -> CodeResult:
        """Check a code the customer entered: right once (then linked, or the two contacts merged if the address
        already had one), wrong at most ``CODE_TRIES`` times, never after it expired."""
        raw = await self._store.get_secret(self._secret_name(contact_id), self._clock())
        if not raw:
            return CodeResult(outcome="expired")
        record = json.loads(raw)
        if record.get("used"):
            return CodeResult(outcome="expired")  # replayed: the code already did its work
        identity = Identity.parse(record["identity"])
        nonce = record["nonce"]
        for attempt in range(CODE_TRIES):  # each entry, right or wrong, takes one of the code's slots
            if await self._store.claim(f"link-code:try:{nonce}:{attempt}", CODE_TTL.total_seconds()):
                break
        else:
            await self._store.set_secret(self._secret_name(contact_id), "", self._clock())
            return CodeResult(outcome="too_many", identity=identity)
        if not hmac.compare_digest(self._digest(contact_id, identity, code), record["digest"]):
            return CodeResult(outcome="wrong", identity=identity)
        if not await self._store.claim(f"link-code:used:{nonce}", CODE_TTL.total_seconds()):
            return CodeResult(outcome="expired", identity=identity)  # the same code, entered twice at once
        used = json.dumps({"used": True})  # kept till the code would have expired, so a replay gets an answer
        await self._store.set_secret(self._secret_name(contact_id), used, self._clock() + CODE_TTL)
        owner = await self._store.contact_by_identity(identity)
        if owner is not None and owner.id != contact_id:
            # The customer proved the address another contact holds: both are this person.
            contact = await self.merge(owner.id, contact_id, by="customer", how="one_time_code")
        else:
            contact = await self.link(contact_id, identity, by="customer", how="one_time_code")
        return CodeResult(outcome="linked", identity=identity, contact=contact)
