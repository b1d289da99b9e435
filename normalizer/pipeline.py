"""normalize(inbound) -> NormalizedMessage: a pipeline of small pure steps, intake's first stage.

Each step takes a NormalizedMessage and returns a new one. Operator rules (field extraction, routing, SLA
policy choice) join as further steps: pass ``steps=(*DEFAULT_STEPS, my_step)`` to ``normalize`` (or to Intake).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from core.model import InboundMessage, NormalizedMessage
from normalizer.identity import canonical_identity
from normalizer.language import detect_language
from normalizer.text import clean_text

Step = Callable[[NormalizedMessage], NormalizedMessage]


def cleaned_text(message: NormalizedMessage) -> NormalizedMessage:
    return dataclasses.replace(message, text=clean_text(message.text))


def canonical_identities(message: NormalizedMessage) -> NormalizedMessage:
    sender = canonical_identity(message.sender)
    aliases = tuple(canonical_identity(a) for a in message.aliases)
    if sender is message.sender and aliases == message.aliases:
        return message
    return dataclasses.replace(message, sender=sender, aliases=aliases)


def language(message: NormalizedMessage) -> NormalizedMessage:
    return dataclasses.replace(message, language=detect_language(message.text))


def thread_key(message: NormalizedMessage) -> NormalizedMessage:
    """``inbox|address|thread``: the conversation a message belongs to, whatever the channel calls a thread."""
    key = f"{message.inbound.inbox}|{message.sender}|{message.inbound.thread}"
    return dataclasses.replace(message, thread_key=key)


# Order matters: the language is read from cleaned text, the thread key from the canonical sender.
DEFAULT_STEPS: tuple[Step, ...] = (cleaned_text, canonical_identities, language, thread_key)


def normalize(inbound: InboundMessage, steps: Sequence[Step] = DEFAULT_STEPS) -> NormalizedMessage:
    message = NormalizedMessage(inbound=inbound, text=inbound.text, sender=inbound.sender, aliases=inbound.aliases)
    for step in steps:
        message = step(message)
    return message
