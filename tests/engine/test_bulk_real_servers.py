"""Bulk exports against the ways real servers answer that our sandbox did not, until it gained a knob for each:
signed file URLs that answer 403 (or 401 to a request sent without the token) once past their expiry, a status URL
on another origin, and a manifest in pages (``link`` ``next``). Each runs the production engine over real sockets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from sqlalchemy import select

from connectors.fhir._session import FhirSession
from engine import run_bulk_export
from engine.models import BulkJob
from sandbox import SandboxServer
from store.models import Connection
from tests.engine.helpers import SyncWorld, add_fault, connect_backend, content_fingerprint, make_environment

GROUP = "grp0"


def _job_statuses(world: SyncWorld, connection_id: str) -> list[str]:
    with world.env.db.session() as session:
        jobs = session.scalars(select(BulkJob).where(BulkJob.connection_id == connection_id)).all()
        return [j.status for j in sorted(jobs, key=lambda j: j.requested_at)]


def _connection_status(world: SyncWorld, connection_id: str) -> str:
    with world.env.db.session() as session:
        row = session.get(Connection, connection_id)
        assert row is not None
        return str(row.status)


def _clean_content(sb: SandboxServer, root: Path, http: httpx.Client, **settings: Any) -> list[tuple[Any, ...]]:
    """What an undisturbed export of the same sandbox lands, with ``settings`` put back for it."""
    sb.admin.clear_faults()
    if settings:
        sb.admin.settings(**settings)
    clean = make_environment(root / "clean", http=http)
    conn = connect_backend(clean, sb, http=http, group_id=GROUP)
    report = run_bulk_export(clean.env, conn, "clean")
    assert report.status == "completed", report.error
    return content_fingerprint(clean.env.warehouse_target, with_connection=False)


@pytest.mark.parametrize(
    ("status", "requires_token"), [(403, False), (403, True), (401, False)], ids=["403", "403-token", "401"]
)
def test_bdx19_bdx16_files_refused_for_good_rerun_the_export_from_the_same_since(
    start_sandbox: Any, tmp_path: Path, http: httpx.Client, request_log: Any, status: int, requires_token: bool
) -> None:
    """BDX-19: a file answering 403 again and again (a presigned S3/Azure URL past its expiry) means re-running the
    export from the same ``_since``, as 404/410 do. Before, each run resumed the same job and failed on the same
    403 for good. BDX-16: a 401 to a file fetched without the token is the storage host's refusal, not the OAuth
    client's: it neither re-mints the token nor marks the connection ``client_rejected``."""
    sb = start_sandbox(bulk_expired_status=status, requires_access_token=requires_token)
    world = make_environment(tmp_path / "w", http=http)
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "bulk_expired_files")  # the first export's files are past their expiry from the start
    request_log.clear()

    report = run_bulk_export(world.env, conn, "expired")

    assert report.status == "completed", report.error
    assert report.reruns == 1
    assert _job_statuses(world, conn) == ["abandoned", "completed"]
    assert _connection_status(world, conn) == "active"
    assert len(request_log.paths("/oauth/token", method="POST")) == 1, "a refused file re-minted the token"
    assert content_fingerprint(world.env.warehouse_target, with_connection=False) == _clean_content(sb, tmp_path, http)


def test_bdx19_files_refused_on_every_export_fail_by_name_after_the_reruns(
    start_sandbox: Any, world: SyncWorld, http: httpx.Client
) -> None:
    """Re-running is bounded (``bulk_max_reruns``): a host refusing every export's files fails the run loudly, and
    the cursor stays where it was."""
    sb = start_sandbox(bulk_expired_status=403, requires_access_token=False)
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "bulk_expired_files", times=None)
    report = run_bulk_export(world.env, conn, "refused")
    assert report.status == "failed"
    assert report.error is not None and "kept expiring" in report.error, report.error
    assert report.transaction_time is not None
    assert world.env.bulk_max_reruns + 1 == len(_job_statuses(world, conn))
    assert _connection_status(world, conn) == "active"


