"""What every later request would meet too stops the step that met it, as a refused grant does: another process
refreshing the grant past the refresh lock's 300 s (``RefreshLockTimeoutError``, SQLite app databases), and a
throttle longer than ehrsync waits (``RateLimitedError``: a 429/503 with a long Retry-After, a spent quota; BDX-10).
Met by the CapabilityStatement read (before, read as "no usable CapabilityStatement", vendor defaults used, and the
type's search then sent into it or waited again), the reads of referenced types and the attachment downloads
(before, each later type or attachment waited again or was sent into the throttle)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from connectors.errors import RateLimitedError
from engine import attachments, references
from engine.attachments import AttachmentRef, store_attachments
from engine.environment import SyncEnvironment
from store import RefreshLockTimeoutError
from tests.engine.helpers import add_fault, connect_patient, sandbox_patients
from tests.engine.job_runs import run_sync

_STOPS = [
    RefreshLockTimeoutError("connection c1: another process has been refreshing its token for over 300s"),
    RateLimitedError("GET /metadata answered HTTP 429", 429, retry_after=3600.0),
]
stops = pytest.mark.parametrize("failure", _STOPS, ids=["refresh-lock-timeout", "long-throttle"])


def _raising(failure: Exception) -> Any:
    def raise_it(*_: Any, **__: Any) -> Any:
        raise failure

    return raise_it


@stops
def test_the_capability_statement_read_stops_instead_of_falling_back_to_vendor_defaults(failure: Exception) -> None:
    client = SimpleNamespace(capabilities=_raising(failure))
    with pytest.raises(type(failure)):
        SyncEnvironment._fetch_capabilities(SimpleNamespace(id="c1"), client)  # type: ignore[arg-type]


@stops
def test_reading_referenced_types_stops_at_the_first_type(failure: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[str] = []

    def land(*args: Any, **_: Any) -> Any:
        tried.append(args[5])
        raise failure

    monkeypatch.setattr(references, "land_by_ids", land)
    monkeypatch.setattr(references, "can_search_by_id", lambda *_: False)
    env = SimpleNamespace(capabilities=lambda *_, **__: None, zone=None, db=None)
    by_type = {"Practitioner": ["p1"], "Organization": ["o1"], "Location": ["l1"]}
    with pytest.raises(type(failure)):
        references._fetch_all(env, SimpleNamespace(id="c1"), None, None, "run", by_type)  # type: ignore[arg-type]
    assert tried == ["Practitioner"]


@stops
def test_storing_attachments_stops_at_the_first_download(
    failure: Exception, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tried: list[str] = []

    def store_one(env: Any, conn: Any, client: Any, ref: AttachmentRef, tmp: Path) -> Any:
        tried.append(ref.resource_id)
        raise failure

    monkeypatch.setattr(attachments, "_store_one", store_one)
    refs = [AttachmentRef("DocumentReference", f"d{n}", f"https://ehr.example/Binary/{n}", None, None) for n in (1, 2)]
    env = SimpleNamespace(zone=SimpleNamespace(root=tmp_path))
    with pytest.raises(type(failure)):
        store_attachments(env, SimpleNamespace(id="c1"), None, refs)  # type: ignore[arg-type]
    assert tried == ["d1"]


def test_a_long_throttle_met_reading_referenced_types_holds_the_run_bdx10(start_sandbox, world, http) -> None:
    """Through the real job: the reference step meets a 429 whose Retry-After (50 min) is past what ehrsync waits.
    It stops there and notes the hold on the run's row, as a type step does, so the run's retries and its next
    steps wait for the time the server named (before, each later referenced type was sent into the throttle, and
    the row had no hold: the retry came after the 5 min backoff)."""
    sb = start_sandbox(patients=1)
    cid = connect_patient(world, sb, http=http, patient_id=sandbox_patients(http, sb)[0])
    add_fault(http, sb, "429", path="/fhir/Practitioner", retry_after="3000", times=None)
    before = datetime.now(UTC)
    run = run_sync(world, cid, types=["Patient", "Encounter"])
    assert not run.result.success and run.record is not None
    assert run.record.not_before is not None and run.record.not_before > before + timedelta(minutes=45), run.record
