"""Where a note goes and who may send it: the connection, the tenant's switches, the vendor's write profile."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.fhir.references import reference_on
from connectors.providers import get_provider
from connectors.providers.profiles import Persona, WriteProfile
from connectors.writeback import WriteFlags
from engine.connection_info import ConnectionInfo
from store import AppDatabase
from store.models import Connection, Tenant
from store.outbox import NoteRecord

__all__ = ["NoteTarget", "load_target"]

_SECTIONS = ("smartFhir", "ehrIntegrations")


def _flag(settings: Mapping[str, Any], name: str) -> bool:
    """A tenant switch is on when either section of ``practice_settings`` turns it on (as the auth service reads)."""
    return any(isinstance(settings.get(s), Mapping) and settings[s].get(name) is True for s in _SECTIONS)


def _practice_settings(stored: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The tenant's ``practice_settings`` (``Tenant.settings`` holds the seed format, ``{"practice_settings": {...}}``,
    as ``auth_service.services.tenants`` writes and reads it); a row without them has every switch off."""
    practice = (stored or {}).get("practice_settings")
    return practice if isinstance(practice, Mapping) else {}


@dataclass(frozen=True)
class NoteTarget:
    """The facts one attempt needs, read from the app database before any EHR call."""

    connection: ConnectionInfo
    persona: Persona
    flags: WriteFlags
    token_user: str | None  # the connection's ``fhirUser``: the only author some EHRs take under user tokens (DWB-16)
    final_opt_in: bool  # the tenant's ``allowFinalNotes``: final only with this and clinician approval (DWB-03)

    @property
    def profile(self) -> WriteProfile:
        return self.connection.provider.write_profile


def _persona(row: Connection) -> Persona:
    if row.kind in ("backend", "group"):
        return "system"
    user = reference_on(row.fhir_user, None)  # a version (``/_history/2``) names the same Practitioner
    return "user" if user is not None and user[0] == "Practitioner" else "patient"


def load_target(db: AppDatabase, note: NoteRecord, *, service_write_enabled: bool) -> NoteTarget:
    """The note's connection and tenant as they are now (a switch turned off since enqueueing counts)."""
    with db.session() as session:
        row = session.get(Connection, note.connection_id)
        tenant = session.get(Tenant, note.tenant_id)
        if row is None or tenant is None or row.tenant_id != note.tenant_id:
            raise LookupError(f"note {note.id}'s connection or tenant no longer exists")
        settings = _practice_settings(tenant.settings)
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
        persona, token_user = _persona(row), row.fhir_user
    flags = WriteFlags(
        service_enabled=service_write_enabled,
        tenant_enabled=_flag(settings, "enableWrite"),
        note_create_enabled=_flag(settings, "enableNoteCreate"),
        vendor_allows_notes=get_provider(info.provider_id).write_profile.supported,
    )
    return NoteTarget(info, persona, flags, token_user, final_opt_in=_flag(settings, "allowFinalNotes"))
