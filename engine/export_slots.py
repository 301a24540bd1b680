"""Export slots: a vendor that runs one Bulk export at a time per client and tenant (Oracle Health, vendors.md §3;
``ProviderPlugin.one_export_per_client``) answers a second concurrent kick-off 429 ``throttled``.

Connections of one client id at one FHIR base (the tenant is in Oracle's base) share a slot. Their runs carry the
slot as the ``ehrsync/export_slot`` run tag, which dagster.yaml limits to one run at once, so the daemon's queue
never starts two of them together. Runs started outside that queue (``ehrsync sync`` in-process) are kept apart at
kick-off instead (``claim_slot``): the kick-off first claims the slot, a row keyed on it (``ExportSlotClaim``) that
one process at a time can insert, and gives it back once the job is saved, when the job, ``polling`` (running on
the EHR), holds the slot in its turn; while either is held, another connection's kick-off stops before asking, with
BulkExportBusyError naming what holds it. A claim whose process is gone, or whose lease its taker stopped renewing
(``engine.export_slot_lease``: another host's process cannot be checked), is taken over. Other vendors have no
slot: neither tag nor claim.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from connectors.errors import BulkExportBusyError
from connectors.fhir import RetryPolicy
from connectors.transport import bounds_of
from engine.connection_info import ConnectionInfo
from engine.environment import SyncEnvironment
from engine.export_slot_lease import CLAIM_LEASE, renewed
from engine.export_slot_tags import export_slot, slot_base
from engine.models import BulkJob, ExportSlotClaim, utcnow
from engine.runs import process_gone
from store import REFRESH_LOCK_TIMEOUT_S, AppDatabase
from store.models import Connection
from store.upserts import conflict_insert

__all__ = ["SlotExport", "claim_slot", "slot_exports"]

_log = logging.getLogger(__name__)


def _spellings(fhir_base: str) -> tuple[str, str]:
    """The base with and without its trailing slash: the stored spellings of one slot's base (``slot_base``)."""
    bare = slot_base(fhir_base)
    return bare, bare + "/"


@dataclass(frozen=True)
class SlotExport:
    """An export of another connection of the slot still ``polling``: it holds the slot."""

    job_id: str
    connection_id: str


def slot_exports(db: AppDatabase, conn: ConnectionInfo, deadline_s: float) -> list[SlotExport]:
    """The exports of other active connections of ``conn``'s slot still polling that are younger than the job deadline
    (an older one is past being waited for: ``bulk_deadline_s``, 24 h from its kick-off)."""
    since = utcnow() - timedelta(seconds=deadline_s)
    with db.session() as session:
        rows = session.execute(
            select(BulkJob.id, BulkJob.connection_id)
            .join(Connection, Connection.id == BulkJob.connection_id)
            .where(
                Connection.provider_id == conn.provider_id,
                Connection.client_id == (conn.client_id or ""),
                Connection.fhir_base.in_(_spellings(conn.fhir_base)),
                Connection.status == "active",
                BulkJob.connection_id != conn.id,
                BulkJob.status == "polling",
                BulkJob.requested_at > since,
            )
            .order_by(BulkJob.requested_at)
        ).all()
    return [SlotExport(row.id, row.connection_id) for row in rows]


def claim_ttl(policy: RetryPolicy | None, request_deadline_s: float | None) -> timedelta:
    """Longer than any kick-off lasts, so no renewal moves a claim's lease past this after its claim: each attempt
    waits at most the longest Retry-After waited (BDX-10) and the grant's refresh lock, then sends a token request
    and the kick-off, each within the request deadline (EHRSYNC_REQUEST_DEADLINE_S; none: counted as 10 min)."""
    policy = policy or RetryPolicy()
    request_s = request_deadline_s if request_deadline_s is not None else 600.0
    attempt_s = policy.retry_after_max_s + REFRESH_LOCK_TIMEOUT_S + 2 * request_s + 60.0
    return timedelta(seconds=policy.max_attempts * attempt_s)


