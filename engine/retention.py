"""Tenant data retention: purge the data of connections disconnected longer than their tenant keeps it.

A tenant's ``data_retention_days`` (NULL: kept until someone purges it) counts from the connection's
``disconnected_at``. ``purge_due`` purges every connection that is due and not purged yet, one at a time through
``engine.purge.purge_connection`` (locked, idempotent, audited with actor ``retention``); a connection that
fails stays due and is tried again by the next run. The maintenance job
(``pipelines/defs/maintenance/retention.py``) runs it daily.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from engine.connection_lock import ConnectionBusyError
from engine.models import utcnow
from engine.purge import PurgeTargets, purge_connection
from store import AppDatabase
from store.models import Connection, ConnectionStatus, Tenant

__all__ = ["MAX_RETENTION_DAYS", "RETENTION_ACTOR", "DuePurge", "RetentionReport", "due_purges", "purge_due"]

_log = logging.getLogger(__name__)
RETENTION_ACTOR = "retention"
MAX_RETENTION_DAYS = 36_500  # a hundred years: longer is "forever", which is NULL


@dataclass(frozen=True)
class DuePurge:
    connection_id: str
    tenant_id: str
    disconnected_at: datetime
    retention_days: int


@dataclass
class RetentionReport:
    """What one retention run did: the connections purged, busy (a run held them) or failed, and the totals."""

    purged: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    totals: Counter[str] = field(default_factory=Counter)

    def counts(self) -> dict[str, int]:
        return {"purged": len(self.purged), "busy": len(self.busy), "failed": len(self.failed), **self.totals}


def due_purges(db: AppDatabase, now: datetime | None = None) -> list[DuePurge]:
    """Disconnected, not yet purged connections whose tenant's retention period has passed, oldest first."""
    when = now or utcnow()
    with db.session() as session:
        rows = session.execute(
            select(Connection.id, Connection.tenant_id, Connection.disconnected_at, Connection.updated_at)
            .add_columns(Tenant.data_retention_days)
            .join(Tenant, Tenant.id == Connection.tenant_id)
            .where(
                Connection.status == ConnectionStatus.DISCONNECTED,
                Connection.data_purged_at.is_(None),
                Tenant.data_retention_days.is_not(None),
            )
        ).all()
    due = [
        DuePurge(str(cid), str(tenant), since or updated, int(days))
        for cid, tenant, since, updated, days in rows
        if (since or updated) + timedelta(days=int(days)) <= when
    ]
    return sorted(due, key=lambda d: (d.disconnected_at, d.connection_id))


def purge_due(targets: PurgeTargets, *, now: datetime | None = None, limit: int | None = None) -> RetentionReport:
    """Purge what is due (at most ``limit`` connections); never raises for one connection's failure."""
    report = RetentionReport()
    for item in due_purges(targets.db, now)[:limit]:
        try:
            done = purge_connection(targets, item.connection_id, actor=RETENTION_ACTOR)
        except ConnectionBusyError:
            report.busy.append(item.connection_id)
            continue
        except Exception as exc:  # one connection's failure must not stop the others
            _log.warning("retention purge of connection %s failed: %s", item.connection_id, type(exc).__name__)
            report.failed.append(item.connection_id)
            continue
        report.purged.append(item.connection_id)
        report.totals.update(done.counts())
    return report
