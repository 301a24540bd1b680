"""BDX-31 over a vendor's search rules: Epic answers an Observation search that lacks the parameters it requires
(patient with category or code, ``ProviderPlugin.required_search_params``) with no match at all. An ``_id`` search
of the deletion candidates alone is such a search, so its empty answer must not confirm anything gone."""

from __future__ import annotations

from typing import Any

import orjson

from engine import reconcile_deletes
from store.models import Connection
from tests.engine.fake_fhir import FakeFhir, Reply, bundle, outcome, serve
from tests.engine.helpers import SyncWorld, connect_static
from tests.engine.job_runs import sync_type

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
SCOPE = "patient/Patient.rs patient/Observation.rs launch/patient openid"
_JSON = {"Content-Type": "application/fhir+json"}
#: The server declares search-type on Observation: ``_id`` search is what confirms deletions where it is declared.
_METADATA = orjson.dumps(
    {
        "resourceType": "CapabilityStatement",
        "rest": [{"mode": "server", "resource": [{"type": "Observation", "interaction": [{"code": "search-type"}]}]}],
    }
)


def _obs(oid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "meta": {"lastUpdated": "2026-10-15T00:00:00Z"},
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}],
        "code": {"text": "lab"},
        "subject": {"reference": "Patient/p1"},
    }


def _epic(listed: set[str]) -> FakeFhir:
    """Lab Observations lab-1 and lab-2 exist (both readable by id); the laboratory search lists ``listed``; a
    search without a category (the ``_id`` search alone) answers 200 with no match and a warning."""
    fake = FakeFhir()

    def observations(_path: str, query: dict[str, list[str]]) -> Reply:
        category = query.get("category", [""])[0]
        if not category:
            warning = {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "required"}]}
            body = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": warning}]}
            return 200, _JSON, orjson.dumps(body)
        if category != "laboratory":
            return bundle([])
        return bundle([_obs(i) for i in sorted(listed)], last_updated="2026-10-20T00:00:00Z")

    fake.routes["/fhir/Observation"] = observations
    for oid in ("lab-1", "lab-2"):
        fake.routes[f"/fhir/Observation/{oid}"] = lambda _p, _q, oid=oid: (200, _JSON, orjson.dumps(_obs(oid)))
    fake.routes["/fhir/Observation/gone-1"] = lambda _p, _q: outcome(404, "not-found")
    fake.routes["/fhir/metadata"] = lambda _p, _q: (200, _JSON, _METADATA)
    return fake


def _synced_epic_connection(world: SyncWorld, fake: FakeFhir, scope: str) -> str:
    """A patient connection to ``fake`` under Epic's plugin (its search rules), its Observations synced."""
    conn = connect_static(world, fake.fhir_base, patient_id="p1", scope=scope)
    with world.env.db.locked_session() as session:
        row = session.get(Connection, conn)
        assert row is not None
        row.provider_id = "epic"
        session.commit()
    assert sync_type(world, conn, "Observation").error is None
    return conn


def test_an_epic_id_search_lacking_required_parameters_confirms_nothing_bdx31(world: SyncWorld) -> None:
    """The listing lacks lab-2 (a skipped page) and gone-1 (deleted): the ``_id`` search Epic cannot answer is
    not asked; each candidate is read by id instead, lab-2 (200) stays live and gone-1 (404) is tombstoned.
    Before, the empty answer settled both as gone and the live lab-2 was tombstoned."""
    listed = {"lab-1", "lab-2", "gone-1"}
    fake = _epic(listed)
    with serve(fake):
        conn = _synced_epic_connection(world, fake, SCOPE)
        listed -= {"lab-2", "gone-1"}
        report = reconcile_deletes(world.env, conn, "Observation")
    with world.env.warehouse() as wh:
        assert wh.live_ids(conn, "Observation") == {"lab-1", "lab-2"}
    assert report.tombstoned == 1 and report.alive == 1 and report.unconfirmed == 0
    assert not any("_id" in q for q in fake.query_of("/fhir/Observation"))


def test_a_grant_without_read_where_no_id_search_settles_leaves_the_candidates_unconfirmable_bdx31(
    world: SyncWorld,
) -> None:
    """SMART v2 ``patient/Observation.s`` without ``.r`` at Epic, whose Observation search takes no ``_id`` alone:
    nothing can confirm the candidates (no read by id is granted, no ``_id`` search asked). Both stay live and the
    report names them ``unconfirmable`` with the scope the grant lacks, no ``confirm_error``: a standing condition
    of the grant, not a failure. Before, ``confirm_error`` was set and the weekly reconcile op failed every run."""
    listed = {"lab-1", "lab-2", "gone-1"}
    fake = _epic(listed)
    with serve(fake):
        scope = "patient/Patient.rs patient/Observation.s launch/patient openid"
        conn = _synced_epic_connection(world, fake, scope)
        listed -= {"lab-2", "gone-1"}
        report = reconcile_deletes(world.env, conn, "Observation")
    with world.env.warehouse() as wh:
        assert wh.live_ids(conn, "Observation") == {"lab-1", "lab-2", "gone-1"}
    assert (report.tombstoned, report.alive, report.unconfirmed, report.confirm_error) == (0, 0, 2, None)
    assert report.unconfirmable is not None
    assert "patient/Observation.r not granted" in report.unconfirmable, report.unconfirmable
    assert "the EHR takes no _id search of it" in report.unconfirmable
    assert fake.hits("/fhir/Observation/lab-2") == fake.hits("/fhir/Observation/gone-1") == 0


def test_a_read_answering_another_resource_confirms_nothing_bdx31(world: SyncWorld) -> None:
    """The read of candidate lab-2 answers lab-1's copy (a cache or proxy mixing up answers): that shows neither
    that lab-2 lives nor that it is gone. It stays live and unconfirmed, the report names the mix-up, and the
    other candidate (gone-1, 404) is still tombstoned."""
    listed = {"lab-1", "lab-2", "gone-1"}
    fake = _epic(listed)
    with serve(fake):
        conn = _synced_epic_connection(world, fake, SCOPE)
        listed -= {"lab-2", "gone-1"}
        fake.routes["/fhir/Observation/lab-2"] = lambda _p, _q: (200, _JSON, orjson.dumps(_obs("lab-1")))
        report = reconcile_deletes(world.env, conn, "Observation")
    with world.env.warehouse() as wh:
        assert wh.live_ids(conn, "Observation") == {"lab-1", "lab-2"}
    assert (report.tombstoned, report.alive, report.unconfirmed) == (1, 0, 1)
    assert "answered a different resource" in (report.confirm_error or ""), report.confirm_error
