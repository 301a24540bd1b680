"""Attachments (DocumentReference.content.attachment, DiagnosticReport.presentedForm) fetched once, capped,
type-checked and stored content-addressed beside the Parquet; ``sync_attachments`` links resource → copy.

A failed attachment is counted and logged, not fatal to the type: the resource itself is already landed, and
the type's mark is held so the next run fetches the resource and retries the attachment. What every later
download would meet too (a grant no longer usable, an unreachable EHR, less free disk than the reserve, a disk that
refuses the download or the move into the store for room) stops the type's landing instead, its mark untouched
(``store_attachments``).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from connectors.errors import (
    EhrSyncError,
    StepBudgetExceededError,
)
from connectors.fhir import FhirClient
from connectors.http import resolve_url, url_problem
from engine.connection_info import ConnectionInfo
from engine.environment import SyncEnvironment
from engine.models import SyncAttachment, utcnow
from engine.request_stops import EVERY_REQUEST_WOULD_MEET, LANDING_DISK_FULL
from engine.residue import attachment_tmp_root
from warehouse.errors import WarehouseError

ATTACHMENT_TYPES = ("DocumentReference", "DiagnosticReport")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttachmentRef:
    """One downloadable attachment of one resource (only ``url`` attachments: inline ``data`` needs no fetch)."""

    resource_type: str
    resource_id: str
    url: str
    content_type: str | None
    size: int | None


def attachment_refs(resource: dict[str, Any]) -> list[AttachmentRef]:
    rtype = resource.get("resourceType")
    rid = resource.get("id")
    if rtype not in ATTACHMENT_TYPES or not isinstance(rid, str):
        return []
    if rtype == "DocumentReference":
        items = [c.get("attachment") for c in resource.get("content") or [] if isinstance(c, dict)]
    else:
        items = list(resource.get("presentedForm") or [])
    out: list[AttachmentRef] = []
    for att in items:
        if not isinstance(att, dict) or not isinstance(att.get("url"), str) or not att["url"]:
            continue
        size = att.get("size")
        ctype = att.get("contentType")
        out.append(
            AttachmentRef(
                str(rtype),
                rid,
                att["url"],
                ctype if isinstance(ctype, str) else None,
                size if isinstance(size, int) and not isinstance(size, bool) else None,
            )
        )
    return out


def content_type_allowed(content_type: str | None, allowed: tuple[str, ...]) -> bool:
    """Allow-list check on the media type (parameters such as ``charset`` ignored); prefixes end with ``/``."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return any(media.startswith(a) if a.endswith("/") else media == a for a in allowed)


def absolute_url(fhir_base: str, url: str) -> str:
    """Resolve ``Binary/1`` (relative to the FHIR base) or keep an absolute URL as given (and one urllib cannot
    split, for :func:`connectors.http.url_problem` to name)."""
    return resolve_url(url, fhir_base.rstrip("/") + "/")


@dataclass
class AttachmentOutcome:
    """``links`` (url → stored blob) are recorded in the warehouse's ``fhir_attachments`` by the upsert step."""

    stored: int = 0
    failed: int = 0
    #: Failures a later run may get past (a server error, a transport error): the type's mark is held for them.
    #: An attachment refused by policy (size, content type) fails the same way every time and holds nothing.
    retryable: int = 0
    links: list[dict[str, Any]] = field(default_factory=list)


def store_attachments(
    env: SyncEnvironment, conn: ConnectionInfo, client: FhirClient, refs: list[AttachmentRef]
) -> AttachmentOutcome:
    """Download and link every attachment not already stored; failures are counted, not raised, except those
    that stop the whole landing (re-authorization needed, step budget spent, EHR unreachable, another process
    refreshing the grant past the refresh lock's 300 s, less free disk than ``EHRSYNC_MIN_FREE_DISK_BYTES``, a disk
    refusing the download or the store's move for room)."""
    outcome = AttachmentOutcome()
    # Under the state directory, per connection: a killed run's partial downloads are removed by the connection's
    # next run (``residue.remove_orphans``), and the finished file moves into the store on the state directory's disk.
    tmp_root = attachment_tmp_root(env.zone.root, conn.id)
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=tmp_root) as tmp:
        for ref in refs:
            try:
                row, new = _store_one(env, conn, client, ref, Path(tmp))
                outcome.stored += int(new)
                outcome.links.append(
                    {"url": row.url, "sha256": row.sha256, "size": row.size, "content_type": row.content_type}
                )
            except (*EVERY_REQUEST_WOULD_MEET, *LANDING_DISK_FULL, StepBudgetExceededError):
                raise  # the whole landing stops: nothing recorded, the mark untouched, the next run fetches again
            except (EhrSyncError, WarehouseError, OSError) as exc:
                outcome.failed += 1
                outcome.retryable += int(not isinstance(exc, AttachmentRejectedError))
                _log.warning(
                    "attachment of %s/%s on %s not stored: %s",
                    ref.resource_type,
                    ref.resource_id,
                    conn.id,
                    exc,
                )
    return outcome


