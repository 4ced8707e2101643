"""EventBridge schedule expressions, evaluated on this machine: when a schedule fires next.

`rate(N minute|minutes|hour|hours|day|days)` fires every N units from the moment it was
set up (the local stack's start). `cron(minutes hours day-of-month month day-of-week year)`
is evaluated in UTC, as EventBridge does: each field takes `*`, a value, a list (`,`), a
range (`-`) and a step (`/`: `*/5`, `0/15`, `8-18/2`); months may be named JAN-DEC and days
of the week SUN-SAT (1 = Sunday); one of day-of-month and day-of-week must be `?`.
EventBridge's `L`, `W` and `#` are not evaluated here: such a schedule is refused with a
message that says so (the local stack then warms at start only).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Protocol

RATE = re.compile(r"^rate\((?P<value>\d+) (?P<unit>minutes?|hours?|days?)\)$")
CRON = re.compile(r"^cron\((?P<fields>[^()]*)\)$")
_UNITS = {
    "minute": dt.timedelta(minutes=1),
    "hour": dt.timedelta(hours=1),
    "day": dt.timedelta(days=1),
}
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_WEEKDAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
_YEARS = (1970, 2199)
# Long enough for the rarest evaluable schedule (29 February, up to 8 years apart).
_HORIZON_DAYS = 366 * 9


class UnsupportedSchedule(ValueError):
    """The expression cannot be evaluated here; the message says what and why."""


class Schedule(Protocol):
    @property
    def expression(self) -> str: ...

    def next_after(self, moment: dt.datetime, *, since: dt.datetime) -> dt.datetime | None:
        """The first firing strictly after `moment` (aware, UTC), for a schedule set up at
        `since`; None if it never fires again."""
        ...


@dataclass(frozen=True)
class Rate:
    expression: str
    period: dt.timedelta

    def next_after(self, moment: dt.datetime, *, since: dt.datetime) -> dt.datetime | None:
        periods = max((moment - since) // self.period + 1, 1)
        return since + periods * self.period


@dataclass(frozen=True)
class Cron:
    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: frozenset[int] | None
    """None: `?` or `*`, any day of the month."""
    months: frozenset[int]
    days_of_week: frozenset[int] | None
    """EventBridge's numbering (1 = Sunday ... 7 = Saturday); None: any day of the week."""
    years: frozenset[int] | None

    def next_after(self, moment: dt.datetime, *, since: dt.datetime) -> dt.datetime | None:
        first = moment.astimezone(dt.UTC).replace(second=0, microsecond=0)
        first += dt.timedelta(minutes=1)
        day = first.date()
        for _ in range(_HORIZON_DAYS):
            if self.years is not None and day.year not in self.years:
                later = [year for year in self.years if year > day.year]
                if not later:
                    return None
                day = dt.date(min(later), 1, 1)
                continue
            if self._fires_on(day):
                earliest = first.hour * 60 + first.minute if day == first.date() else 0
                for hour in self.hours:
                    for minute in self.minutes:
                        if hour * 60 + minute >= earliest:
                            return dt.datetime.combine(day, dt.time(hour, minute), dt.UTC)
            day += dt.timedelta(days=1)
        return None

    def _fires_on(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        if self.days_of_month is not None and day.day not in self.days_of_month:
            return False
        # date.weekday(): Monday 0 ... Sunday 6; EventBridge: Sunday 1 ... Saturday 7.
        weekday = (day.weekday() + 1) % 7 + 1
        return self.days_of_week is None or weekday in self.days_of_week


def parse_schedule(expression: str) -> Rate | Cron:
    """The schedule `expression` describes; UnsupportedSchedule when it cannot be evaluated."""
    text = expression.strip()
    if rate := RATE.match(text):
        value = int(rate["value"])
        if value < 1:
            raise UnsupportedSchedule(f"{expression}: the rate must be at least 1")
        return Rate(expression, value * _UNITS[rate["unit"].rstrip("s")])
    cron = CRON.match(text)
    if cron is None:
        raise UnsupportedSchedule(f"{expression}: not rate(...) or cron(...)")
    fields = cron["fields"].split()
    if len(fields) != 6:
        raise UnsupportedSchedule(
            f"{expression}: cron takes 6 fields (minutes hours day-of-month month "
            f"day-of-week year), got {len(fields)}"
        )
    minutes, hours, day_of_month, month, day_of_week, year = fields
    if (day_of_month == "?") == (day_of_week == "?"):
        raise UnsupportedSchedule(
            f"{expression}: exactly one of day-of-month and day-of-week must be ?"
        )
    try:
        return Cron(
            expression,
            minutes=tuple(sorted(_field(minutes, "minutes", 0, 59))),
            hours=tuple(sorted(_field(hours, "hours", 0, 23))),
            days_of_month=_any_day(day_of_month, "day-of-month", 1, 31),
            months=frozenset(_field(month, "month", 1, 12, _MONTHS)),
            days_of_week=_any_day(day_of_week, "day-of-week", 1, 7, _WEEKDAYS),
            years=None if year == "*" else frozenset(_field(year, "year", *_YEARS)),
        )
    except UnsupportedSchedule as error:
        raise UnsupportedSchedule(f"{expression}: {error}") from None


def _any_day(
    text: str, name: str, low: int, high: int, names: list[str] | None = None
) -> frozenset[int] | None:
    if text in ("?", "*"):
        return None
    return frozenset(_field(text, name, low, high, names))


def _field(text: str, name: str, low: int, high: int, names: list[str] | None = None) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        if any(mark in item.upper() for mark in ("L", "W", "#")) and not _is_name(item, names):
            raise UnsupportedSchedule(f"{name} {item!r}: L, W and # are not evaluated locally")
        span, _, step_text = item.partition("/")
        step = _number(step_text, name, 1, high) if step_text else 1
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start, _, end = span.partition("-")
            first, last = _value(start, name, low, high, names), _value(end, name, low, high, names)
            if first > last:
                raise UnsupportedSchedule(f"{name} {item!r}: a range must not wrap around")
        else:
            first = _value(span, name, low, high, names)
            # EventBridge's `0/15`: from the value on, every step.
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return values


def _is_name(item: str, names: list[str] | None) -> bool:
    """Whether every part of `item` is a number or one of the field's names (WED has a W)."""
    parts = re.split(r"[-/]", item.upper())
    return names is not None and all(part.isdigit() or part in names for part in parts)


def _value(text: str, name: str, low: int, high: int, names: list[str] | None) -> int:
    if names is not None and text.upper() in names:
        return names.index(text.upper()) + low
    return _number(text, name, low, high)


def _number(text: str, name: str, low: int, high: int) -> int:
    if not text.isdigit():
        raise UnsupportedSchedule(f"{name}: {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise UnsupportedSchedule(f"{name}: {value} is outside {low}-{high}")
    return value
