"""The connection facts a sync reads from the app database: one ``connections`` row, detached from its session,
with the tenant's public provider config; refused when the connection must not sync."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.errors import ConfigurationError
from connectors.providers import ProviderPlugin, get_provider
from connectors.smart import ScopeSet, parse_scopes
from engine.errors import ConnectionNotFoundError, ConnectionNotSyncableError
from store import AppDatabase
from store.models import Connection, ProviderConfig


@dataclass(frozen=True)
class ConnectionInfo:
    """The facts of one ``connections`` row a sync needs, detached from the ORM session."""

    id: str
    tenant_id: str | None
    provider_id: str
    kind: str
    fhir_base: str
    status: str
    patient_id: str | None
    group_id: str | None
    granted_scopes: str | None
    # The tenant's provider config without its sealed secrets: search plans need e.g. athenahealth's practice.
    provider_config: dict[str, Any] | None = None
    client_id: str | None = None  # the OAuth app: the EHR's quota holds are kept per app (connectors.transport.quota)

    @property
    def provider(self) -> ProviderPlugin:
        return get_provider(self.provider_id)

    @property
    def scopes(self) -> ScopeSet | None:
        """The scopes the server granted, or ``None`` when unknown (then nothing is filtered)."""
        return parse_scopes(self.granted_scopes) if self.granted_scopes else None


def load_connection(db: AppDatabase, connection_id: str) -> ConnectionInfo:
    """Read the connection; refuse one that must not sync (needs_reauth, disabled, disconnected)."""
    with db.session() as session:
        row = session.get(Connection, connection_id)
        if row is None:
            raise ConnectionNotFoundError(f"connection {connection_id!r} not found")
        info = ConnectionInfo(
            id=str(row.id),
            tenant_id=str(row.tenant_id) if row.tenant_id is not None else None,
            provider_id=str(row.provider_id),
            kind=str(row.kind),
            fhir_base=str(row.fhir_base),
            status=str(row.status),
            patient_id=str(row.patient_id) if row.patient_id else None,
            group_id=str(row.group_id) if row.group_id else None,
            granted_scopes=str(row.granted_scopes) if row.granted_scopes else None,
            provider_config=_public_config(session, str(row.tenant_id), str(row.provider_id)),
            client_id=str(row.client_id) if row.client_id else None,
        )
    if info.status != "active":
        raise ConnectionNotSyncableError(f"connection {connection_id} is {info.status}, not active")
    return info


def _public_config(session: Session, tenant_id: str, provider_id: str) -> dict[str, Any] | None:
    """Non-secret members of the provider config that the vendor's config schema knows; sealed (``{"$enc": ...}``)
    members are never opened here. The store keeps members of its own (``key_id``, ``jku``, ``auth_method``) that a
    vendor schema refusing unknown fields would reject, failing every search plan built from the config."""
    row = session.scalar(
        select(ProviderConfig).where(ProviderConfig.tenant_id == tenant_id, ProviderConfig.provider_id == provider_id)
    )
    if row is None:
        return None
    public = {k: v for k, v in (row.config or {}).items() if not (isinstance(v, dict) and "$enc" in v)}
    try:
        return get_provider(provider_id).schema_members(public)
    except ConfigurationError:  # an unknown provider fails where it is used, naming the known ones
        return public
