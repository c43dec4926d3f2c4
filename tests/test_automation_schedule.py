"""Schedule computation for process automations: occurrences, month ends, time zones."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest

from engine.automation import Schedule, schedule_of, to_local, to_utc, typed_value

LONDON = ZoneInfo("Europe/London")


def every(**trigger) -> Schedule:
    return schedule_of({"event": "schedule", **trigger})


def test_every_monday_at_seven():
    monday = every(every="week", weekday="monday", at="07:00")
    assert monday.describe() == "every Monday at 07:00"
    # Wednesday 12 March 2031: the latest run was Monday 10th, the next is Monday 17th
    assert monday.latest(datetime(2031, 3, 12, 12, 0)) == datetime(2031, 3, 10, 7, 0)
    assert monday.next_after(datetime(2031, 3, 12, 12, 0)) == datetime(2031, 3, 17, 7, 0)
    # on the Monday itself, before and at 07:00
    assert monday.latest(datetime(2031, 3, 10, 6, 59)) == datetime(2031, 3, 3, 7, 0)
    assert monday.latest(datetime(2031, 3, 10, 7, 0)) == datetime(2031, 3, 10, 7, 0)
    assert monday.next_after(datetime(2031, 3, 10, 7, 0)) == datetime(2031, 3, 17, 7, 0)


def test_daily_and_weekdays():
    daily = every(every="day", at="18:30")
    assert daily.describe() == "every day at 18:30"
    assert daily.latest(datetime(2031, 3, 15, 9, 0)) == datetime(2031, 3, 14, 18, 30)
    weekdays = every(every="weekday", at="08:00")
    # Sunday 16 March: the latest weekday run was Friday 14th, the next Monday 17th
    assert weekdays.latest(datetime(2031, 3, 16, 12, 0)) == datetime(2031, 3, 14, 8, 0)
    assert weekdays.next_after(datetime(2031, 3, 14, 9, 0)) == datetime(2031, 3, 17, 8, 0)


@pytest.mark.parametrize(
    ("day_of_month", "now", "latest", "upcoming"),
    [
        (1, datetime(2031, 3, 12), datetime(2031, 3, 1, 6, 0), datetime(2031, 4, 1, 6, 0)),
        (15, datetime(2031, 3, 12), datetime(2031, 2, 15, 6, 0), datetime(2031, 3, 15, 6, 0)),
        # day 31 is the last day of shorter months: 28 February, 30 April
        (31, datetime(2031, 3, 12), datetime(2031, 2, 28, 6, 0), datetime(2031, 3, 31, 6, 0)),
        (31, datetime(2031, 4, 12), datetime(2031, 3, 31, 6, 0), datetime(2031, 4, 30, 6, 0)),
        (29, datetime(2032, 3, 1), datetime(2032, 2, 29, 6, 0), datetime(2032, 3, 29, 6, 0)),  # a leap year
    ],
)
def test_monthly_on_day_n(day_of_month, now, latest, upcoming):
    monthly = every(every="month", day_of_month=day_of_month, at="06:00")
    assert monthly.latest(now) == latest
    assert monthly.next_after(now) == upcoming
    assert monthly.describe() == f"on day {day_of_month} of every month at 06:00"


def test_local_time_follows_british_summer_time():
    # 07:00 in London is 07:00 UTC in winter and 06:00 UTC in summer
    assert to_utc(datetime(2031, 3, 10, 7, 0), LONDON) == datetime(2031, 3, 10, 7, 0)
    assert to_utc(datetime(2031, 6, 9, 7, 0), LONDON) == datetime(2031, 6, 9, 6, 0)
    assert to_local(datetime(2031, 6, 9, 6, 0), LONDON) == datetime(2031, 6, 9, 7, 0)
    # the Monday after the clocks go forward (30 March 2031) runs at 07:00 local as before
    monday = every(every="week", weekday="monday", at="07:00")
    local_now = to_local(datetime(2031, 3, 31, 6, 30), LONDON)  # 07:30 BST
    assert monday.latest(local_now) == datetime(2031, 3, 31, 7, 0)


def test_only_schedules_have_a_schedule():
    assert schedule_of({"event": "created"}) is None
    assert every(every="week", weekday="friday", at="16:45") == Schedule("week", time(16, 45), weekday=4)


def test_filter_values_typed_in_a_form_get_the_fields_type():
    assert typed_value("boolean", "eq", "no") is False and typed_value("boolean", "ne", "Yes") is True
    assert typed_value("integer", "gte", "3") == 3.0
    assert typed_value("string", "in", "pending, rejected") == ["pending", "rejected"]
    assert typed_value("string", "before", "today-12w") == "today-12w"
    assert typed_value("string", "empty", "whatever") is None
    with pytest.raises(ValueError, match="not yes or no"):
        typed_value("boolean", "eq", "maybe")
    with pytest.raises(ValueError):
        typed_value("number", "lt", "lots")
