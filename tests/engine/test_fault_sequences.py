"""Fault injection (issue 10, "Done when"): for random sequences of server faults, every run either reports success
with exactly a clean run's content, or reports failure; after the faults stop, the warehouse equals a clean run's.

Faults are armed on a real sandbox over a real socket before the first run; kills are a real SIGKILL of a child
process at a named checkpoint (``engine.checkpoints``). Hypothesis draws the sequences; the examples are
derandomized so a CI failure reproduces; set ``EHRSYNC_FAULT_RANDOM=1`` (and ``EHRSYNC_FAULT_EXAMPLES``) to explore.
Arming a fault kind the sandbox does not know fails the test (``POST /admin/faults`` answers 422).
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import run_bulk_export
from tests.engine.helpers import add_fault, connect_backend, connect_patient, content_fingerprint
from tests.engine.helpers import make_environment as _make_environment
from tests.engine.job_runs import run_sync
from tests.engine.test_crash import _run_child

pytestmark = pytest.mark.slow

PAGE_SIZE = 7
MAX_RUNS = 5  # recovery must not need more runs than this once the faults are spent
_SETTINGS = settings(
    max_examples=int(os.environ.get("EHRSYNC_FAULT_EXAMPLES", "6")),
    deadline=None,
    derandomize=not os.environ.get("EHRSYNC_FAULT_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# (kind, options): each is something a real server was seen doing. Counts stay small so that the faults are
# spent within MAX_RUNS runs whatever the retry policy does with them.
BULK_FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("bulk_410", {"path": "/bulk/files"}),  # BDX-19: a file expired between manifest and download
    ("503", {"path": "/bulk/status", "times": 6, "retry_after": "0"}),  # a streak of transient polls
    ("500", {"path": "/bulk/files", "times": 2}),
    ("drop", {"path": "/bulk/files"}),
    ("bulk_truncated", {"path": "/bulk/files"}),  # the connection closed early: a last line cut short
    ("bulk_error_file", {"resource_type": "Observation"}),  # the manifest lists a fatal error for Observation
]
BULK_KILLS = ["bulk.kicked_off", "bulk.manifest_saved", "bulk.file_landed:2", "bulk.file_upserted:3"]

REST_FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("429", {"path": "/fhir/Observation", "retry_after": "0", "times": 2}),
    ("503", {"path": "/fhir/Condition", "retry_after": "0", "times": 2}),
    ("500", {"path": "/fhir/Encounter", "times": 6}),  # beyond the retry policy: that type fails this run
    ("drop", {"path": "/fhir/Observation"}),
    ("expired_token", {"path": "/fhir/Patient"}),
    ("search_no_next", {"path": "/fhir/Observation"}),  # a page claims a larger total but has no next link
    ("search_repeat_next", {"path": "/fhir/Observation"}),  # the next link points back at the same page
]
REST_KILLS = ["rest.page_landed:3", "rest.upserted:2", "rest.cursor_saved:4"]
# REST runs are production's job limited to the types the faults hit (and the resources they reference).
REST_TYPES = ["Patient", "Condition", "Encounter", "Observation"]


@pytest.fixture(scope="module")
def clean(module_sandbox, tmp_path_factory):
    """One undisturbed run of each mode: the content every faulty sequence must end with."""
    with httpx.Client(timeout=30.0) as http:
        bulk_world = make_world(tmp_path_factory.mktemp("clean-bulk"), http)
        bulk_conn = connect_backend(bulk_world, module_sandbox, http=http, group_id="grp0")
        assert run_bulk_export(bulk_world.env, bulk_conn, "clean").status == "completed"
        rest_world = make_world(tmp_path_factory.mktemp("clean-rest"), http)
        rest_conn = connect_patient(rest_world, module_sandbox, http=http)
        assert run_sync(rest_world, rest_conn, types=REST_TYPES).status == "completed"
    return CleanContent(
        bulk=content_fingerprint(bulk_world.env.warehouse_target, with_connection=False),
        rest=content_fingerprint(rest_world.env.warehouse_target, with_connection=False),
    )


class CleanContent(dict[str, list[Any]]):
    """The clean runs' fingerprints, with a short repr (Hypothesis prints the arguments of a failing example)."""

    def __init__(self, **content: list[Any]) -> None:
        super().__init__(content)

    def __repr__(self) -> str:
        return f"<clean content: {', '.join(f'{k}={len(v)} rows' for k, v in self.items())}>"


