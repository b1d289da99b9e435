"""Which conversation a mail joins: our Message-IDs in its reply chain, then a signed ticket tag, else a new thread."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any

from connectors.email.authres import SenderAuth
from connectors.email.parse import ParsedMail
from connectors.email.tagsig import TAG, signed_tag, subject_tags
from core.model import Channel, Conversation, Direction, Identity, Message, SenderCheck
from core.store.base import ChannelStore

_PREFIX = re.compile(
    r"^\s*((re|fw|fwd|aw|wg|sv|vs|antw|回复|回覆|答复|转发|轉寄)\s*(\[\d+\])?\s*[:：]\s*)+", re.IGNORECASE
)


def outgoing_message_id(message_id: str, domain: str) -> str:
    """The Message-ID of the mail that carries our stored message ``message_id`` (no angle brackets).

    It is derived, not random: Outbound stores a message before the connector sends it, so the id we put
    on the wire must be computable from what is stored. Threading reverses it with ``stored_message_id``.
    """
    return f"{message_id}@{domain}"


def stored_message_id(mail_id: str, domain: str) -> str | None:
    """Our stored message id inside one of our own Message-IDs, or None if the id is not ours."""
    local, _, host = mail_id.rpartition("@")
    if host.lower() == domain.lower() and local.startswith("msg_"):
        return local
    return None


def ticket_tag(number: str, secret: bytes) -> str:
    return signed_tag(number, secret)


def base_subject(subject: str) -> str:
    """The subject without Re:/Fwd:/回复: prefixes and our ticket tags, for the reply we compose."""
    text = TAG.sub("", subject)
    return " ".join(_PREFIX.sub("", text).split())


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadMatch:
    thread: str
    via: str  # stored (a redelivery), chain, tag or new
    conversation: Conversation | None = None


async def _conversation_of(store: ChannelStore, message: Message | None, inbox: str) -> Conversation | None:
    if message is None or message.inbox != inbox:
        return None
    return await store.get_conversation(message.conversation_id)


def admits_copies(email_meta: Mapping[str, Any]) -> bool:
    """Whether the people a stored mail copied in are on the thread from then on.

    A mail that joined by our reply chain or opened the thread vouches for its To/Cc; one that joined by a subject
    tag only when a trusted server authenticated its sender; one whose DMARC failed, or whose sender a trusted server
    checked and could not authenticate, never does: a forger must not get the answers copied to a friend.
    """
    auth = email_meta.get("auth", SenderAuth.NONE.value)
    if auth == SenderAuth.FAIL.value or email_meta.get("sender_check") == SenderCheck.UNVERIFIED.value:
        return False
    return email_meta.get("thread_via") != "tag" or auth == SenderAuth.PASS.value


def participants(conversation: Conversation, messages: Iterable[Message]) -> frozenset[str]:
    """Everyone already on a conversation (lower-case addresses): its customer, its writers, and whom they copied."""
    found = {conversation.address.value.lower()}
    for message in messages:
        if message.direction is not Direction.INBOUND:
            continue
        email_meta = message.meta.get("email")
        if not isinstance(email_meta, Mapping):
            continue
        fields = [str(email_meta.get("from") or "")]
        if admits_copies(email_meta):
            fields += [*map(str, email_meta.get("to") or ()), *map(str, email_meta.get("cc") or ())]
        found.update(addr.lower() for _name, addr in getaddresses(fields) if "@" in addr)
    return frozenset(found)


async def find_thread(
    store: ChannelStore,
    *,
    inbox: str,
    domain: str,
    mail: ParsedMail,
    sender: Identity,
    auth: SenderAuth = SenderAuth.NONE,
    secret: bytes,
) -> ThreadMatch:
    """Match a mail to a conversation, in the documented order; every lookup is a read of the store."""
    stored = await store.find_message(
        channel=Channel.EMAIL, inbox=inbox, direction=Direction.INBOUND, external_id=mail.dedupe_key
    )
    conversation = await _conversation_of(store, stored, inbox)
    if conversation is not None:
        return ThreadMatch(thread=conversation.thread, via="stored", conversation=conversation)
    # 1. The reply chain, nearest first: our own outgoing mail, or an earlier mail of this thread we took in.
    for mail_id in mail.chain:
        ours = stored_message_id(mail_id, domain)
        message = await store.get_message(ours) if ours else None
        if message is None:
            message = await store.find_message(
                channel=Channel.EMAIL, inbox=inbox, direction=Direction.INBOUND, external_id=mail_id
            )
        conversation = await _conversation_of(store, message, inbox)
        if conversation is not None:
            return ThreadMatch(thread=conversation.thread, via="chain", conversation=conversation)
    # 2. A ticket tag in the subject. From: is easy to forge and a number easy to guess, so a signed tag joins only
    # for someone already on the ticket or a sender a trusted server authenticated; an unsigned (old or made-up)
    # tag needs both; a sender whose DMARC failed never joins by tag.
    if auth is not SenderAuth.FAIL:
        for tag in subject_tags(mail.subject, secret):
            ticket = await store.get_ticket(tag.number)
            if ticket is None or ticket.inbox != inbox:
                continue
            conversation = await store.get_conversation(ticket.conversation_id)
            if conversation is None:
                continue
            on_it = sender.value.lower() in participants(conversation, await store.messages(conversation.id))
            authenticated = auth is SenderAuth.PASS
            if (on_it or authenticated) if tag.signed else (on_it and authenticated):
                return ThreadMatch(thread=conversation.thread, via="tag", conversation=conversation)
    # 3. A new thread, keyed by its root so later mails of the same (foreign) thread join it.
    root = mail.references[0] if mail.references else (mail.in_reply_to[0] if mail.in_reply_to else mail.dedupe_key)
    return ThreadMatch(thread=root, via="new")
