"""normalize(inbound) -> NormalizedMessage: intake's first stage, small pure steps in a fixed order, then rules.

The built-in steps are plain functions of values (clean_text, canonical_identity, detect_language, thread_key),
composed into one NormalizedMessage. Operator rules (field extraction, routing, SLA policy choice) are Steps,
each taking a NormalizedMessage and returning a new one: pass ``steps=(my_rule, ...)`` to ``normalize`` (or to
Intake). Building the message once keeps the stage cheap on every message (a dataclasses.replace per built-in
step cost more than all of them together).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from core.model import Identity, InboundMessage, NormalizedMessage
from normalizer.identity import canonical_identity
from normalizer.language import detect_language
from normalizer.text import clean_text

Step = Callable[[NormalizedMessage], NormalizedMessage]

# Rules that run after the built-in steps; none are shipped.
DEFAULT_STEPS: tuple[Step, ...] = ()


def thread_key(inbox: str, sender: Identity, thread: str) -> str:
    """``inbox|address|thread``: the conversation a message belongs to, whatever the channel calls a thread."""
    return f"{inbox}|{sender}|{thread}"


def normalize(inbound: InboundMessage, steps: Sequence[Step] = DEFAULT_STEPS) -> NormalizedMessage:
    """Clean the text, make identities canonical, read the language (from the cleaned text) and the thread key
    (from the canonical sender), then apply ``steps`` in order."""
    text = clean_text(inbound.text)
    sender = canonical_identity(inbound.sender)
    message = NormalizedMessage(
        inbound=inbound,
        text=text,
        sender=sender,
        aliases=tuple(canonical_identity(a) for a in inbound.aliases) if inbound.aliases else (),
        language=detect_language(text),
        thread_key=thread_key(inbound.inbox, sender, inbound.thread),
    )
    for step in steps:
        message = step(message)
    return message
