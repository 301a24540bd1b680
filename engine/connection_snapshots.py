"""What the sensors need to know about each connection, read from the app database in one query.

Detached dataclasses, so sensor logic is planned by pure functions and tested without a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import inspect, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from connectors.errors import ConfigurationError
from engine.errors import ConnectionNotFoundError, ConnectionNotSyncableError
from engine.export_slot_tags import export_slot
from store import AppDatabase
from store.database import database_error_text
from store.models import Connection, Tenant

__all__ = [
    "BULK_KINDS",
    "NO_PATIENT",
    "NO_PATIENT_WHY",
    "ConnectionSnapshot",
    "lacks_patient",
    "read_connection",
    "read_connections",
    "reconcilable_connection",
    "syncable_connection",
    "unreadable_database_error",
]

BULK_KINDS = frozenset({"backend", "group"})
# Statuses that keep a partition: history stays browsable while a person re-authorizes or an admin re-enables.
_PARTITIONED_STATUSES = frozenset({"active", "needs_reauth", "disabled", "client_rejected", "token_undecryptable"})
# Statuses whose queued and running syncs are stopped: nobody wants them to touch the EHR any more.
_STOPPED_STATUSES = frozenset({"disconnected", "disabled"})
#: Why a connection never syncs by design, whatever its status: a patient-kind connection without a patient (SAL-15:
#: a clinician's EHR launch with no patient in context) files notes naming their patient, but a REST sync searches
#: one patient's compartment.
NO_PATIENT = "no_patient"
NO_PATIENT_WHY = (
    "has no patient (a clinician's sign-in with no patient in context): it files notes, but a sync needs a patient"
)


def lacks_patient(kind: str, patient_id: str | None) -> bool:
    """A patient-kind connection without a patient: never synced, never partitioned (its notes still go out)."""
    return kind not in BULK_KINDS and not patient_id


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class ConnectionSnapshot:
    """One ``connections`` row as the scheduler sees it; the partition key is ``id``."""

    id: str
    tenant_id: str
    provider_id: str
    kind: str
    status: str
    sync_frequency_hours: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_sync_at: datetime | None = None
    tenant_name: str = ""  # the practice's name (never a patient's): run tags and metadata show it
    patientless: bool = False  # a patient-kind connection without a patient (``lacks_patient``)
    export_slot: str | None = None  # a Bulk connection of a one-export-per-client vendor: its slot (run tag)
    reauthorized_at: datetime | None = None  # a patient's new authorization last took it over (revision 0012)

    @property
    def is_bulk(self) -> bool:
        """Backend-services and group connections sync by Bulk ``$export``, patients by REST search."""
        return self.kind in BULK_KINDS

    @property
    def keeps_partition(self) -> bool:
        """Its key stays in its set: a sync may run for it, now or once a person acts (none without a patient)."""
        return self.status in _PARTITIONED_STATUSES and not self.patientless

    @property
    def syncable(self) -> bool:
        return self.status == "active" and not self.patientless

    @property
    def not_syncable_why(self) -> str | None:
        """Why no sync may run for it now, as an operator reads it (None: it may)."""
        if self.patientless:
            return f"connection {self.id} {NO_PATIENT_WHY}"
        if self.status != "active":
            return f"connection {self.id} is {self.status}, not active"
        return None

    @property
    def stops_runs(self) -> bool:
        return self.status in _STOPPED_STATUSES

    @classmethod
    def of(cls, row: Connection, tenant_name: str | None = None) -> ConnectionSnapshot:
        return cls(
            id=str(row.id),
            tenant_id=str(row.tenant_id) if row.tenant_id is not None else "",
            provider_id=str(row.provider_id),
            kind=str(row.kind),
            status=str(row.status),
            sync_frequency_hours=row.sync_frequency_hours,
            created_at=_aware(row.created_at),
            updated_at=_aware(row.updated_at),
            last_sync_at=_aware(row.last_sync_at),
            tenant_name=tenant_name or "",
            patientless=lacks_patient(str(row.kind), row.patient_id),
            export_slot=export_slot(str(row.provider_id), row.client_id, str(row.fhir_base))
            if str(row.kind) in BULK_KINDS
            else None,
            reauthorized_at=_aware(row.reauthorized_at),
        )


def unreadable_database_error(db: AppDatabase, exc: Exception) -> ConfigurationError:
    """A typed error for a database that cannot be read: not migrated (say how to fix it) or unreachable."""
    try:
        migrated = inspect(db.engine).has_table(Connection.__tablename__)
    except (OperationalError, ProgrammingError):
        migrated = True  # cannot even inspect it: the database itself is the problem, not its schema
    if not migrated:
        return ConfigurationError("app database has no connections table: run `ehrsync db migrate` first")
    return ConfigurationError(database_error_text(exc))


def read_connections(db: AppDatabase) -> list[ConnectionSnapshot]:
    """Every connection, ordered by id (a small table: one row per authorized patient or backend client)."""
    try:
        with db.session() as session:
            query = select(Connection, Tenant.name).outerjoin(Tenant, Tenant.id == Connection.tenant_id)
            rows = session.execute(query.order_by(Connection.id)).all()
            return [ConnectionSnapshot.of(row, name) for row, name in rows]
    except (OperationalError, ProgrammingError) as exc:
        raise unreadable_database_error(db, exc) from exc


def read_connection(db: AppDatabase, connection_id: str) -> ConnectionSnapshot:
    """One connection; ``ConnectionNotFoundError`` names the id, ``ConfigurationError`` an unusable database."""
    try:
        with db.session() as session:
            row = session.get(Connection, connection_id)
            # the tenant's name only: its settings are the Bulk switch's to read (engine.bulk_switch), which names
            # a hand-edited row that is not JSON; loading the whole row here raised a bare JSONDecodeError first
            name = session.scalar(select(Tenant.name).where(Tenant.id == row.tenant_id)) if row is not None else None
            snapshot = ConnectionSnapshot.of(row, name) if row is not None else None
    except (OperationalError, ProgrammingError) as exc:
        raise unreadable_database_error(db, exc) from exc
    if snapshot is None:
        raise ConnectionNotFoundError(f"connection {connection_id!r} not found")
    return snapshot


def syncable_connection(db: AppDatabase, connection_id: str) -> ConnectionSnapshot:
    """The connection a sync may run for, or the typed refusal (not found, not syncable) before any run starts;
    ``ehrsync sync`` asks before it loads Dagster, ``run_sync_now`` again before it runs."""
    conn = read_connection(db, connection_id)
    if conn.not_syncable_why is not None:  # refused before any run: none fails, no failure streak
        raise ConnectionNotSyncableError(conn.not_syncable_why)
    return conn


def reconcilable_connection(db: AppDatabase, connection_id: str) -> ConnectionSnapshot:
    """The patient connection deletions may be reconciled for (BDX-31), or the typed refusal (as above)."""
    conn = read_connection(db, connection_id)
    if conn.patientless:
        raise ConnectionNotSyncableError(conn.not_syncable_why or connection_id)
    if not conn.syncable or conn.is_bulk:
        raise ConnectionNotSyncableError(
            f"connection {connection_id} cannot be reconciled by REST ({conn.status}, bulk={conn.is_bulk})"
        )
    return conn
