"""What the customer is told on handoff, depending on business hours."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from core.config import BotMessages, BusinessHours


def in_business_hours(hours: BusinessHours | None, now: datetime) -> bool:
    """No configured hours means agents are always reachable."""
    if hours is None:
        return True
    local = now.astimezone(ZoneInfo(hours.timezone))
    return local.weekday() in hours.weekday_numbers() and hours.start <= local.time() < hours.end


def handoff_message(messages: BotMessages, hours: BusinessHours | None, now: datetime) -> str:
    return messages.handoff if in_business_hours(hours, now) else messages.handoff_off_hours
