"""EventBridge schedule expressions evaluated locally: rate(...) from the stack's start,
cron(...) in UTC; what cannot be evaluated is refused with a reason, never guessed."""

from __future__ import annotations

import datetime as dt

import pytest

from stratoserve.local.schedules import Cron, Rate, UnsupportedSchedule, parse_schedule

# A Wednesday.
START = dt.datetime(2026, 3, 4, 10, 17, 30, tzinfo=dt.UTC)


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def _fires(expression: str, after: dt.datetime, count: int = 3) -> list[str]:
    schedule = parse_schedule(expression)
    fired: list[str] = []
    moment = after
    for _ in range(count):
        fire = schedule.next_after(moment, since=after)
        assert fire is not None
        fired.append(fire.strftime("%a %Y-%m-%d %H:%M"))
        moment = fire
    return fired


@pytest.mark.parametrize(
    ("expression", "period"),
    [
        ("rate(1 minute)", dt.timedelta(minutes=1)),
        ("rate(5 minutes)", dt.timedelta(minutes=5)),
        ("rate(2 hours)", dt.timedelta(hours=2)),
        ("rate(1 day)", dt.timedelta(days=1)),
    ],
)
def test_a_rate_fires_every_period_from_its_start(expression: str, period: dt.timedelta) -> None:
    schedule = parse_schedule(expression)

    assert schedule == Rate(expression, period)
    assert schedule.next_after(START, since=START) == START + period
    assert schedule.next_after(START + period, since=START) == START + 2 * period
    # Woken late (a laptop asleep), it resumes on the grid, without a burst of firings.
    late = START + 3 * period + dt.timedelta(seconds=1)
    assert schedule.next_after(late, since=START) == START + 4 * period


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # every 15 minutes, from the next quarter hour
        (
            "cron(0/15 * * * ? *)",
            START,
            ["Wed 2026-03-04 10:30", "Wed 2026-03-04 10:45", "Wed 2026-03-04 11:00"],
        ),
        (
            "cron(*/20 * * * ? *)",
            START,
            ["Wed 2026-03-04 10:20", "Wed 2026-03-04 10:40", "Wed 2026-03-04 11:00"],
        ),
        # the shipped scaling schedule: 07:00 on weekdays, days by name
        (
            "cron(0 7 ? * MON-FRI *)",
            START,
            ["Thu 2026-03-05 07:00", "Fri 2026-03-06 07:00", "Mon 2026-03-09 07:00"],
        ),
        # days of the week by number: 1 is Sunday, 7 Saturday
        (
            "cron(30 9 ? * 1,7 *)",
            START,
            ["Sat 2026-03-07 09:30", "Sun 2026-03-08 09:30", "Sat 2026-03-14 09:30"],
        ),
        # a step within a range; a list
        (
            "cron(0 8-18/4 * * ? *)",
            START,
            ["Wed 2026-03-04 12:00", "Wed 2026-03-04 16:00", "Thu 2026-03-05 08:00"],
        ),
        (
            "cron(5 1,13 * * ? *)",
            START,
            ["Wed 2026-03-04 13:05", "Thu 2026-03-05 01:05", "Thu 2026-03-05 13:05"],
        ),
        # day of the month, months by name, leap days, the year field
        (
            "cron(0 0 1 JAN,JUL ? *)",
            START,
            ["Wed 2026-07-01 00:00", "Fri 2027-01-01 00:00", "Thu 2027-07-01 00:00"],
        ),
        (
            "cron(0 12 29 2 ? *)",
            START,
            ["Tue 2028-02-29 12:00", "Sun 2032-02-29 12:00", "Fri 2036-02-29 12:00"],
        ),
        (
            "cron(0 6 15 * ? 2027-2028)",
            START,
            ["Fri 2027-01-15 06:00", "Mon 2027-02-15 06:00", "Mon 2027-03-15 06:00"],
        ),
        # a firing at the very moment is not "after" it
        (
            "cron(17 10 * * ? *)",
            _at("2026-03-04T10:17:00"),
            ["Thu 2026-03-05 10:17", "Fri 2026-03-06 10:17", "Sat 2026-03-07 10:17"],
        ),
    ],
)
def test_cron_next_firings_in_utc(expression: str, after: dt.datetime, expected: list[str]) -> None:
    assert _fires(expression, after) == expected


def test_cron_is_evaluated_in_utc_whatever_the_moments_zone() -> None:
    schedule = parse_schedule("cron(0 7 ? * MON-FRI *)")
    paris = dt.timezone(dt.timedelta(hours=1))

    # 07:30 in Paris is 06:30 UTC: today's 07:00 UTC is still ahead.
    fire = schedule.next_after(dt.datetime(2026, 3, 4, 7, 30, tzinfo=paris), since=START)

    assert fire == _at("2026-03-04T07:00")


def test_a_cron_that_never_fires_again_says_so() -> None:
    schedule = parse_schedule("cron(0 0 1 1 ? 2020)")

    assert isinstance(schedule, Cron)
    assert schedule.next_after(START, since=START) is None


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("cron(0 12 L * ? *)", "L, W and # are not evaluated locally"),
        ("cron(0 12 15W * ? *)", "L, W and # are not evaluated locally"),
        ("cron(0 12 ? * 6#3 *)", "L, W and # are not evaluated locally"),
        ("cron(0 12 ? * 5L *)", "L, W and # are not evaluated locally"),
        ("cron(0 12 * * * *)", "exactly one of day-of-month and day-of-week must be ?"),
        ("cron(0 12 ? * ? *)", "exactly one of day-of-month and day-of-week must be ?"),
        ("cron(0 12 * * ?)", "cron takes 6 fields"),
        ("cron(60 12 * * ? *)", "minutes: 60 is outside 0-59"),
        ("cron(0 12 ? * FRI-MON *)", "a range must not wrap around"),
        ("cron(0 12 ? * FUN *)", "day-of-week: 'FUN' is not a number"),
        ("cron(*/0 12 * * ? *)", "minutes: 0 is outside 1-59"),
        ("rate(5 weeks)", "not rate(...) or cron(...)"),
        ("at(2026-03-04T10:00:00)", "not rate(...) or cron(...)"),
    ],
)
def test_what_cannot_be_evaluated_is_refused_with_a_reason(expression: str, reason: str) -> None:
    with pytest.raises(UnsupportedSchedule) as refused:
        parse_schedule(expression)

    assert str(refused.value).startswith(expression)
    assert reason in str(refused.value)


def test_names_are_not_mistaken_for_l_w_or_hash() -> None:
    # JUL has an L, WED and TUE... a W: names, not EventBridge's special characters.
    assert _fires("cron(0 9 ? JUL WED *)", START, 2) == [
        "Wed 2026-07-01 09:00",
        "Wed 2026-07-08 09:00",
    ]
