"""Business time: working hours, lunch break, public holidays and make-up workdays (调休), or round the clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

import holidays

from core.rules_config import SlaConfig, SlaHours

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# A due time further than this in working days is a misconfiguration (no working day at all), not a date.
_MAX_DAYS = 3660


class Calendar(Protocol):
    def add(self, start: datetime, seconds: float) -> datetime:
        """The moment ``seconds`` of working time after ``start``."""
        ...

    def elapsed(self, start: datetime, end: datetime) -> float:
        """Seconds of working time between ``start`` and ``end`` (0 if end is earlier)."""
        ...

    def is_working(self, at: datetime) -> bool: ...

    @property
    def day_seconds(self) -> float:
        """How long one working day is: what ``1d`` of an SLA target means on this calendar."""
        ...


class RoundTheClock:
    day_seconds = 86400.0

    def add(self, start: datetime, seconds: float) -> datetime:
        return start + timedelta(seconds=seconds)

    def elapsed(self, start: datetime, end: datetime) -> float:
        return max(0.0, (end - start).total_seconds())

    def is_working(self, at: datetime) -> bool:
        return True


@lru_cache(maxsize=8)
def _country(code: str) -> holidays.HolidayBase:
    return holidays.country_holidays(code)


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def warm_up(calendar: Calendar, around: date) -> None:
    """Load the timezone and the holidays of the years around ``around``: file reads and imports, which
    belong off the event loop, before the first message needs them."""
    if isinstance(calendar, BusinessCalendar):
        calendar.zone  # noqa: B018  (the tz file is read and cached on first use: a blocking read on the loop)
        for year in (around.year - 1, around.year, around.year + 1):
            calendar.is_workday(date(year, 6, 1))


@dataclass(frozen=True, slots=True, kw_only=True)
class BusinessCalendar:
    """Working hours on working days. A day is a working day if the company says so (``workdays``), else not if
    the company is off (``days_off``), else if the country moved a weekend to work (调休), else not on a public
    holiday, else by the weekday."""

    timezone: str
    weekdays: frozenset[int]
    start: time
    end: time
    lunch: tuple[time, time] | None = None
    country: str = ""
    days_off: frozenset[date] = field(default_factory=frozenset)
    workdays: frozenset[date] = field(default_factory=frozenset)

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)

    @property
    def day_seconds(self) -> float:
        return sum(_span(a, b) for a, b in self._periods())

    def _periods(self) -> tuple[tuple[time, time], ...]:
        if self.lunch is None:
            return ((self.start, self.end),)
        return ((self.start, self.lunch[0]), (self.lunch[1], self.end))

    def is_workday(self, day: date) -> bool:
        if day in self.workdays:
            return True
        if day in self.days_off:
            return False
        if self.country:
            public = _country(self.country)
            holiday = day in public  # first: it loads the year, make-up workdays included
            if day in public.weekend_workdays:
                return True
            if holiday:
                return False
        return day.weekday() in self.weekdays

    def _windows(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        return _day_windows(self, day)

    def is_working(self, at: datetime) -> bool:
        day = at.astimezone(self.zone).date()
        return any(a <= at < b for a, b in self._windows(day))

    def add(self, start: datetime, seconds: float) -> datetime:
        left = timedelta(seconds=seconds)
        day = start.astimezone(self.zone).date()
        for _ in range(_MAX_DAYS):
            for a, b in self._windows(day):
                begin = max(a, start)
                if begin >= b:
                    continue
                if begin + left <= b:
                    return begin + left
                left -= b - begin
            day += timedelta(days=1)
        raise ValueError("the calendar has no working time within ten years")

    def elapsed(self, start: datetime, end: datetime) -> float:
        if end <= start:
            return 0.0
        total = 0.0
        day, last = start.astimezone(self.zone).date(), end.astimezone(self.zone).date()
        while day <= last:
            for a, b in self._windows(day):
                lo, hi = max(a, start), min(b, end)
                if hi > lo:
                    total += (hi - lo).total_seconds()
            day += timedelta(days=1)
        return total


@lru_cache(maxsize=4096)
def _day_windows(calendar: BusinessCalendar, day: date) -> tuple[tuple[datetime, datetime], ...]:
    """A day's working periods in UTC; cached, as every due time walks the same few days."""
    if not calendar.is_workday(day):
        return ()
    zone = calendar.zone
    return tuple(
        (datetime.combine(day, a, zone).astimezone(UTC), datetime.combine(day, b, zone).astimezone(UTC))
        for a, b in calendar._periods()
    )


def _span(a: time, b: time) -> float:
    return float((b.hour * 3600 + b.minute * 60 + b.second) - (a.hour * 3600 + a.minute * 60 + a.second))


def business_calendar(hours: SlaHours, sla: SlaConfig) -> BusinessCalendar:
    return BusinessCalendar(
        timezone=hours.timezone,
        weekdays=frozenset(_WEEKDAYS.index(d) for d in hours.days),
        start=hours.start,
        end=hours.end,
        lunch=(hours.lunch.start, hours.lunch.end) if hours.lunch else None,
        country=sla.holidays,
        days_off=frozenset(sla.days_off),
        workdays=frozenset(sla.workdays),
    )


def calendar_for(name: str, sla: SlaConfig) -> Calendar:
    """``24x7`` or ``default`` (the configured working hours, holidays and company days)."""
    if name == "24x7":
        return RoundTheClock()
    return business_calendar(sla.hours, sla)
