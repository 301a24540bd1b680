"""App database tables (Alembic revision 0001) as typed SQLAlchemy 2 models.

``Base`` is shared: ``sync_models`` (revision 0002, owned by pipelines) declares its tables on it too.
Ciphertext columns hold ``TokenCipher`` envelopes; nothing here ever holds a raw token, state or key.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Base",
    "Connection",
    "ConnectionKind",
    "ConnectionStatus",
    "NoteOutbox",
    "OAuthState",
    "ProviderConfig",
    "SigningKey",
    "Tenant",
    "TokenRecord",
    "UTCDateTime",
    "new_id",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out (SQLite forgets the zone; naive input is refused)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ConnectionKind:
    PATIENT = "patient"
    BACKEND = "backend"
    GROUP = "group"
    ALL = (PATIENT, BACKEND, GROUP)


class ConnectionStatus:
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"
    DISABLED = "disabled"
    DISCONNECTED = "disconnected"
    #: a backend client's fresh token was refused (401) too, or its client_credentials grant refused for good
    #: (unauthorized_client, invalid_client): an admin must check the client registration
    CLIENT_REJECTED = "client_rejected"
    #: the stored token cannot be decrypted (key gone, ciphertext moved or tampered): an admin must act
    TOKEN_UNDECRYPTABLE = "token_undecryptable"  # noqa: S105 - a status name, not a secret
    ALL = (ACTIVE, NEEDS_REAUTH, DISABLED, DISCONNECTED, CLIENT_REJECTED, TOKEN_UNDECRYPTABLE)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Tenant(Base):
    """A practice; ``settings`` follows the seed format (``practice_settings.smartFhir`` / ``.ehrIntegrations``)."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Revision 0005: days a disconnected connection's data is kept before it is purged (None: kept forever).
    data_retention_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ProviderConfig(Base):
    """Per-tenant vendor settings; secret members are ``{"$enc": <envelope>}`` (see ``provider_configs``)."""

    __tablename__ = "provider_configs"
    __table_args__ = (UniqueConstraint("tenant_id", "provider_id", name="uq_provider_configs_tenant_provider"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    provider_id: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Connection(Base):
    """One authorized link to an EHR (a patient grant, a backend client, or a bulk group)."""

    __tablename__ = "connections"
    __table_args__ = (Index("ix_connections_tenant_status", "tenant_id", "status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    provider_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default=ConnectionKind.PATIENT)
    fhir_base: Mapped[str] = mapped_column(String(2000))
    issuer: Mapped[str | None] = mapped_column(String(2000))
    client_id: Mapped[str] = mapped_column(Text)  # registration-issued ids can be multi-KB JWTs (0003)
    token_endpoint: Mapped[str | None] = mapped_column(String(2000))
    smart_v1: Mapped[bool] = mapped_column(Boolean, default=False)
    patient_id: Mapped[str | None] = mapped_column(String(200))
    encounter_id: Mapped[str | None] = mapped_column(String(200))
    fhir_user: Mapped[str | None] = mapped_column(String(2000))
    group_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32), default=ConnectionStatus.ACTIVE)
    granted_scopes: Mapped[str | None] = mapped_column(Text)
    sync_frequency_hours: Mapped[int] = mapped_column(Integer, default=24)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_sync_at: Mapped[datetime | None] = mapped_column()
    # Revision 0005: the retention clock of a disconnected connection, and when its synced data was purged.
    disconnected_at: Mapped[datetime | None] = mapped_column()
    data_purged_at: Mapped[datetime | None] = mapped_column()
    # Revision 0012: when a patient's new authorization last took this connection over (None: never).
    reauthorized_at: Mapped[datetime | None] = mapped_column()


class TokenRecord(Base):
    """The encrypted tokens of one connection; ``version`` increases on every write (refresh detection)."""

    __tablename__ = "tokens"

    connection_id: Mapped[str] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    access_token_ct: Mapped[str] = mapped_column(Text)
    refresh_token_ct: Mapped[str | None] = mapped_column(Text)
    id_token_ct: Mapped[str | None] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64))
    token_type: Mapped[str] = mapped_column(String(32), default="Bearer")
    scope: Mapped[str | None] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()
    refresh_expires_at: Mapped[datetime | None] = mapped_column()
    launch_context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)


