"""Deletion reconciliation (BDX-31): search never reports deletes, so compare the server's ids with ours."""

from __future__ import annotations

import logging
import uuid

from engine.connection_lock import hold_connection
from engine.environment import ConnectionInfo, SyncEnvironment, load_connection
from engine.models import utcnow
from engine.reports import SCOPE_NOT_GRANTED
from engine.search_plans import grant_narrows, search_plans

_log = logging.getLogger(__name__)
ID_PAGE_SIZE = 1000


def reconcile_deletes(
    env: SyncEnvironment, connection_id: str, resource_type: str, *, run_id: str | None = None
) -> int:
    """Tombstone warehouse rows of the type whose ids the server no longer lists; returns how many.

    The whole id listing (``_elements=id``, every page, every vendor search plan) must succeed before anything
    is tombstoned: a partial listing raises and tombstones nothing, so an outage never reads as mass deletion.
    Holds the connection's lock (``hold_connection``) throughout, so a reconcile never runs beside a sync of the
    same connection (a sync landing new ids mid-listing would read as deletions): another holder makes it wait
    ``EHRSYNC_CONNECTION_LOCK_WAIT_SECONDS``, then raise ``ConnectionBusyError``. ``run_id`` names this call in
    the lock file (default ``reconcile-<random>``).
    """
    conn = load_connection(env.db, connection_id)
    with hold_connection(env, connection_id, run_id or f"reconcile-{uuid.uuid4().hex}"):
        return _reconcile(env, conn, resource_type)


def _reconcile(env: SyncEnvironment, conn: ConnectionInfo, resource_type: str) -> int:
    connection_id = conn.id
    scopes = conn.scopes
    if scopes is not None and not (scopes.allows(resource_type, "search") or scopes.allows(resource_type, "read")):
        _log.info("not reconciling %s for %s: %s", resource_type, connection_id, SCOPE_NOT_GRANTED)
        return 0
    if grant_narrows(conn, resource_type):  # the listing would miss the categories not granted: no deletions
        _log.info("not reconciling %s for %s: the grant covers only part of the type", resource_type, connection_id)
        return 0
    server_ids: set[str] = set()
    observed_at = None
    with env.fhir_client(conn) as client:
        for plan in search_plans(conn, resource_type, None, ID_PAGE_SIZE):
            plan["_elements"] = "id"
            for page in client.search_pages(resource_type, plan):
                observed_at = observed_at or page.bundle_meta_last_updated or page.server_date
                server_ids.update(
                    r["id"]
                    for r in page.resources
                    if r.get("resourceType") == resource_type and isinstance(r.get("id"), str)
                )
    with env.warehouse() as wh:
        missing = wh.live_ids(connection_id, resource_type) - server_ids
        if not missing:
            return 0
        count = wh.tombstone(connection_id, resource_type, sorted(missing), observed_at or utcnow())
    _log.info("reconciled %s/%s: %d tombstoned", connection_id, resource_type, count)
    return count
