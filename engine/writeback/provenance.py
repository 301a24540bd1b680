"""After a note is written by the answer to its own POST, tell the EHR where it came from with a Provenance
(DWB-82), best effort. A note settled ``written`` by a search (its answer lost) gets none (docs/WRITEBACK.md §4).

A Provenance is optional: a server that does not advertise Provenance create (or scopes that do not cover it)
gets none, and a failed create is a logged, audited warning while the note stays ``written``. The id of a
created Provenance is stored on the note, so it is never sent twice.
"""

from __future__ import annotations

import logging

from connectors import errors as ce
from connectors.fhir import FhirClient
from connectors.writeback import WriteCapability
from connectors.writeback.provenance import ProvenanceDraft, build_provenance
from engine.environment import SyncEnvironment
from store.audit import record_audit
from store.models import utcnow
from store.outbox import NoteRecord, transition

__all__ = ["send_provenance"]

_log = logging.getLogger(__name__)


def send_provenance(
    env: SyncEnvironment, client: FhirClient, note: NoteRecord, capability: WriteCapability
) -> NoteRecord:
    """``note`` with its ``provenance_id`` when one was created now; as it was otherwise (never raises for the EHR)."""
    if note.state != "written" or note.provenance_id or not note.ehr_resource_id or not capability.provenance_create:
        return note
    draft = ProvenanceDraft(
        document_id=note.ehr_resource_id,
        document_version=note.ehr_version_id,
        model=note.produced_by,
        prompt_version=note.prompt_version,
        reviewer_practitioner_id=note.author_id,
        recorded=utcnow(),
    )
    try:
        result = client.create(build_provenance(draft))
        if not result.id:
            raise ce.TransportError("the server created the Provenance but named no id")
    except ce.EhrSyncError as exc:
        _warn(env, note, exc)
        return note
    return transition(env.db, note, "written", provenance_id=result.id, detail={"provenance_created": True})


def _warn(env: SyncEnvironment, note: NoteRecord, exc: ce.EhrSyncError) -> None:
    status = getattr(exc, "status", None)
    _log.warning("note %s: Provenance not created (%s, HTTP %s); the note stays written", note.id, exc.code, status)
    with env.db.session() as session:
        record_audit(
            session,
            action="note.provenance",
            outcome="warning",
            tenant_id=note.tenant_id,
            actor="writeback",
            connection_id=note.connection_id,
            detail={"note_id": note.id, "error_code": exc.code, "status_code": status},
        )
        session.commit()