def make_world(root: Path, http: httpx.Client) -> Any:
    """Small search pages, so that searches page and the paging faults have links to break."""
    return _make_environment(root, http=http, page_size=PAGE_SIZE)


def _run(mode: str, world: Any, conn: str, attempt: int) -> tuple[str, str | None]:
    if mode == "bulk":
        report = run_bulk_export(world.env, conn, f"run-{attempt}")
        return report.status, report.error
    sync = run_sync(world, conn, types=REST_TYPES)
    ok = sync.status == "completed" and not sync.failed_types
    return ("completed" if ok else "failed"), sync.error or str(sync.failed_types or "")


def _exercise(mode: str, sandbox: Any, clean_content: list[Any], faults: list[Any], kill: str | None) -> None:
    sandbox.admin.clear_faults()
    with tempfile.TemporaryDirectory(prefix=f"faults-{mode}-") as tmp, httpx.Client(timeout=30.0) as http:
        world = make_world(Path(tmp) / "world", http)
        if mode == "bulk":
            conn = connect_backend(world, sandbox, http=http, group_id="grp0")
        else:
            conn = connect_patient(world, sandbox, http=http)
        for kind, options in faults:
            add_fault(http, sandbox, kind, **options)
        outcomes: list[tuple[str, str | None]] = []
        if kill is not None:
            child = _run_child(
                Path(tmp) / "world",
                world,
                conn,
                "incremental" if mode == "rest" else mode,
                kill,
                *(["killed-run"] if mode == "bulk" else [",".join(REST_TYPES)]),
            )
            # The fault sequence may end the run before the kill point is reached: both are fine here.
            assert child.returncode in (0, -signal.SIGKILL), child.stderr[-2000:]
        for attempt in range(1, MAX_RUNS + 1):
            status, error = _run(mode, world, conn, attempt)
            outcomes.append((status, error))
            content = content_fingerprint(world.env.warehouse_target, with_connection=False)
            if status == "completed":
                # No run that lost data reports success.
                missing = sorted(set(clean_content) - set(content), key=str)[:5]
                assert content == clean_content, (
                    f"run {attempt} reported success without all data after faults {faults}, kill {kill}: "
                    f"{outcomes}; {len(clean_content) - len(content)} rows short, e.g. {missing}"
                )
                break
        else:
            pytest.fail(f"no recovery within {MAX_RUNS} runs after faults {faults}: {outcomes}")
    sandbox.admin.clear_faults()


@_SETTINGS
@given(
    faults=st.lists(st.sampled_from(BULK_FAULTS), min_size=1, max_size=3, unique_by=lambda f: f[0]),
    kill=st.sampled_from([None, None, *BULK_KILLS]),
)
def test_bulk_fault_sequences_recover_to_a_clean_run(shared_sb, clean, faults, kill):
    """BDX-08/14/19/22, issue 10: error files, truncations, expiries, transient polls and kills never lose data."""
    _exercise("bulk", shared_sb, clean["bulk"], faults, kill)


@_SETTINGS
@given(
    faults=st.lists(st.sampled_from(REST_FAULTS), min_size=1, max_size=3, unique_by=lambda f: f[0]),
    kill=st.sampled_from([None, None, *REST_KILLS]),
)
def test_rest_fault_sequences_recover_to_a_clean_run(shared_sb, clean, faults, kill):
    """BDX-27..32, issue 10: throttling, outages, missing or looping next links and kills never lose data."""
    _exercise("rest", shared_sb, clean["rest"], faults, kill)
