"""What every call to an EHR spends from: the vendor's rate budget (:mod:`connectors.http.ratelimit`, shared
per process here), a sync step's time budget, and the memo of hosts found unreachable.

The budgets are context variables so code that does not know about them (a token refresh inside a FHIR
request, a vault minting a backend token) still spends from the budget of the request or step it runs in.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace

from connectors.errors import ConfigurationError, StepBudgetExceededError
from connectors.http.ratelimit import RateLimiter, rate_budget, spend_rate_budget
from connectors.recent import RecentCache

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_REQUEST_DEADLINE_S",
    "DEFAULT_STEP_BUDGET_S",
    "MARK_KEPT",
    "RESPONSE_BYTES_ENV",
    "RESPONSE_BYTES_WHAT",
    "STEP_SETTING",
    "UNREACHABLE_MEMO_S",
    "check_step_budget",
    "check_step_wait",
    "env_number",
    "env_whole_number",
    "forget_unreachable",
    "mark_unreachable",
    "rate_budget",
    "shared_limiter",
    "spend_rate_budget",
    "step_budget",
    "step_budget_exceeded",
    "step_deadline",
    "unreachable_held",
    "unreachable_reason",
]

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
RESPONSE_BYTES_ENV = "EHRSYNC_MAX_RESPONSE_BYTES"
RESPONSE_BYTES_WHAT = "bytes of one answer read from an EHR"
DEFAULT_REQUEST_DEADLINE_S = 120.0
DEFAULT_STEP_BUDGET_S = 3600.0
#: How long a refused connection / DNS failure is remembered for an origin (the rest of the run fails fast).
UNREACHABLE_MEMO_S = 60.0
#: What a sync step running out of its budget leaves (its message ends with it): the type's mark is where it was.
MARK_KEPT = "the stored mark is kept"
#: The setting that bounds a sync step (its budget error names it, so an operator knows what to raise).
STEP_SETTING = "EHRSYNC_STEP_BUDGET_S"

_STEP: ContextVar[_Step | None] = ContextVar("ehrsync_step_budget", default=None)


@dataclass(frozen=True)
class _Step:
    name: str
    budget_s: float
    ends_at: float
    clock: Callable[[], float]
    kept: str = MARK_KEPT
    setting: str = STEP_SETTING


def env_number(name: str, default: float, *, minimum: float = 0.0, env: Mapping[str, str] | None = None) -> float:
    """A positive number from the environment (``env``, else ``os.environ``), or ``default``; a bad value is a
    ConfigurationError naming it. The one rule: the engine reads with it and the settings check at start with it."""
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw[:40]!r}") from None
    if not value > minimum or value != value or value == float("inf"):
        raise ConfigurationError(f"{name} must be a finite number greater than {minimum:g}, got {raw[:40]!r}")
    return value


def env_whole_number(name: str, default: int, *, minimum: int, what: str, env: Mapping[str, str] | None = None) -> int:
    """A whole number (digits only: no sign, fraction or exponent) of at least ``minimum`` from the environment
    (``env``, else ``os.environ``), or ``default`` when unset or empty: a byte count is never ``0.5`` or ``1e9``,
    read as a float and cut off. A bad value is a ConfigurationError naming it and ``what`` it counts."""
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < minimum:
        raise ConfigurationError(f"{name}={raw[:40]!r} is not a whole number of at least {minimum} ({what})")
    return int(raw)


_limiters_lock = threading.Lock()
_limiters: dict[tuple[str, int, float], RateLimiter] = {}


def shared_limiter(key: str, capacity: int, per_seconds: float) -> RateLimiter:
    """The process's one limiter for ``key`` (e.g. a FHIR base): every step and client of a run spends from it,
    so a budget such as 240 calls/min is not granted afresh to each sync step."""
    with _limiters_lock:
        return _limiters.setdefault((key, capacity, per_seconds), RateLimiter(capacity, per_seconds))


@contextmanager
def step_budget(
    name: str,
    seconds: float | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    kept: str = MARK_KEPT,
    setting: str = STEP_SETTING,
) -> Iterator[None]:
    """Every request inside this block must finish before ``seconds`` from now (None: no budget of its own).

    ``kept`` says what running out leaves behind (the error's message ends with it: a sync step's mark, a
    reconcile's tombstones); ``setting`` names what sets ``seconds`` (the message names it: a write-back wait is
    no sync step's budget). Inside another step's budget, the block is a phase of that step: it ends no later
    than that step does, named by its own ``name`` and ``kept``, so a step of several phases spends one budget (the
    outer step's ``setting`` then bounds it, and is the one named)."""
    outer = _STEP.get()
    step = None if seconds is None else _Step(name, seconds, clock() + seconds, clock, kept, setting)
    if outer is not None and (step is None or outer.ends_at - outer.clock() <= step.budget_s):
        step = replace(outer, name=name, kept=kept)
    if step is None:
        yield
        return
    token = _STEP.set(step)
    try:
        yield
    finally:
        _STEP.reset(token)


def step_deadline() -> tuple[float, float, str, str] | None:
    """``(ends_at, budget_s, step name, setting)`` of the active step budget, on the ``time.monotonic`` clock
    (``setting``: what sets the budget, for an error's message: a write-back wait is no sync step's budget)."""
    step = _STEP.get()
    return None if step is None else (step.ends_at, step.budget_s, step.name, step.setting)


def step_budget_exceeded(detail: str = "", *, would: bool = False) -> StepBudgetExceededError:
    """The active step's budget error: it ran out (``would``: a wait would end past it), ``detail`` saying how,
    and what running out leaves (the step's ``kept``)."""
    step = _STEP.get()
    if step is None:
        step = _Step("a step", 0.0, 0.0, time.monotonic)
    verb = "would exceed" if would else "exceeded"
    return StepBudgetExceededError(
        f"{step.name} {verb} its {step.budget_s:g} s budget ({step.setting}){detail}; {step.kept}"
    )


def check_step_budget() -> None:
    """Raise StepBudgetExceededError when the active step's budget is spent."""
    step = _STEP.get()
    if step is not None and step.clock() >= step.ends_at:
        raise step_budget_exceeded()


def check_step_wait(seconds: float, what: str, *, asked: bool) -> None:
    """Raise the active step's budget error when a wait of ``seconds`` before ``what`` (a retry of a request, a
    token grant) would end past it (``asked``: the server's Retry-After asked for it): sleeping first would only
    overshoot the budget before the same error. Every retry wait of a step follows this one rule."""
    step = _STEP.get()
    if step is None:
        return
    left = step.ends_at - step.clock()
    if seconds > left:
        why = "the server asked to wait" if asked else "the next attempt was due after a wait of"
        raise step_budget_exceeded(
            f": {what}: {why} {round(seconds, 1):g} s and only {max(left, 0.0):.1f} s were left", would=True
        )


#: The most origins the memo holds: a Bulk manifest may name files on thousands of hosts (no token: any public
#: https host), each refusing; past it the least recently marked or read is forgotten (its next request is tried
#: again, twice, before failing). Expired entries are dropped whenever one is marked.
UNREACHABLE_MEMO_MAX = 1024
_unreachable: RecentCache[str] = RecentCache(UNREACHABLE_MEMO_S, UNREACHABLE_MEMO_MAX, time.monotonic)


def mark_unreachable(origin: str, reason: str) -> None:
    """Remember that ``origin`` refused or did not resolve, so the rest of the run fails fast."""
    _unreachable.put(origin, reason)


def forget_unreachable(origin: str) -> None:
    _unreachable.pop(origin)


def unreachable_reason(origin: str) -> str | None:
    """Why ``origin`` was found unreachable within the last ``UNREACHABLE_MEMO_S`` seconds, else None."""
    return _unreachable.get(origin)


def unreachable_held() -> int:
    """How many origins the memo holds now (at most :data:`UNREACHABLE_MEMO_MAX`)."""
    return len(_unreachable)
