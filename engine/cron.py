"""Whether a five-field cron expression (minute hour day month weekday) is one a schedule can run on.

The settings check a schedule's cron when they load, without Dagster (``engine`` does not import it): Dagster
refuses a value out of range or February 30/31 only when the code location builds its schedules, and accepts a
day no month it names has (``0 0 31 4 *``), a schedule that never fires and says nothing.
"""

from __future__ import annotations

import re

__all__ = ["cron_problem"]

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 7))
_ITEM = re.compile(r"(?:\*|(\d+)(?:-(\d+))?)(?:/(\d+))?")
# The longest each month gets (February 29 in a leap year: a schedule on it fires every four years).
_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


class _CronError(ValueError):
    pass


def _values(text: str, name: str, low: int, high: int) -> set[int]:
    """The values one field names; a reversed range wraps around (``22-2`` hours: 22, 23, 0, 1, 2), as croniter."""
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise _CronError(f"the {name} field's {item!r} is not a number, range, step or *")
        start, end, step = match.groups()
        if step is not None and int(step) == 0:
            raise _CronError(f"the {name} field's {item!r} has a step of 0")
        first = low if start is None else int(start)
        last = high if start is None or (end is None and step is not None) else int(end or start)
        for number in {first, last}:
            if not low <= number <= high:
                raise _CronError(f"the {name} field's {number} is outside {low}-{high}")
        span = list(range(first, last + 1)) if first <= last else [*range(first, high + 1), *range(low, last + 1)]
        values.update(span[:: int(step or 1)])
    return values


def cron_problem(cron: str) -> str | None:
    """What keeps ``cron`` (five fields, already split on whitespace) from firing, or None when it fires.

    A day of the month names a day some month it names has; with a weekday named as well, the day still has to
    exist (Dagster refuses ``0 0 31 2 1`` although cron would fire on February's Mondays)."""
    fields = cron.split()
    if len(fields) != len(_FIELDS):
        return f"it has {len(fields)} fields, not 5"
    try:
        sets = [_values(text, name, low, high) for text, (name, low, high) in zip(fields, _FIELDS, strict=True)]
    except _CronError as exc:
        return str(exc)
    days, months = sets[2], sets[3]
    if not any(day <= _MONTH_DAYS[month] for day in days for month in months):
        named = ",".join(str(m) for m in sorted(months))
        never = "it never fires: " if fields[4] == "*" else ""  # with a weekday cron would, Dagster refuses it
        return f"{never}no month it names ({named}) has day {min(days)}"
    return None
