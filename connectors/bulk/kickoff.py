"""Building a Bulk Data kick-off request (BDX-01..07): the level's ``$export`` URL and its parameters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from connectors.bulk.files import NDJSON
from connectors.bulk.wire import fhir_instant
from connectors.fhir.resource_types import ID_RE, TYPE_RE
from connectors.http import resolve_url

__all__ = ["ExportLevel", "kickoff_params", "kickoff_url"]

ExportLevel = Literal["system", "patient", "group"]


def kickoff_url(fhir_base: str, level: ExportLevel, group_id: str | None = None) -> str:
    """The ``$export`` URL of ``level`` under ``fhir_base``; ValueError for an unknown level or a bad group id."""
    if level == "system":
        path = "$export"
    elif level == "patient":
        path = "Patient/$export"
    elif level == "group":
        if not group_id or not ID_RE.match(group_id):
            raise ValueError("group-level export needs a valid group_id")
        path = f"Group/{group_id}/$export"
    else:
        raise ValueError(f"unknown export level {level!r} (system, patient or group)")
    return resolve_url(path, fhir_base + "/")


def kickoff_params(
    *,
    types: Sequence[str] | None = None,
    since: datetime | None = None,
    type_filters: Sequence[str] | None = None,
    output_format: str = NDJSON,
    extra_params: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """The kick-off query parameters; ValueError for anything in ``types`` that is not a FHIR resource type."""
    for kind in types or ():
        if not TYPE_RE.match(kind):
            raise ValueError(f"not a FHIR resource type: {kind!r}")
    params: list[tuple[str, str]] = [("_outputFormat", output_format)]
    if since is not None:
        params.append(("_since", fhir_instant(since)))
    if types:
        params.append(("_type", ",".join(types)))
    params.extend(("_typeFilter", query) for query in type_filters or ())
    params.extend(extra_params)
    return params
