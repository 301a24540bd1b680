"""The low-speed limit of a body, apart from the bounds that read it (``bounds``): plain data, so the settings
check it without loading httpx (issue 14)."""

from __future__ import annotations

from dataclasses import dataclass

from connectors.errors import ConfigurationError

__all__ = ["LowSpeedLimit"]


@dataclass(frozen=True)
class LowSpeedLimit:
    """A body averaging fewer than ``bytes_per_s`` bytes on the wire over ``window_s`` is cut off, as curl's
    ``--speed-limit``/``--speed-time`` do: the bound for a download too long for any deadline. A body that stops
    altogether is the read timeout's."""

    bytes_per_s: float
    window_s: float

    def __post_init__(self) -> None:
        if not (self.bytes_per_s > 0 and self.window_s > 0):
            raise ConfigurationError("a low-speed limit needs a positive rate and a positive window")
