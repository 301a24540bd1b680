"""What a search sends: its resource type checked before it goes into a URL path, and its query with ``_count``."""

from __future__ import annotations

from collections.abc import Mapping

from connectors.fhir._session import QueryParams
from connectors.fhir.resource_types import TYPE_RE

__all__ = ["DEFAULT_COUNT", "check_type", "query_pairs"]

#: ``_count`` asked for when the caller names none (BDX-26); the server may return fewer.
DEFAULT_COUNT = 200


def check_type(resource_type: str) -> None:
    """Anything but a FHIR type name is refused before it is sent (it becomes a path segment)."""
    if not isinstance(resource_type, str) or not TYPE_RE.match(resource_type):
        raise ValueError(f"not a FHIR resource type: {resource_type!r}")


def query_pairs(params: QueryParams | None, count: int | None) -> list[tuple[str, str]]:
    """``params`` as pairs, with ``_count=count`` added unless they name one (None: the server's page size)."""
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params or [])
    if count is not None and not any(name == "_count" for name, _ in pairs):
        if count < 1:
            raise ValueError("count must be positive")
        pairs.append(("_count", str(count)))
    return pairs
