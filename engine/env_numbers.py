"""Whole numbers an operator sets in the environment, checked once at start with one line naming the variable."""

from __future__ import annotations

from collections.abc import Mapping

from engine.errors import PipelineConfigurationError

__all__ = ["whole_number"]


def whole_number(env: Mapping[str, str], name: str, default: int, low: int, high: int | None, what: str) -> int:
    """``env[name]`` (``default`` when unset) as a whole number from ``low`` to ``high`` (None: no upper bound);
    anything else (a sign, a fraction, a unit, an exponent) stops the start naming the variable and ``what``."""
    raw = env.get(name, str(default)).strip()
    if not (raw.isascii() and raw.isdigit()) or int(raw) < low or (high is not None and int(raw) > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise PipelineConfigurationError(f"{name}={raw[:40]!r} is not a whole number {span} ({what})")
    return int(raw)
