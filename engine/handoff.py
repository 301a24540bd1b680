"""The landing → warehouse handoff: what a landing step leaves in ``sync_cursors`` for its upsert step.

Landing and upsert run in different processes (two Dagster assets), so the handoff crosses as JSON. It is a
typed, versioned value: a blob written by a newer engine, or one this engine did not write, fails with
:class:`HandoffError` naming the field, instead of a ``KeyError`` deep inside the upsert. Blobs written before
the version field existed are read as version 1 (their shape is version 1's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from engine.errors import HandoffError
from engine.reports import TypeReport
from warehouse import LandedFile

__all__ = [
    "HANDOFF_VERSION",
    "AttachmentLink",
    "HandoffError",
    "LandingHandoff",
    "LandingSummary",
    "landed_from_json",
    "landed_to_json",
]

#: The version this engine writes; :meth:`LandingHandoff.from_json` reads it and nothing newer.
HANDOFF_VERSION = 1
_T = TypeVar("_T")
_KINDS: dict[type, str] = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "an object"}


def _value(data: Mapping[str, Any], key: str, kind: type[_T], where: str, default: _T | None = None) -> _T:
    """``data[key]`` checked to be a ``kind`` (``default`` when absent or null and a default is given)."""
    value = data.get(key)
    if value is None and default is not None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HandoffError(f"{where}.{key} must be {_KINDS.get(kind, kind.__name__)}, got {type(value).__name__}")
    return value


def _optional(data: Mapping[str, Any], key: str, kind: type[_T], where: str) -> _T | None:
    return None if data.get(key) is None else _value(data, key, kind, where)


def _instant(data: Mapping[str, Any], key: str, where: str) -> datetime | None:
    text = _optional(data, key, str, where)
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError as exc:
        raise HandoffError(f"{where}.{key} is not an ISO instant: {text!r}") from exc


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise HandoffError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def landed_to_json(landed: LandedFile) -> dict[str, Any]:
    """One landed file as JSON (also what ``bulk_job_files.landed_path`` holds for a landed Bulk file)."""
    return {
        "path": str(landed.path),
        "rows": landed.rows,
        "bytes": landed.bytes,
        "quarantined": landed.quarantined,
        "quarantine_path": str(landed.quarantine_path) if landed.quarantine_path else None,
        "max_last_updated": landed.max_last_updated.isoformat() if landed.max_last_updated else None,
        "resource_type": landed.resource_type,
        "connection_id": landed.connection_id,
        "run_id": landed.run_id,
        "source": landed.source,
        "tenant_id": landed.tenant_id,
    }


def landed_from_json(blob: object, where: str = "landed file") -> LandedFile:
    """The inverse of :func:`landed_to_json`; raises :class:`HandoffError` naming the first bad field."""
    data = _object(blob, where)
    quarantine_path = _optional(data, "quarantine_path", str, where)
    return LandedFile(
        path=Path(_value(data, "path", str, where)),
        rows=_value(data, "rows", int, where),
        bytes=_value(data, "bytes", int, where),
        quarantined=_value(data, "quarantined", int, where),
        quarantine_path=Path(quarantine_path) if quarantine_path else None,
        max_last_updated=_instant(data, "max_last_updated", where),
        resource_type=_value(data, "resource_type", str, where),
        connection_id=_value(data, "connection_id", str, where),
        run_id=_optional(data, "run_id", str, where),
        source=_optional(data, "source", str, where),
        tenant_id=_optional(data, "tenant_id", str, where),
    )


@dataclass(frozen=True)
class AttachmentLink:
    """A stored attachment the upsert links to its URL in the warehouse's ``fhir_attachments``."""

    url: str
    sha256: str
    size: int
    content_type: str

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "sha256": self.sha256, "size": self.size, "content_type": self.content_type}

    @classmethod
    def from_json(cls, blob: object, where: str = "attachment") -> AttachmentLink:
        data = _object(blob, where)
        return cls(
            url=_value(data, "url", str, where),
            sha256=_value(data, "sha256", str, where),
            size=_value(data, "size", int, where),
            content_type=_value(data, "content_type", str, where),
        )


#: The landing's additive counts the upsert step's report starts from.
_LANDED_COUNTS = ("fetched", "quarantined", "bytes", "pages", "files", "attachments", "attachments_failed")


