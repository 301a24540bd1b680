"""Attachment downloads keep the free disk reserve (``EHRSYNC_MIN_FREE_DISK_BYTES``) as Bulk downloads do, against
the sandbox's notes (DocumentReference → Binary) over a real socket. The attachment store shares the state
directory's disk with the landing zone and the app database; before, attachments were written whatever was left,
so an EHR naming many large attachments could fill that disk, and every attachment after the reserve was crossed
was still fetched."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from connectors.errors import InsufficientDiskSpaceError
from engine import cursors
from engine.models import SyncAttachment
from sandbox import SandboxServer
from tests.engine.conftest import RequestLog
from tests.engine.helpers import SyncWorld, connect_patient, sandbox_patients
from tests.engine.job_runs import sync_type


def test_attachments_stop_below_the_free_disk_reserve_and_the_next_run_stores_them(
    shared_sb: SandboxServer, world: SyncWorld, http: httpx.Client, request_log: RequestLog
) -> None:
    patient = sandbox_patients(http, shared_sb)[0]
    conn = connect_patient(world, shared_sb, http=http, patient_id=patient)
    world.env.min_free_disk_bytes = 1 << 60  # an exabyte: no disk has that much free
    request_log.clear()
    with pytest.raises(InsufficientDiskSpaceError, match="EHRSYNC_MIN_FREE_DISK_BYTES"):
        sync_type(world, conn, "DocumentReference")
    assert len(request_log.paths("/fhir/Binary/")) == 1  # the first download stopped the landing
    assert cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "DocumentReference") is None
    assert _stored(world, conn) == 0

    world.env.min_free_disk_bytes = 1
    again = sync_type(world, conn, "DocumentReference")
    assert again.error is None and again.attachments > 0 and again.attachments_failed == 0, again
    assert cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "DocumentReference") is not None
    assert _stored(world, conn) == again.attachments


def _stored(world: SyncWorld, conn: str) -> int:
    with world.env.db.session() as session:
        return len(session.scalars(select(SyncAttachment).where(SyncAttachment.connection_id == conn)).all())