@contextmanager
def claim_slot(
    env: SyncEnvironment, conn: ConnectionInfo, run_id: str, *, lease: timedelta = CLAIM_LEASE
) -> Iterator[None]:
    """Hold ``conn``'s export slot for a kick-off (nothing for a vendor without slots): BulkExportBusyError, before
    any request, while another kick-off of the slot is under way or another connection's export of it polls. The
    claim is a ``lease`` renewed while the kick-off runs (``engine.export_slot_lease``), for ``claim_ttl`` at most."""
    slot = export_slot(conn.provider_id, conn.client_id, conn.fhir_base)
    if slot is None:
        yield
        return
    ttl = claim_ttl(env.retry, (env.bounds or bounds_of(env.http)).deadline_s)
    until = utcnow() + ttl
    token = _claim(env.db, slot, conn, run_id, min(lease, ttl))
    try:
        with renewed(env.db, slot, token, lease, until):
            # Read after the claim is in: a job saved before its own claim was given back is seen here.
            exports = slot_exports(env.db, conn, env.bulk_deadline_s)
            if exports:
                raise _busy(conn.provider_id, f"connection {exports[0].connection_id}", f"export {exports[0].job_id}")
            yield
    finally:
        with env.db.locked_session() as session:
            session.execute(delete(ExportSlotClaim).where(ExportSlotClaim.slot == slot, ExportSlotClaim.token == token))
            session.commit()


def _claim(db: AppDatabase, slot: str, conn: ConnectionInfo, run_id: str, lease: timedelta) -> str:
    """Insert the slot's claim row, expiring a ``lease`` after, or raise BulkExportBusyError naming the live claim that
    holds it; a claim whose process is known gone (``engine.runs.process_gone``), or past the expiry its taker set
    and renews (by the taker's own settings: another host's may differ from this one's), is deleted first (by its own
    token and the expiry read, so of two processes taking it over only one wins the insert, and a renewal landing
    in between keeps the claim: the insert then finds it and the next pass answers busy)."""
    token = uuid.uuid4().hex
    for _ in range(2):
        with db.locked_session() as session:  # SQLite: BEGIN IMMEDIATE, so the read and the insert are one
            held = session.get(ExportSlotClaim, slot)
            if held is not None and (process_gone(held.owner_pid, held.owner_host) or held.expires_at < utcnow()):
                _log.info(
                    "export slot %s: taking over the claim of run %s (its process is gone, or its taker stopped "
                    "renewing it)",
                    slot,
                    held.run_id,
                )
                # only as read: a renewal landing in between (PostgreSQL reads without a lock) keeps its claim
                session.execute(
                    delete(ExportSlotClaim).where(
                        ExportSlotClaim.slot == slot,
                        ExportSlotClaim.token == held.token,
                        ExportSlotClaim.expires_at <= held.expires_at,
                    )
                )
            elif held is not None:
                raise _busy(conn.provider_id, f"connection {held.connection_id}", f"a kick-off (run {held.run_id})")
            row = {"slot": slot, "token": token, "connection_id": conn.id, "run_id": run_id}
            now = utcnow()
            owner = {"owner_pid": os.getpid(), "owner_host": socket.gethostname(), "claimed_at": now}
            owner["expires_at"] = now + lease
            inserted = session.execute(
                conflict_insert(db.dialect, ExportSlotClaim)
                .values(**row, **owner)
                .on_conflict_do_nothing()
                .returning(ExportSlotClaim.token)
            ).first()
            session.commit()
        if inserted is not None:
            return token
    raise _busy(conn.provider_id, "another connection", "a kick-off")


def _busy(provider_id: str, who: str, what: str) -> BulkExportBusyError:
    return BulkExportBusyError(
        f"no export was started: {who} of the same client and FHIR base has {what} in progress, and {provider_id} "
        "runs one export per client and tenant at a time (a second kick-off would be answered 429); _since is "
        "unchanged and a later run exports"
    )
