"""Business time on the Chinese calendar: lunch break, weekends, National Day and its make-up working days."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.rules_config import LunchBreak, SlaConfig, SlaHours
from normalizer.rules.calendar import BusinessCalendar, RoundTheClock, calendar_for

SH = ZoneInfo("Asia/Shanghai")
LUNCH = SlaConfig(hours=SlaHours(lunch=LunchBreak(start=time(12, 0), end=time(13, 0))))


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=SH)  # type: ignore[misc]


def cal(sla: SlaConfig = LUNCH) -> BusinessCalendar:
    made = calendar_for("default", sla)
    assert isinstance(made, BusinessCalendar)
    return made


def test_a_working_day_is_working_hours_less_lunch() -> None:
    assert cal().day_seconds == 8 * 3600
    assert cal(SlaConfig()).day_seconds == 9 * 3600


def test_the_clock_stops_over_the_lunch_break() -> None:
    # Tuesday 2026-12-01, 11:30 + 1 h of work: 30 min before lunch, 30 min after it.
    assert cal().add(at(2026, 12, 1, 11, 30), 3600) == at(2026, 12, 1, 13, 30)
    assert cal().elapsed(at(2026, 12, 1, 11, 30), at(2026, 12, 1, 13, 30)) == 3600
    assert not cal().is_working(at(2026, 12, 1, 12, 15))


def test_a_message_at_lunch_starts_its_clock_after_lunch() -> None:
    assert cal().add(at(2026, 12, 1, 12, 10), 1800) == at(2026, 12, 1, 13, 30)


def test_friday_evening_runs_on_into_monday() -> None:
    # Friday 2026-12-04 17:00 + 2 h: 1 h on Friday, the weekend is off, 1 h on Monday.
    assert cal().add(at(2026, 12, 4, 17, 0), 2 * 3600) == at(2026, 12, 7, 10, 0)
    # Written on Saturday: the clock starts Monday 09:00.
    assert cal().add(at(2026, 12, 5, 10, 0), 1800) == at(2026, 12, 7, 9, 30)


def test_national_day_is_off_and_its_make_up_saturday_is_worked() -> None:
    # 2025: 1-8 October off; Sunday 28 September and Saturday 11 October are working days (调休).
    c = cal()
    assert not c.is_workday(date(2025, 10, 3))
    assert not c.is_workday(date(2025, 10, 8))  # a Wednesday, off in lieu
    assert c.is_workday(date(2025, 9, 28))  # a Sunday, worked
    assert c.is_workday(date(2025, 10, 11))  # a Saturday, worked
    # Tuesday 30 September 17:00 + 2 h: 1 h that day, then nothing until Thursday 9 October.
    assert c.add(at(2025, 9, 30, 17, 0), 2 * 3600) == at(2025, 10, 9, 10, 0)
    # Friday 10 October 17:30 + 1 h: 30 min on Friday, 30 min on the make-up Saturday.
    assert c.add(at(2025, 10, 10, 17, 30), 3600) == at(2025, 10, 11, 9, 30)
    # A day's target ("1d") from the eve of the holiday: the same hour on the next working day.
    assert c.add(at(2025, 9, 30, 14, 0), c.day_seconds) == at(2025, 10, 9, 14, 0)


def test_national_day_2026_and_its_make_up_days() -> None:
    c = cal()
    assert [c.is_workday(date(2026, 10, d)) for d in range(1, 8)] == [False] * 7
    assert c.is_workday(date(2026, 9, 20)) and c.is_workday(date(2026, 10, 10))  # Sunday and Saturday worked
    assert c.add(at(2026, 9, 30, 18, 0), 3600) == at(2026, 10, 8, 10, 0)


def test_company_days_off_and_extra_workdays_override_the_public_calendar() -> None:
    sla = SlaConfig(days_off=(date(2026, 12, 24),), workdays=(date(2026, 12, 26),))
    c = cal(sla)
    assert not c.is_workday(date(2026, 12, 24)) and c.is_workday(date(2026, 12, 26))
    assert c.add(at(2026, 12, 23, 17, 0), 2 * 3600) == at(2026, 12, 25, 10, 0)


def test_without_a_country_only_weekdays_count() -> None:
    c = cal(SlaConfig(holidays=""))
    assert c.is_workday(date(2025, 10, 1)) and not c.is_workday(date(2025, 10, 11))


def test_round_the_clock_counts_every_second() -> None:
    start = at(2025, 10, 1, 23, 0)
    assert RoundTheClock().add(start, 7200) == start + timedelta(hours=2)
    assert calendar_for("24x7", SlaConfig()).elapsed(start, start + timedelta(hours=5)) == 5 * 3600


@pytest.mark.parametrize("hours", [1, 5, 9, 30, 100])
def test_elapsed_undoes_add(hours: int) -> None:
    start = at(2025, 9, 26, 16, 45)
    assert cal().elapsed(start, cal().add(start, hours * 3600)) == hours * 3600
