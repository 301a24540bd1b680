"""Tell the EHR where each note ehrsync put in the chart came from with a Provenance (DWB-82), best effort: a note
written by the answer to its own POST, and one ``written`` because a search found it (its answer lost, a 202
settled later, a person's confirmed retry found in the chart before its POST, a conditional create's match).

A Provenance is optional: a server that does not advertise Provenance create (or scopes that do not cover it, or a
gate now closed: a switch turned off, the connection not active) gets none, and a failed create is a logged,
audited warning while the note stays ``written``. It is sent once, by the run that made the note ``written``
(``written`` is final; ``send_provenance`` is called with the run's result), and its id is stored on the note, so
it is never sent twice. No ``Provenance?target=`` search first: a note found by a search was never written before,
so ehrsync never sent it a Provenance (a note's identifier is its own draft's; one found by patient, type and date
is none another note holds), and a Provenance the EHR made itself is not ehrsync's. Only two runs of one note racing
to ``written`` could each send one: a second Provenance is harmless metadata, a missing one is not.

The capability is what the run's gates read: the CapabilityStatement is cached on the run's client, so a run that
planned a POST reads it no second time; a run that only searched reads it once, and not at all when the granted
scopes cover no Provenance create or a switch is off, nor again once the run's read of it failed.
"""

from __future__ import annotations

import logging
from typing import Any

from connectors import errors as ce
from connectors.fhir import FhirClient
from connectors.writeback import WriteCapability, check_note_write, check_switches
from connectors.writeback.gate import scopes_allow_provenance_create
from connectors.writeback.provenance import ProvenanceDraft, build_provenance
from engine.environment import SyncEnvironment
from engine.writeback.target import NoteTarget
from store.audit import record_audit
from store.models import utcnow
from store.outbox import NoteRecord, transition

__all__ = ["send_provenance"]

_log = logging.getLogger(__name__)


def send_provenance(env: SyncEnvironment, client: FhirClient, note: NoteRecord, target: NoteTarget) -> NoteRecord:
    """``note`` (as a run that made it ``written`` left it) with its ``provenance_id`` when one was created now; as
    it was otherwise (never raises for the EHR)."""
    if note.state != "written" or note.provenance_id or not note.ehr_resource_id:
        return note
    capability = _capability(env, client, note, target)
    if capability is None or not capability.provenance_create:
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


def _capability(
    env: SyncEnvironment, client: FhirClient, note: NoteRecord, target: NoteTarget
) -> WriteCapability | None:
    """What the gates allow now (``check_note_write``, as the run's plan), None when they allow no write. Scopes
    covering no Provenance create, or a switch off, decide it without the CapabilityStatement: no read (nor a
    warning of its failure) for a Provenance never sent."""
    granted = target.connection.granted_scopes or ""
    if not scopes_allow_provenance_create(granted):
        return None
    if target.connection.status != "active" or target.setting_problem is not None:
        _log.info("note %s: no Provenance, its connection or tenant cannot write now", note.id)
        return None
    try:
        check_switches(target.flags)  # a switch off decides it: no statement read, no warning of its failure
        return check_note_write(_statement(client), granted, target.flags)
    except ce.WriteNotSupportedError as exc:  # a gate closed since the note left (a switch off, create withdrawn)
        _log.info("note %s: no Provenance, note write is not allowed now (%s)", note.id, exc.reason_code)
    except ce.EhrSyncError as exc:  # the statement unreadable: whether Provenance create is offered is not known
        _warn(env, note, exc)
    return None


def _statement(client: FhirClient) -> dict[str, Any]:
    """The run's CapabilityStatement (cached: read once a run); the run's failed read of it again, unread (a run that
    could not read it for its plan and then found the note by a search would wait out every retry a second time)."""
    if (failed := client.capabilities_failure) is not None:
        raise failed
    return client.capabilities()


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