class AttachmentRejectedError(EhrSyncError):
    """The attachment is too large or of a content type outside the allow-list."""

    code = "attachment_rejected"


def _store_one(
    env: SyncEnvironment, conn: ConnectionInfo, client: FhirClient, ref: AttachmentRef, tmp: Path
) -> tuple[SyncAttachment, bool]:
    """The link row, and whether it is new (False: this resource already links this URL)."""
    url = absolute_url(conn.fhir_base, ref.url)
    problem = url_problem(url)
    if problem is not None:  # a bad port or an unclosed "[" in the record: no retry can fetch it
        raise AttachmentRejectedError(f"its url {problem}")
    with env.db.session() as session:
        rows = session.scalars(
            select(SyncAttachment).where(SyncAttachment.connection_id == conn.id, SyncAttachment.url == url)
        ).all()
        session.expunge_all()
    for known in rows:
        if known.resource_type == ref.resource_type and known.resource_id == ref.resource_id:
            return known, False
    if rows:  # the same URL already stored for another resource: link it, do not fetch again
        return _save(env, _row(conn, ref, url, rows[0].sha256, rows[0].size, rows[0].content_type, rows[0].path)), True
    if ref.size is not None and ref.size > env.attachment_max_bytes:
        raise AttachmentRejectedError(f"declared size {ref.size} exceeds the {env.attachment_max_bytes}-byte cap")
    if ref.content_type is not None and not content_type_allowed(ref.content_type, env.attachment_types):
        raise AttachmentRejectedError(f"declared content type {ref.content_type!r} is not allowed")
    accept = ref.content_type or "*/*"
    downloaded = client.download(
        url,
        tmp / "body",
        max_bytes=env.attachment_max_bytes,
        accept=accept,
        url_guard=env.url_guard(conn),
        min_free_bytes=env.min_free_disk_bytes,  # the store shares the state directory's disk (landing, app database)
    )
    try:
        ctype = downloaded.content_type or ref.content_type
        if not content_type_allowed(ctype, env.attachment_types):
            raise AttachmentRejectedError(f"served content type {ctype!r} is not allowed")
        media = (ctype or "application/octet-stream").split(";", 1)[0].strip().lower()
        stored = env.attachments.put_file(downloaded.path, media, expected_sha256=downloaded.sha256)
    finally:
        downloaded.path.unlink(missing_ok=True)
    return _save(env, _row(conn, ref, url, stored.sha256, stored.size, media, str(stored.path))), True


def _save(env: SyncEnvironment, row: SyncAttachment) -> SyncAttachment:
    with env.db.session() as session:
        session.add(row)
        session.commit()
        session.refresh(row)
        session.expunge(row)
    return row


def _row(
    conn: ConnectionInfo, ref: AttachmentRef, url: str, sha256: str, size: int, ctype: str, path: str
) -> SyncAttachment:
    return SyncAttachment(
        connection_id=conn.id,
        url=url,
        resource_type=ref.resource_type,
        resource_id=ref.resource_id,
        sha256=sha256,
        size=size,
        content_type=ctype,
        path=path,
        stored_at=utcnow(),
    )


def attachments_of(
    env: SyncEnvironment, connection_id: str, resource_type: str, resource_id: str
) -> list[SyncAttachment]:
    """The stored copies linked to one resource (for the UI and tests)."""
    with env.db.session() as session:
        rows = session.scalars(
            select(SyncAttachment).where(
                SyncAttachment.connection_id == connection_id,
                SyncAttachment.resource_type == resource_type,
                SyncAttachment.resource_id == resource_id,
            )
        ).all()
        session.expunge_all()
        return list(rows)
