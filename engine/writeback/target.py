"""Where a note goes and who may send it: the connection, the tenant's switches, the vendor's write profile."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from connectors.providers import get_provider
from connectors.providers.profiles import Persona, WriteProfile
from connectors.tenant_switches import FINAL_NOTES, TenantSwitch, all_on, read_switch
from connectors.writeback import WriteFlags, persona_of
from engine.connection_info import ConnectionInfo
from store import AppDatabase
from store.models import Connection
from store.outbox import NoteRecord
from store.tenant_settings import NOT_JSON, stored_settings

__all__ = ["TENANT_SETTING_INVALID", "NoteTarget", "load_target"]

#: The reason code of a note held for a tenant switch that is neither true nor false (``waiting.wait_for_setting``).
TENANT_SETTING_INVALID = "tenant_setting_invalid"


@dataclass(frozen=True)
class NoteTarget:
    """The facts one attempt needs, read from the app database before any EHR call."""

    connection: ConnectionInfo
    persona: Persona
    flags: WriteFlags
    token_user: str | None  # the connection's ``fhirUser``: the only author some EHRs take under user tokens (DWB-16)
    final_opt_in: bool  # the tenant's ``allowFinalNotes``: final only with this and clinician approval (DWB-03)
    #: A switch this note's answer hangs on that is neither true nor false (``None``: every one it needs is readable)
    setting_problem: str | None = None
    #: The same for the note's Provenance (DWB-82), which hangs on ``enableWrite`` and ``enableNoteCreate`` only:
    #: ``allowFinalNotes`` gates a final note, not the word of where a note already in the chart came from
    provenance_problem: str | None = None

    @property
    def profile(self) -> WriteProfile:
        return self.connection.provider.write_profile


def _setting_problem(flags: WriteFlags, switches: Mapping[str, TenantSwitch], final: bool) -> str | None:
    """The unreadable switch an answer depends on. None when every switch it needs is readable, or when the answer
    is "no" whatever the bad value says (another switch is off: the gate blocks it with that reason). ``final``: a
    final note with its clinician's approval needs ``allowFinalNotes`` too (without the approval it is blocked
    anyway)."""
    needed = ["enableWrite", "enableNoteCreate", *([FINAL_NOTES] if final else [])]
    if not (flags.service_enabled and flags.vendor_allows_notes):
        return None
    return all_on(switches[n] for n in needed)[1]


def _switches(tenant_id: str, stored: object) -> dict[str, TenantSwitch]:
    """The switches the write-back reads. Settings that are not JSON (a hand edit of an SQLite app database) make
    each unreadable, named so: loaded through the ORM they raised a bare ``JSONDecodeError``, every run of the
    tenant's notes crashed (asked for again on every tick) and each run of an owed Provenance spent a try."""
    names = ("enableWrite", "enableNoteCreate", FINAL_NOTES)
    if stored is NOT_JSON:
        problem = f"tenant {tenant_id}'s stored settings are not JSON (a hand-edited row)"
        return {n: TenantSwitch(False, problem) for n in names}
    return {n: read_switch(stored, n) for n in names}


def load_target(db: AppDatabase, note: NoteRecord, *, service_write_enabled: bool) -> NoteTarget:
    """The note's connection and tenant as they are now (a switch turned off since enqueueing counts)."""
    with db.session() as session:
        row = session.get(Connection, note.connection_id)
        stored = stored_settings(session, [note.tenant_id])  # never the ORM's row: a bare JSONDecodeError (below)
        if row is None or note.tenant_id not in stored or row.tenant_id != note.tenant_id:
            raise LookupError(f"note {note.id}'s connection or tenant no longer exists")
        switches = _switches(note.tenant_id, stored[note.tenant_id])
        info = ConnectionInfo(
            id=row.id,
            tenant_id=row.tenant_id,
            provider_id=row.provider_id,
            kind=row.kind,
            fhir_base=row.fhir_base,
            status=row.status,
            patient_id=row.patient_id,
            group_id=row.group_id,
            granted_scopes=row.granted_scopes,
            client_id=row.client_id,
        )
        persona, token_user = persona_of(row.kind, row.fhir_user), row.fhir_user
    flags = WriteFlags(
        service_enabled=service_write_enabled,
        tenant_enabled=switches["enableWrite"].on,
        note_create_enabled=switches["enableNoteCreate"].on,
        vendor_allows_notes=get_provider(info.provider_id).write_profile.supported,
    )
    problem = _setting_problem(flags, switches, note.doc_status == "final" and note.clinician_approved)
    return NoteTarget(
        info, persona, flags, token_user, switches[FINAL_NOTES].on, problem, _setting_problem(flags, switches, False)
    )
