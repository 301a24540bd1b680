"""An attachment whose ``url`` urllib cannot split (``http://[``) or whose port is no number stopped the whole
DocumentReference landing with a bare ValueError; it is now one refused attachment, named in the log, the others
stored, against a scripted FHIR server over a real socket."""

from __future__ import annotations

from tests.engine.fake_fhir import FakeFhir, Reply, bundle, document_with, serve
from tests.engine.helpers import connect_static
from tests.engine.job_runs import sync_type


def _documents(fake: FakeFhir) -> FakeFhir:
    def documents(_path: str, _q: dict[str, list[str]]) -> Reply:
        urls = ["Binary/ok", "http://[", "http://[::1/x", "https://h:99999/x", "https://h:abc/x"]
        doc = document_with([{"url": url, "contentType": "text/plain"} for url in urls])
        return bundle([doc], last_updated="2026-10-20T00:00:00Z")

    fake.routes.update(
        {
            "/fhir/DocumentReference": documents,
            "/fhir/Binary/ok": lambda _p, _q: (200, {"Content-Type": "text/plain"}, b"hello"),
        }
    )
    return fake


def test_a_malformed_attachment_url_is_refused_and_the_rest_land(world) -> None:
    with serve(_documents(FakeFhir())) as fake:
        conn = connect_static(world, fake.fhir_base, patient_id="p1")
        docs = sync_type(world, conn, "DocumentReference")
    assert docs.error is None, docs.error
    assert (docs.fetched, docs.attachments, docs.attachments_failed) == (1, 1, 4)
    assert fake.hits("/fhir/Binary/ok") == 1
