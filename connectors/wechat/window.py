"""WeChat's customer-service window: 48 h and 5 messages after a user message, 1 min and 3 after a click or scan.

The state lives in the store (when each allowance opened; one claim per quota slot), so every instance
sees the same window and two instances never hand out the same slot.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from connectors.wechat.parse import Opens
from core.model import Checkpoint
from core.store.roles import Checkpoints, Coordination


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    span: timedelta
    quota: int


RULES: dict[Opens, Rule] = {
    Opens.MESSAGE: Rule(span=timedelta(hours=48), quota=5),
    Opens.EVENT: Rule(span=timedelta(minutes=1), quota=3),
}


# A window's opening is kept this much longer than the window itself, then it expires from the store. Until
# then a send after the window is refused here (WINDOW_CLOSED); after it we know nothing of the user
# (UNKNOWN) and WeChat decides, refusing with 45015, which fails the delivery the same way.
KEPT_PAST_SPAN: Final = timedelta(hours=1)


class Verdict(enum.StrEnum):
    OPEN = "open"  # a quota slot was taken: send
    UNKNOWN = "unknown"  # we never saw this user write: let WeChat decide
    WINDOW_CLOSED = "window_closed"
    QUOTA_EXHAUSTED = "quota_exhausted"


@dataclass(frozen=True, slots=True, kw_only=True)
class Allowance:
    opens: Opens
    opened_at: datetime
    until: datetime
    quota: int


def open_allowances(opened: dict[Opens, datetime], now: datetime) -> list[Allowance]:
    """The allowances still open at ``now``, the 48 h one first."""
    out = []
    for opens, rule in RULES.items():
        at = opened.get(opens)
        if at is not None and at <= now < at + rule.span:
            out.append(Allowance(opens=opens, opened_at=at, until=at + rule.span, quota=rule.quota))
    return out


class WindowStore(Checkpoints, Coordination, Protocol):
    """The roles a reply window keeps its openings and quota claims in."""


class ReplyWindow:
    def __init__(self, store: WindowStore, inbox: str) -> None:
        self._store = store
        self._inbox = inbox

    def _key(self, openid: str, opens: Opens) -> str:
        return f"wechat:window:{self._inbox}:{openid}:{opens}"

    def opening(self, openid: str, opens: Opens, at: datetime) -> Checkpoint:
        """The user wrote (or clicked, subscribed, scanned): a fresh allowance starts now. The checkpoint is
        stored with the push's message (one write), and only when that message is new.

        Kept for the window's span plus a margin (49 h for a message), not for ever: one per user who
        ever wrote would grow the store without bound.
        """
        ttl = RULES[opens].span + KEPT_PAST_SPAN
        return Checkpoint(key=self._key(openid, opens), value=at.isoformat(), ttl_s=ttl.total_seconds())

    async def opened(self, openid: str, opens: Opens, at: datetime) -> None:
        """``opening``, written on its own."""
        checkpoint = self.opening(openid, opens, at)
        await self._store.set_checkpoint(checkpoint.key, checkpoint.value, ttl_s=checkpoint.ttl_s)

    async def take(self, openid: str, now: datetime) -> Verdict:
        """Take one slot of an open allowance for a customer-service message."""
        opened: dict[Opens, datetime] = {}
        for opens in RULES:
            stamp = await self._store.get_checkpoint(self._key(openid, opens))
            if stamp is not None:
                opened[opens] = datetime.fromisoformat(stamp)
        if not opened:
            return Verdict.UNKNOWN
        allowances = open_allowances(opened, now)
        for allowance in allowances:
            ttl = (allowance.until - now).total_seconds() + 60
            for slot in range(1, allowance.quota + 1):
                key = f"{self._key(openid, allowance.opens)}:{allowance.opened_at.isoformat()}:{slot}"
                if await self._store.claim(key, ttl):
                    return Verdict.OPEN
        return Verdict.QUOTA_EXHAUSTED if allowances else Verdict.WINDOW_CLOSED
