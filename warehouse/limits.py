"""The size limit of one resource, and what a resource near it costs the merge.

A server decides how large its resources are: a DocumentReference with an inline attachment can be tens of
megabytes. Every resource up to ``EHRSYNC_MAX_RESOURCE_BYTES`` (default 64 MiB) is stored; a larger one is
quarantined with the reason (and its first ``QUARANTINE_PREFIX_BYTES``), never read into memory whole, and the
rest of its file lands as usual. The ceiling is 256 MiB: PostgreSQL's JSONB stores at most 255 MiB per value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from warehouse.errors import InvalidInputError

__all__ = [
    "DEFAULT_MAX_RESOURCE_BYTES",
    "LARGE_ROW_BYTES",
    "MAX_RESOURCE_BYTES_CEILING",
    "MAX_RESOURCE_ENV",
    "QUARANTINE_PREFIX_BYTES",
    "max_resource_bytes",
]

MAX_RESOURCE_ENV = "EHRSYNC_MAX_RESOURCE_BYTES"
DEFAULT_MAX_RESOURCE_BYTES = 64 * 1024 * 1024
MAX_RESOURCE_BYTES_CEILING = 256 * 1024 * 1024
# A resource this large gets a Parquet row group of its own, so the DuckDB merge can size its memory for it.
LARGE_ROW_BYTES = 4 * 1024 * 1024
# An over-limit resource keeps this much of its text in the quarantine (enough to see what it was).
QUARANTINE_PREFIX_BYTES = 64 * 1024


def max_resource_bytes(env: Mapping[str, str] | None = None) -> int:
    """The configured limit; a malformed value raises ``InvalidInputError`` naming the variable."""
    raw = (os.environ if env is None else env).get(MAX_RESOURCE_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_RESOURCE_BYTES
    if not (raw.isascii() and raw.isdigit()) or not 1024 <= int(raw) <= MAX_RESOURCE_BYTES_CEILING:
        raise InvalidInputError(
            f"{MAX_RESOURCE_ENV}={raw!r} is not a whole number of bytes from 1024 to {MAX_RESOURCE_BYTES_CEILING}"
        )
    return int(raw)
