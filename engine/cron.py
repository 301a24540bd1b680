"""Whether a cron expression (minute hour day month weekday, or ``@daily`` and the like) is one a schedule can run on.

The settings check a schedule's cron when they load, without Dagster (``engine`` does not import it): Dagster
refuses a value out of range or February 30/31 only when the code location builds its schedules, and accepts a
day no month it names has (``0 0 31 4 *``), a schedule that never fires and says nothing. Everything else Dagster's
cron takes is taken: month and weekday names (``JAN``, ``MON-FRI``), ``@daily``, ``?``, ``L`` (the last day of the
month) and a weekday's ``#n`` or ``L`` (its nth or last in the month, with no day of the month named).
"""

from __future__ import annotations

import re

__all__ = ["cron_problem"]

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 7))
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_NAMES = {
    "month": {name: number for number, name in enumerate(_MONTHS, start=1)},
    "weekday": {name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))},
}
_ITEM = re.compile(r"(?:\*|(\w+)(?:-(\w+))?)(?:/(\d+))?")
# A weekday's nth in the month (``1#2``: the second Monday) or its last (``L5``: the last Friday), alone in its field.
_NTH = re.compile(r"(\w+)#0*([1-5])|[Ll](\d+)")
# The longest each month gets (February 29 in a leap year: a schedule on it fires every four years).
_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
_SHORTEST_MONTH = 28  # ``L``, the last day of the month, is a day every month has


class _CronError(ValueError):
    pass


def _number(part: str, item: str, name: str, *, end: bool) -> int:
    """A field's number, month or weekday name, or (the day's, ending a range) ``L``: the 31st, as croniter."""
    if part.isascii() and part.isdigit():
        return int(part)
    word = part.lower()
    if word in _NAMES.get(name, {}):
        return _NAMES[name][word]
    if name == "day" and word == "l" and end:
        return 31
    raise _CronError(f"the {name} field's {item!r} is not a number, range, step or *")


def _values(text: str, name: str, low: int, high: int) -> set[int]:
    """The values one field names; a reversed range wraps around (``22-2`` hours: 22, 23, 0, 1, 2), as croniter."""
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if name == "day" and item in ("L", "l"):
            values.add(_SHORTEST_MONTH)
            continue
        if match is None:
            raise _CronError(f"the {name} field's {item!r} is not a number, range, step or *")
        start, end, step = match.groups()
        if step is not None and int(step) == 0:
            raise _CronError(f"the {name} field's {item!r} has a step of 0")
        first = low if start is None else _number(start, item, name, end=False)
        if start is None or (end is None and step is not None):
            last = high
        else:
            last = first if end is None else _number(end, item, name, end=True)
        for number in {first, last}:
            if not low <= number <= high:
                raise _CronError(f"the {name} field's {number} is outside {low}-{high}")
        span = list(range(first, last + 1)) if first <= last else [*range(first, high + 1), *range(low, last + 1)]
        values.update(span[:: int(step or 1)])
    return values


def _nth_weekday(fields: list[str]) -> str | None:
    """What is wrong with a weekday's ``#n`` or ``L`` (``fields[4]``), or None; turns it into ``*``: with no day of
    the month named, the month set alone decides whether it fires (every weekday's 5th comes within 28 years)."""
    match = _NTH.fullmatch(fields[4])
    if match is None:
        return None
    if fields[2] not in ("*", "?"):  # Dagster's cron then fires on some such days, and on others never
        return f"the weekday field's {fields[4]!r} needs * or ? as the day (a day of the month is named)"
    day = match.group(1) or match.group(3)
    _values(day, "weekday", 0, 7)
    fields[4] = "*"
    return None


def cron_problem(cron: str) -> str | None:
    """What keeps ``cron`` (five fields, already split on whitespace, or an alias such as ``@daily``) from firing,
    or None when it fires.

    A day of the month names a day some month it names has; with a weekday named as well, the day still has to
    exist (Dagster refuses ``0 0 31 2 1`` although cron would fire on February's Mondays)."""
    if cron.startswith("@"):
        if cron.lower() not in _ALIASES:
            return f"{cron!r} is not one of {', '.join(_ALIASES)}"
        cron = _ALIASES[cron.lower()]
    fields = cron.split()
    if len(fields) != len(_FIELDS):
        return f"it has {len(fields)} fields, not 5"
    weekday_named = fields[4] not in ("*", "?")
    fields = [("*" if text == "?" and index in (2, 4) else text) for index, text in enumerate(fields)]
    try:
        if problem := _nth_weekday(fields):
            return problem
        sets = [_values(text, name, low, high) for text, (name, low, high) in zip(fields, _FIELDS, strict=True)]
    except _CronError as exc:
        return str(exc)
    days, months = sets[2], sets[3]
    if not any(day <= _MONTH_DAYS[month] for day in days for month in months):
        named = ",".join(str(m) for m in sorted(months))
        never = "" if weekday_named else "it never fires: "  # with a weekday cron would, Dagster refuses it
        return f"{never}no month it names ({named}) has day {min(days)}"
    return None
