"""The quota an EHR reports on its answers (2xx included): how many calls remain and when they come back.

Read from, in this order (the first present wins):

- ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers, 08 and later): a list of policies ``"name";r=N;t=S``
  (``r`` calls remaining, ``t`` seconds to the reset); the policy with no call left and the latest reset
  decides, else the one with the fewest left. The draft-07 form ``limit=L, remaining=N, reset=S`` is read too.
  ``RateLimit-Policy`` (``"name";q=L;w=W``) only names the quota's size in messages.
- ``RateLimit-Remaining`` / ``RateLimit-Reset`` / ``RateLimit-Limit`` (older drafts).
- ``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` / ``X-RateLimit-Limit`` (the common gateway headers).

Reset rule: a non-negative number of seconds; one of at least 1 000 000 000 (a Unix time from 2001-09-09 on, far
longer than any quota window) is an epoch timestamp, the seconds left until it (0 once past); a reset further than
31 days away, a negative or non-numeric value, a remaining that is not a whole number: unusable, and the headers
are ignored (never an error). Only numbers and a sanitized policy name are kept: nothing else a header says is
logged or shown. Absent headers cost three header lookups.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

__all__ = ["EPOCH_FROM", "MAX_RESET_S", "Quota", "read_quota"]

#: A Reset value at least this large is a Unix timestamp, not delta-seconds.
EPOCH_FROM = 1_000_000_000.0
#: A reset further away than this is taken as unusable (a misread millisecond timestamp, a broken gateway).
MAX_RESET_S = 31 * 86400.0

_NUMBER = re.compile(r"\d{1,15}(?:\.\d{1,9})?")
_INTEGER = re.compile(r"\d{1,15}")
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,40}")


@dataclass(frozen=True)
class Quota:
    """What one answer said: ``remaining`` calls, ``reset_s`` seconds until they come back (None: not said),
    ``limit`` (the window's size, when said), the IETF ``policy`` name (sanitized) and the ``header`` read."""

    remaining: int
    reset_s: float | None
    limit: int | None
    policy: str | None
    header: str

    @property
    def spent(self) -> bool:
        """No call left, and the server said they come back later than now (a reset of 0, or a Unix time already
        past, says the window has already begun again: nothing to wait for)."""
        return self.remaining == 0 and self.reset_s is not None and self.reset_s > 0


def read_quota(headers: httpx.Headers, now_epoch: float) -> Quota | None:
    """The quota ``headers`` report (module docstring), None when they report none usable; never raises."""
    field = headers.get("ratelimit")
    if field is not None:
        return _structured(field, headers.get("ratelimit-policy"), now_epoch)
    for prefix in ("ratelimit", "x-ratelimit"):
        remaining = headers.get(f"{prefix}-remaining")
        if remaining is not None:
            reset, limit = headers.get(f"{prefix}-reset"), headers.get(f"{prefix}-limit")
            return _pair(remaining, reset, limit, now_epoch, _HEADER_NAMES[prefix])
    return None


_HEADER_NAMES = {"ratelimit": "RateLimit-Remaining", "x-ratelimit": "X-RateLimit-Remaining"}


def _pair(remaining: str, reset: str | None, limit: str | None, now_epoch: float, header: str) -> Quota | None:
    left = _integer(remaining)
    if left is None:
        return None
    reset_s = None if reset is None else _reset_seconds(reset, now_epoch)
    if reset is not None and reset_s is None:
        return None  # a reset that is there but unusable: the whole answer is doubtful
    return Quota(left, reset_s, None if limit is None else _integer(limit), None, header)


def _integer(text: str) -> int | None:
    text = text.strip()
    return int(text) if _INTEGER.fullmatch(text) else None


def _reset_seconds(text: str, now_epoch: float) -> float | None:
    """Seconds until the reset ``text`` names (module docstring's rule), None when unusable."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    if value >= EPOCH_FROM:
        value = max(value - now_epoch, 0.0)
    return value if value <= MAX_RESET_S else None


def _members(field: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The list members of a structured field: each one's first part (a name, or ``key=value``) and parameters."""
    for member in field.split(",")[:16]:
        parts = member.split(";")
        params: dict[str, str] = {}
        for param in parts[1:]:
            key, _, value = param.partition("=")
            params[key.strip().lower()] = value.strip()
        yield parts[0].strip(), params


def _structured(field: str, policy_field: str | None, now_epoch: float) -> Quota | None:
    """The ``RateLimit`` field: IETF list items ``"name";r=N;t=S``, or the draft-07 dictionary form."""
    items: list[Quota] = []
    dictionary: dict[str, str] = {}
    for first, params in _members(field):
        key, eq, value = first.partition("=")
        if eq and not first.startswith('"'):
            dictionary[key.strip().lower()] = value.strip()
            continue
        quota = _item(first, params, now_epoch)
        if quota is None:
            return None  # one item unreadable: the field is malformed, none of it is trusted
        items.append(quota)
    if dictionary and not items and "remaining" in dictionary:
        return _pair(dictionary["remaining"], dictionary.get("reset"), dictionary.get("limit"), now_epoch, "RateLimit")
    if not items or dictionary:
        return None
    spent = [q for q in items if q.spent]
    chosen = max(spent, key=lambda q: q.reset_s or 0.0) if spent else min(items, key=lambda q: q.remaining)
    limit = _policy_limit(policy_field, chosen.policy)
    return chosen if limit is None else Quota(chosen.remaining, chosen.reset_s, limit, chosen.policy, chosen.header)


def _item(first: str, params: dict[str, str], now_epoch: float) -> Quota | None:
    if "r" not in params:
        return None
    remaining = _integer(params["r"])
    reset_s = _reset_seconds(params["t"], now_epoch) if "t" in params else None
    if remaining is None or ("t" in params and reset_s is None):
        return None
    return Quota(remaining, reset_s, None, _policy_name(first), "RateLimit")


def _policy_name(first: str) -> str | None:
    name = first.strip('"')
    return name if _NAME.fullmatch(name) else None


def _policy_limit(policy_field: str | None, policy: str | None) -> int | None:
    """The quota size ``q`` that ``RateLimit-Policy`` gives the chosen policy, when it names it."""
    if policy_field is None or policy is None:
        return None
    for first, params in _members(policy_field):
        if _policy_name(first) == policy and "q" in params:
            return _integer(params["q"])
    return None
