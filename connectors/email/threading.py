"""Which conversation a mail joins: our Message-IDs in its reply chain, then a [HL-000123] tag, else a new thread."""

from __future__ import annotations

import re
from dataclasses import dataclass

from connectors.email.parse import ParsedMail
from core.model import Channel, Conversation, Direction, Identity, Message
from core.store.base import ChannelStore

TICKET_TAG = re.compile(r"\[(HL-\d{6,})\]")
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


def ticket_tag(number: str) -> str:
    return f"[{number}]"


def base_subject(subject: str) -> str:
    """The subject without Re:/Fwd:/回复: prefixes and our ticket tags, for the reply we compose."""
    text = TICKET_TAG.sub("", subject)
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


async def find_thread(
    store: ChannelStore, *, inbox: str, domain: str, mail: ParsedMail, sender: Identity
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
    # 2. A ticket tag in the subject, only when the sender is that ticket's customer (tags are easy to forge).
    for number in TICKET_TAG.findall(mail.subject):
        ticket = await store.get_ticket(number)
        if ticket is None or ticket.inbox != inbox:
            continue
        conversation = await store.get_conversation(ticket.conversation_id)
        if conversation is not None and conversation.address == sender:
            return ThreadMatch(thread=conversation.thread, via="tag", conversation=conversation)
    # 3. A new thread, keyed by its root so later mails of the same (foreign) thread join it.
    root = mail.references[0] if mail.references else (mail.in_reply_to[0] if mail.in_reply_to else mail.dedupe_key)
    return ThreadMatch(thread=root, via="new")