@dataclass(frozen=True)
class LandingSummary:
    """What the landing step measured, carried into the upsert step's report (which is the type's report)."""

    counts: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(_LANDED_COUNTS, 0))
    duration_s: float = 0.0
    skipped_reason: str | None = None
    error: str | None = None  # a search that stopped early: the upsert stores what arrived, then fails the type
    incomplete: bool = False
    warnings: tuple[str, ...] = ()

    @classmethod
    def of(cls, report: TypeReport) -> LandingSummary:
        return cls(
            counts={name: int(getattr(report, name)) for name in _LANDED_COUNTS},
            duration_s=report.duration_s,
            skipped_reason=report.skipped_reason,
            error=report.error,
            incomplete=report.incomplete,
            warnings=tuple(report.warnings),
        )

    def report(self, resource_type: str) -> TypeReport:
        """A fresh report of ``resource_type`` holding the landing's numbers (not its duration)."""
        report = TypeReport(resource_type, skipped_reason=self.skipped_reason, error=self.error)
        for name in _LANDED_COUNTS:
            setattr(report, name, self.counts.get(name, 0))
        report.incomplete = self.incomplete
        report.warnings = list(self.warnings)
        return report

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.counts, "duration_s": self.duration_s, "warnings": list(self.warnings)}
        out.update(skipped_reason=self.skipped_reason, error=self.error, incomplete=self.incomplete)
        return out

    @classmethod
    def from_json(cls, blob: object, where: str = "report") -> LandingSummary:
        """Also reads version-1 blobs written as ``TypeReport.as_metadata()`` (extra keys are ignored)."""
        data = _object(blob, where)
        duration = data.get("duration_s", 0.0)
        if not isinstance(duration, int | float) or isinstance(duration, bool):
            raise HandoffError(f"{where}.duration_s must be a number, got {type(duration).__name__}")
        warnings = _value(data, "warnings", list, where, default=[])
        if not all(isinstance(w, str) for w in warnings):
            raise HandoffError(f"{where}.warnings must hold strings")
        return cls(
            counts={name: _value(data, name, int, where, default=0) for name in _LANDED_COUNTS},
            duration_s=float(duration),
            skipped_reason=_optional(data, "skipped_reason", str, where),
            error=_optional(data, "error", str, where),
            incomplete=_value(data, "incomplete", bool, where, default=False),
            warnings=tuple(warnings),
        )


@dataclass(frozen=True)
class LandingHandoff:
    """A finished landing waiting for its upsert: the files, the landing's report, the references found (read
    once the type completes) and the attachments stored (linked by the upsert)."""

    files: tuple[LandedFile, ...] = ()
    summary: LandingSummary = field(default_factory=LandingSummary)
    references: tuple[str, ...] = ()
    attachments: tuple[AttachmentLink, ...] = ()
    version: int = HANDOFF_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "files": [landed_to_json(f) for f in self.files],
            "report": self.summary.to_json(),
            "references": list(self.references),
            "attachments": [a.to_json() for a in self.attachments],
        }

    @classmethod
    def from_json(cls, blob: object) -> LandingHandoff:
        """Read a stored handoff; raises :class:`HandoffError` for an unknown version or a malformed blob."""
        data = _object(blob, "landing handoff")
        version = _value(data, "version", int, "landing handoff", default=1)  # no version: written before it
        if version != HANDOFF_VERSION:
            raise HandoffError(
                f"landing handoff version {version} is not supported (this engine reads version {HANDOFF_VERSION})"
            )
        files = _value(data, "files", list, "landing handoff", default=[])
        references = _value(data, "references", list, "landing handoff", default=[])
        if not all(isinstance(r, str) for r in references):
            raise HandoffError("landing handoff.references must hold strings")
        links = _value(data, "attachments", list, "landing handoff", default=[])
        return cls(
            files=tuple(landed_from_json(f, f"landing handoff.files[{i}]") for i, f in enumerate(files)),
            summary=LandingSummary.from_json(data.get("report") or {}, "landing handoff.report"),
            references=tuple(references),
            attachments=tuple(
                AttachmentLink.from_json(a, f"landing handoff.attachments[{i}]") for i, a in enumerate(links)
            ),
            version=version,
        )
