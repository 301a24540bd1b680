"""``engine.resource_listing.list_resources`` (the read model behind ``GET /api/ehr/resources``) over what a real
sync stored: the production Dagster job in-process against the sandbox, then paging through every live row of
the connection and finding every DocumentReference attachment the sync downloaded."""

from __future__ import annotations

import httpx

from engine.resource_listing import list_resources
from sandbox import SandboxServer
from tests.engine.helpers import SyncWorld, connect_patient
from tests.engine.job_runs import run_sync
from warehouse import open_warehouse

TYPES = ["Patient", "Observation", "DocumentReference"]


def test_pages_of_a_synced_connection_match_the_warehouse_and_link_downloaded_attachments(
    world: SyncWorld, shared_sb: SandboxServer, http: httpx.Client
) -> None:
    conn = connect_patient(world, shared_sb, http=http)
    assert run_sync(world, conn, full=True, types=TYPES).status == "completed"
    target = world.env.warehouse_target
    with open_warehouse(target, read_only=True) as wh:
        rows = wh.iter_rows(
            "SELECT resource_type, id FROM fhir_resources WHERE connection_id = %s AND deleted_at IS NULL", [conn]
        )
        live = sorted((r["resource_type"], r["id"]) for r in rows)
    seen: list[tuple[str, str]] = []
    after = None
    while True:
        page = list_resources(target, conn, fhir_base=shared_sb.fhir_base, after=after, limit=7)
        seen += [(item.resource_type, item.id) for item in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == live  # every live row once, in key order (referenced Practitioners etc. included)
    assert {t for t, _ in seen} >= set(TYPES)
    docs = list_resources(target, conn, fhir_base=shared_sb.fhir_base, resource_type="DocumentReference", limit=200)
    links = [a for item in docs.items for a in item.attachments]
    assert docs.items and links, "the sandbox's notes carry attachments"
    assert all(a.downloaded and a.sha256 and world.env.attachments.contains(a.sha256) for a in links)
    first = docs.items[0]
    assert first.resource["id"] == first.id and first.last_updated is not None and first.version_id