def test_bdx06_sal40_a_status_url_on_another_origin_fails_at_kickoff_not_on_every_later_run(
    start_sandbox: Any, world: SyncWorld, http: httpx.Client, request_log: Any
) -> None:
    """The token goes only to the FHIR server's origin (SAL-40), so a status URL elsewhere can never be polled. It
    is refused when kick-off names it, before a job is saved: before, the job was saved as ``polling`` and every
    later run resumed it and failed again, never kicking off anew and never reaching the job deadline."""
    sb = start_sandbox()
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    other_origin = sb.base_url.replace("127.0.0.1", "localhost")  # the same server, another origin
    assert other_origin != sb.base_url
    sb.admin.settings(bulk_status_base=other_origin)
    request_log.clear()

    first = run_bulk_export(world.env, conn, "other-origin")
    assert first.status == "failed"
    assert first.error is not None and "status URL on another origin" in first.error, first.error
    assert _job_statuses(world, conn) == []
    assert request_log.paths("/bulk/status") == []

    second = run_bulk_export(world.env, conn, "again")  # kicks off again (and is refused again): nothing to resume
    assert second.status == "failed" and not second.resumed
    assert len(request_log.paths(f"/fhir/Group/{GROUP}/$export")) == 2

    sb.admin.settings(bulk_status_base=None)
    assert run_bulk_export(world.env, conn, "fixed").status == "completed"


def test_bdx12_bdx14_a_paged_manifest_lands_every_page_before_since_moves(
    start_sandbox: Any, tmp_path: Path, http: httpx.Client, request_log: Any
) -> None:
    """A manifest in pages (``link`` with ``relation`` ``next``, Bulk Data 3.0+): every page's files land before the
    export completes and ``transactionTime`` becomes the next ``_since``. Before, only the first page was read and
    the files of the others were never exported again."""
    sb = start_sandbox(bulk_manifest_page_size=2, bulk_lines_per_file=5)
    world = make_environment(tmp_path / "w", http=http)
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    request_log.clear()

    report = run_bulk_export(world.env, conn, "paged")

    assert report.status == "completed", report.error
    pages = [u for u in request_log.paths("/bulk/status") if "/page/" in u.path]
    assert len(pages) >= 2, "the sandbox's manifest has at least three pages"
    assert report.files == len(request_log.paths("/bulk/files"))
    landed = content_fingerprint(world.env.warehouse_target, with_connection=False)
    assert landed == _clean_content(sb, tmp_path, http, bulk_manifest_page_size=None)


def test_bdx08_sal40_a_saved_job_whose_status_url_the_token_may_not_reach_is_failed_not_resumed_forever(
    start_sandbox: Any, world: SyncWorld, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job saved before kick-off checked its status URL (by an earlier version) cannot be polled either: the run
    that finds it marks it failed, so the next run kicks off anew instead of resuming it every time."""
    sb = start_sandbox()
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    sb.admin.settings(bulk_status_base=sb.base_url.replace("127.0.0.1", "localhost"))
    with monkeypatch.context() as patch:  # the kick-off of a version that did not check the status URL
        patch.setattr(FhirSession, "check_token_destination", lambda *_args: None)
        first = run_bulk_export(world.env, conn, "saved-elsewhere")
    assert first.status == "failed" and first.error is not None
    assert first.error.startswith("security_policy: refusing to send the access token"), first.error
    assert _job_statuses(world, conn) == ["failed"]

    sb.admin.settings(bulk_status_base=None)
    second = run_bulk_export(world.env, conn, "after")
    assert second.status == "completed" and not second.resumed, second.error


@pytest.mark.parametrize(
    "named",
    [{"bulk_signed_file_urls": True}, {"bulk_file_url_params": ";jsessionid=5E55104D"}],
    ids=["signed", "jsessionid"],
)
def test_a_signed_file_url_is_stored_without_its_signature(
    start_sandbox: Any, tmp_path: Path, http: httpx.Client, named: dict[str, Any]
) -> None:
    """BDX-23's ``source`` of a Bulk file: a storage host's signed file URL (its query is a credential to the
    export's data until it expires), or one naming a session in its path parameters (``;jsessionid=``, a Java
    server's URL rewriting), is not kept in every landed row's ``source`` nor in the error records: they name the
    file by its path and its id. Before, the path parameters were kept."""
    sb = start_sandbox(**named)
    world = make_environment(tmp_path / "w", http=http)
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    add_fault(http, sb, "bulk_error_file", resource_type="Observation", times=1)
    run_bulk_export(world.env, conn, "signed")
    con = duckdb.connect(str(world.env.warehouse_target), read_only=True)
    try:
        rows = con.execute("SELECT DISTINCT source FROM fhir_resources").fetchall()
        errors = con.execute("SELECT DISTINCT source FROM fhir_errors").fetchall()
    finally:
        con.close()
    sources = [r[0] for r in rows + errors]
    assert rows and errors and all("/bulk/files/" in s for s in sources)
    assert not [s for s in sources if "?" in s or "Signature" in s or ";" in s or "5E55104D" in s]
    assert all(s.rsplit("#", 1)[1].isdigit() for s in sources)  # the file's id keeps two files of one path apart
