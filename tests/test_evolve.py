"""``evolve`` makes what ``dataclasses.replace`` makes, for every model class, and refuses what it refuses."""

from __future__ import annotations

import dataclasses
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime

import pytest

from core.evolve import evolve
from core.model import Channel, Conversation, ConversationStatus, Identity, IdentityKind, Priority, Ticket, TicketStatus

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


def _ticket() -> Ticket:
    return Ticket(
        id="tk_1",
        number="",
        conversation_id="cv_1",
        contact_id="ct_1",
        subject="未接来电",
        status=TicketStatus.NEW,
        priority=Priority.NORMAL,
        channel=Channel.PHONE,
        inbox="tel",
        created_at=NOW,
        updated_at=NOW,
        tags=("phone",),
        fields={"a": "b"},
    )


def _conversation() -> Conversation:
    return Conversation(
        id="cv_1",
        contact_id="ct_1",
        channel=Channel.PHONE,
        inbox="tel",
        address=Identity(IdentityKind.PHONE, "+8613800138000"),
        status=ConversationStatus.BOT,
        version=1,
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.parametrize(
    ("make", "changes"),
    [
        (_ticket, {"number": "HL-000001"}),
        (_ticket, {"version": 2, "priority": Priority.HIGH, "assignee": None}),
        (_ticket, {}),
        (_conversation, {"status": ConversationStatus.WAITING_FOR_AGENT, "ticket_id": "tk_1", "version": 2}),
    ],
)
def test_the_same_object_as_replace(make: object, changes: dict[str, object]) -> None:
    original = make()  # type: ignore[operator]
    made = evolve(original, **changes)
    assert made == dataclasses.replace(original, **changes)
    assert type(made) is type(original)
    assert all(getattr(made, k) is v for k, v in changes.items())
    assert made is not original
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.version = 9


def test_an_unknown_field_raises_as_replace_does() -> None:
    with pytest.raises(TypeError):
        evolve(_ticket(), nmber="HL-1")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Checked:
    value: int
    seen: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seen.append(self.value)


@dataclass(frozen=True, kw_only=True)
class _WithInitVar:
    value: int
    scale: InitVar[int] = 1
    scaled: int = 0

    def __post_init__(self, scale: int) -> None:
        object.__setattr__(self, "scaled", self.value * scale)


def test_a_class_whose_init_does_more_goes_through_replace() -> None:
    checked = _Checked(value=1)
    assert evolve(checked, value=2).seen == [1, 2]  # __post_init__ ran
    assert evolve(_WithInitVar(value=2, scale=3), value=4).scaled == 4  # as replace: the InitVar's default
