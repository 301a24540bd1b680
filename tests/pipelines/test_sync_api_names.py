"""The names bulk status copies from the Bulk engine (the auth service may not import it): a rename on either
side fails here, not as a bulk status that silently shows the wrong job."""

from __future__ import annotations

from auth_service.services import sync_bulk
from engine import bulk_state, cursors
from engine.bulk_members import members_stream
from engine.reports import BulkReport


def test_membership_streams_end_with_the_suffix_bulk_status_skips() -> None:
    assert members_stream("g1").endswith(sync_bulk._MEMBERS_STREAM_SUFFIX)
    assert not cursors.bulk_stream("group", "g1").endswith(sync_bulk._MEMBERS_STREAM_SUFFIX)
    assert not cursors.bulk_stream("system", None).endswith(sync_bulk._MEMBERS_STREAM_SUFFIX)


def test_active_job_states_match_the_engine() -> None:
    assert set(sync_bulk._ACTIVE_JOB) == set(bulk_state.ACTIVE)


def test_the_run_summary_names_the_export_job() -> None:
    from engine.bulk_export import _run_counts

    report = BulkReport(run_id="r", connection_id="c")
    report.job_id = "job-1"
    assert _run_counts(report)[sync_bulk._BULK_COUNTS]["job_id"] == "job-1"
