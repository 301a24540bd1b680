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
from dataclasses import dataclass

from connectors.errors import ConfigurationError, StepBudgetExceededError
from connectors.http.ratelimit import RateLimiter, rate_budget, spend_rate_budget

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_REQUEST_DEADLINE_S",
    "DEFAULT_STEP_BUDGET_S",
    "UNREACHABLE_MEMO_S",
    "check_step_budget",
    "env_number",
    "forget_unreachable",
    "mark_unreachable",
    "rate_budget",
    "shared_limiter",
    "spend_rate_budget",
    "step_budget",
    "step_deadline",
    "unreachable_reason",
]

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_REQUEST_DEADLINE_S = 120.0
DEFAULT_STEP_BUDGET_S = 3600.0
#: How long a refused connection / DNS failure is remembered for an origin (the rest of the run fails fast).
UNREACHABLE_MEMO_S = 60.0

_STEP: ContextVar[_Step | None] = ContextVar("ehrsync_step_budget", default=None)


@dataclass(frozen=True)
class _Step:
    name: str
    budget_s: float
    ends_at: float
    clock: Callable[[], float]


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


_limiters_lock = threading.Lock()
_limiters: dict[tuple[str, int, float], RateLimiter] = {}


def shared_limiter(key: str, capacity: int, per_seconds: float) -> RateLimiter:
    """The process's one limiter for ``key`` (e.g. a FHIR base): every step and client of a run spends from it,
    so a budget such as 240 calls/min is not granted afresh to each sync step."""
    with _limiters_lock:
        return _limiters.setdefault((key, capacity, per_seconds), RateLimiter(capacity, per_seconds))


@contextmanager
def step_budget(name: str, seconds: float | None, *, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Every request inside this block must finish before ``seconds`` from now (None: no step budget)."""
    if seconds is None:
        yield
        return
    token = _STEP.set(_Step(name, seconds, clock() + seconds, clock))
    try:
        yield
    finally:
        _STEP.reset(token)


def step_deadline() -> tuple[float, float, str] | None:
    """``(ends_at, budget_s, step name)`` of the active step budget, on the ``time.monotonic`` clock."""
    step = _STEP.get()
    return None if step is None else (step.ends_at, step.budget_s, step.name)


def check_step_budget() -> None:
    """Raise StepBudgetExceededError when the active step's budget is spent."""
    step = _STEP.get()
    if step is not None and step.clock() >= step.ends_at:
        raise StepBudgetExceededError(
            f"{step.name} exceeded its {step.budget_s:g} s budget (EHRSYNC_STEP_BUDGET_S); the stored mark is kept"
        )


_unreachable_lock = threading.Lock()
_unreachable: dict[str, tuple[float, str]] = {}


def mark_unreachable(origin: str, reason: str) -> None:
    """Remember that ``origin`` refused or did not resolve, so the rest of the run fails fast."""
    with _unreachable_lock:
        _unreachable[origin] = (time.monotonic() + UNREACHABLE_MEMO_S, reason)


def forget_unreachable(origin: str) -> None:
    with _unreachable_lock:
        _unreachable.pop(origin, None)


def unreachable_reason(origin: str) -> str | None:
    """Why ``origin`` was found unreachable within the last ``UNREACHABLE_MEMO_S`` seconds, else None."""
    with _unreachable_lock:
        entry = _unreachable.get(origin)
        if entry is None:
            return None
        if time.monotonic() >= entry[0]:
            del _unreachable[origin]
            return None
        return entry[1]