class OAuthState(Base):
    """A pending authorization (SAL-09): only hashes of the state and browser session are stored."""

    __tablename__ = "oauth_states"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    session_hash: Mapped[str] = mapped_column(String(64))
    code_verifier_ct: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[str | None] = mapped_column(String(200))
    issuer: Mapped[str] = mapped_column(String(2000))
    tenant_id: Mapped[str] = mapped_column(String(64))
    provider_id: Mapped[str] = mapped_column(String(64))
    redirect_uri: Mapped[str | None] = mapped_column(String(2000))
    redirect_target: Mapped[str | None] = mapped_column(String(2000))
    launch: Mapped[str | None] = mapped_column(String(2000))
    scope: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None] = mapped_column()


class AuditEvent(Base):
    """Who did what to which connection; ``detail`` never holds tokens or PHI (enforced in ``audit``)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    connection_id: Mapped[str | None] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """Host-application API keys, stored as SHA-256 hashes only."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class SigningKey(Base):
    """Optional app-managed private_key_jwt keys: encrypted private PEM, public JWK published (SAL-30)."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(200), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    alg: Mapped[str] = mapped_column(String(16))
    private_key_ct: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column()


class NoteOutbox(Base):
    """A draft note waiting to be written back to the EHR (revision 0007; states in ``store.outbox``).

    ``body`` (note text, or base64 PDF) and ``outcome_issues`` (the EHR's words refusing it) are PHI: only this table
    holds them, never an audit event, a log or the warehouse.
    ``version`` grows with every state change, so a run key of id + version names one attempt.
    """

    __tablename__ = "note_outbox"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_note_outbox_tenant_key"),
        Index("ix_note_outbox_state_next", "state", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    connection_id: Mapped[str] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    draft_id: Mapped[str] = mapped_column(String(64))  # DWB-30: the business identifier's value
    patient_id: Mapped[str] = mapped_column(String(64))
    encounter_id: Mapped[str | None] = mapped_column(String(64))
    author_id: Mapped[str | None] = mapped_column(String(64))
    loinc_code: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    body_bytes: Mapped[int] = mapped_column(Integer)
    produced_by: Mapped[str] = mapped_column(String(200))
    doc_status: Mapped[str] = mapped_column(String(16), default="preliminary")
    clinician_approved: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    version: Mapped[int] = mapped_column(Integer, default=1)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_http_status: Mapped[int | None] = mapped_column(Integer)
    reason_code: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    ehr_resource_id: Mapped[str | None] = mapped_column(String(64))
    ehr_version_id: Mapped[str | None] = mapped_column(String(64))
    binary_id: Mapped[str | None] = mapped_column(String(64))
    binary_status_url: Mapped[str | None] = mapped_column(Text)  # 0015: the Binary's 202 job, asked again on resume
    binary_posts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # 0015: Binary POSTs, bounded
    prompt_version: Mapped[str | None] = mapped_column(String(100))  # DWB-83 provenance (revision 0008)
    source_resources: Mapped[list[str] | None] = mapped_column(JSON)  # DWB-83: "Encounter/1", ... (ids, no text)
    provenance_id: Mapped[str | None] = mapped_column(String(64))  # DWB-82: the EHR's Provenance, once created
    # 0009: an earlier POST of this note may have been stored, so a later refusal must not end it ``failed`` unsearched
    maybe_stored: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # 0016: this attempt's POST may have left (committed just before it, reset per attempt): else sent, not searched
    doc_posted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # 0017: the refusal's OperationOutcome with its diagnostics (PHI, as ``body``; connectors.transport.issue_record)
    outcome_issues: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # 0018/0019, a person's confirmed retry: no If-None-Exist on the next POST where it is ignored; searched first
    send_unconditional: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    confirmed_not_in_ehr: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    provenance_due_at: Mapped[datetime | None] = mapped_column()  # 0020 (DWB-82): a Provenance owed, sent from then
    provenance_tries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # 0020: later runs' tries
    provenance_outcome: Mapped[str | None] = mapped_column(String(32))  # 0022: why none is owed (no PHI)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
