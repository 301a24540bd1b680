"""Protocol edges against a scripted FHIR server: expired paging links, Date-header marks, attachments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import duckdb

from engine import cursors
from engine.attachments import attachments_of
from tests.engine.fake_fhir import FakeFhir, Reply, bundle, document_with, outcome, serve
from tests.engine.helpers import connect_static
from tests.engine.job_runs import sync_type

TYPES = ["Patient", "Observation", "DocumentReference"]


def _obs(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o{i}",
        "meta": {"lastUpdated": "2026-10-01T00:00:00Z", "versionId": "1"},
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/p1"},
    }


def _scripted() -> FakeFhir:
    fake = FakeFhir()
    paging_calls = {"n": 0}

    def patient(_path: str, _q: dict[str, list[str]]) -> Reply:  # no Bundle.meta: the mark must come from Date (BDX-27)
        return bundle([{"resourceType": "Patient", "id": "p1", "meta": {"lastUpdated": "2026-01-01T00:00:00Z"}}])

    def observation(_path: str, _q: dict[str, list[str]]) -> Reply:
        return bundle(
            [_obs(1), _obs(2)], next_url=f"{fake.base_url}/fhir/_page/opaque-token", last_updated="2026-10-20T00:00:00Z"
        )

    def paging(_path: str, _q: dict[str, list[str]]) -> Reply:
        paging_calls["n"] += 1
        return outcome(410, "expired") if paging_calls["n"] == 1 else bundle([_obs(3)])

    def documents(_path: str, _q: dict[str, list[str]]) -> Reply:
        attachments = [
            {"url": "Binary/ok", "contentType": "text/plain"},
            {"url": f"{fake.base_url}/files/report.pdf", "contentType": "application/pdf"},
            {"url": "Binary/big", "contentType": "application/pdf", "size": 10**9},
            {"url": "Binary/exe", "contentType": "application/x-msdownload"},
            {"url": "Binary/lie", "contentType": "text/plain"},
        ]
        doc = document_with(attachments)
        return bundle([doc], last_updated="2026-10-20T00:00:00Z")

    fake.routes.update(
        {
            "/fhir/Patient": patient,
            "/fhir/Observation": observation,
            "/fhir/_page/opaque-token": paging,
            "/fhir/DocumentReference": documents,
            "/fhir/Binary/ok": lambda _p, _q: (200, {"Content-Type": "text/plain; charset=utf-8"}, b"hello"),
            "/files/report.pdf": lambda _p, _q: (200, {"Content-Type": "application/pdf"}, b"%PDF-1.4 test"),
            "/fhir/Binary/big": lambda _p, _q: (200, {"Content-Type": "application/pdf"}, b"x"),
            "/fhir/Binary/exe": lambda _p, _q: (200, {"Content-Type": "application/x-msdownload"}, b"MZ"),
            "/fhir/Binary/lie": lambda _p, _q: (200, {"Content-Type": "application/x-msdownload"}, b"MZ"),
        }
    )
    return fake


def test_expired_next_link_restarts_from_the_mark_bdx29(world):
    with serve(_scripted()) as fake:
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        obs = sync_type(world, conn, "Observation")
    assert obs.error is None, obs.error
    assert (obs.fetched, obs.created, obs.pages) == (3, 3, 2)  # the aborted attempt landed nothing
    assert fake.hits("/fhir/Observation") == 2 and fake.hits("/fhir/_page/opaque-token") == 2
    assert fake.requests[-1][1] == {}  # the next link was followed verbatim, nothing added


def test_mark_falls_back_to_date_header_bdx27(world):
    with serve(_scripted()) as fake:
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        patient = sync_type(world, conn, "Patient")
        observations = sync_type(world, conn, "Observation")
    assert patient.high_water_mark == datetime(2026, 10, 21, 7, 28, tzinfo=UTC)
    assert observations.high_water_mark == datetime(2026, 10, 20, tzinfo=UTC)
    assert cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "Patient") == datetime(
        2026, 10, 21, 7, 28, tzinfo=UTC
    )


def test_attachments_are_capped_type_checked_stored_once_and_linked(world):
    with serve(_scripted()) as fake:
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        docs = sync_type(world, conn, "DocumentReference")
        again = sync_type(world, conn, "DocumentReference", full=True)
    assert (docs.attachments, docs.attachments_failed) == (2, 3)
    assert fake.hits("/fhir/Binary/big") == 0 and fake.hits("/fhir/Binary/exe") == 0  # refused before fetching
    assert fake.hits("/fhir/Binary/ok") == 1 and fake.hits("/files/report.pdf") == 1  # not fetched again
    assert again.attachments == 0
    links = attachments_of(world.env, conn, "DocumentReference", "d1")
    assert {(a.content_type, a.size) for a in links} == {("text/plain", 5), ("application/pdf", 13)}
    for link in links:
        assert world.env.attachments.path_for(link.sha256).read_bytes() in (b"hello", b"%PDF-1.4 test")
    con = duckdb.connect(world.env.warehouse_target, read_only=True)
    try:
        urls = {r[0] for r in con.execute("SELECT url FROM fhir_attachments").fetchall()}
    finally:
        con.close()
    assert urls == {f"{fake.fhir_base}/Binary/ok", f"{fake.base_url}/files/report.pdf"}
