"""What the bot needs at run time: the (hot-reloadable) index, the policy and what it says."""

from __future__ import annotations

from dataclasses import dataclass

from bot.faq import Matcher
from bot.policy import BotPolicy
from core.config import BotMessages, BusinessHours


@dataclass(frozen=True, slots=True, kw_only=True)
class BotSetup:
    index: Matcher  # a LiveIndex in the app: hot-reloaded KB
    policy: BotPolicy
    messages: BotMessages
    hours: BusinessHours | None
