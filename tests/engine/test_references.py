"""Referenced Practitioner/Organization/... fetched in ``_id`` batches where server and grant allow, read one by
one otherwise; against a scripted server, because real servers differ exactly here (some ignore a list of ids,
some refuse the search, some do not declare it)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from engine import references
from engine.connection_info import load_connection
from engine.references import ID_BATCH, fetch_references
from store.crypto import TokenCipher
from store.models import Connection
from store.provider_configs import save_provider_config
from tests.engine.fake_fhir import FakeFhir, Reply, bundle, outcome, serve
from tests.engine.helpers import SyncWorld, connect_static

SEARCH_TYPE = [{"code": "read"}, {"code": "search-type"}]


def _practitioner(rid: str) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": rid, "meta": {"lastUpdated": "2026-10-01T00:00:00Z"}}


def _capability(interactions: list[dict[str, str]]) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [{"mode": "server", "resource": [{"type": "Practitioner", "interaction": interactions}]}],
        }
    )


def _server(
    ids_on_server: set[str], *, interactions: list[dict[str, str]] = SEARCH_TYPE, search: str = "honours"
) -> FakeFhir:
    """``search``: ``honours`` the id list, ``ignores`` it (empty result), ``refuses`` it (400), ``lists`` the
    whole directory page by page whatever was asked, writes its one match as a ``bare`` object (a naive
    XML-to-JSON converter's ``entry``: not a FHIR JSON Bundle), or gives its one match an ``array_id``."""
    fake = FakeFhir()

    def search_route(_p: str, query: dict[str, list[str]]) -> Reply:
        if search == "refuses":
            return outcome(400, "not-supported")
        if search == "ignores":
            return bundle([])
        if search == "lists":
            return bundle([_practitioner("someone-else")], next_url=f"{fake.base_url}/fhir/directory-page-2")
        asked = query["_id"][0].split(",")
        if search == "bare":
            page = {"resourceType": "Bundle", "type": "searchset", "entry": {"resource": _practitioner(asked[0])}}
            return 200, {"Content-Type": "application/fhir+json"}, orjson.dumps(page)
        if search == "array_id":
            return bundle([{**_practitioner(asked[0]), "id": [asked[0]]}])
        return bundle([_practitioner(i) for i in asked if i in ids_on_server])

    def read_route(path: str, _q: dict[str, list[str]]) -> Reply:
        return 200, {"Content-Type": "application/fhir+json"}, orjson.dumps(_practitioner(path.rsplit("/", 1)[1]))

    fake.routes["/fhir/metadata"] = lambda _p, _q: (
        200,
        {"Content-Type": "application/fhir+json"},
        _capability(interactions),
    )
    fake.routes["/fhir/Practitioner"] = search_route
    for rid in ids_on_server:
        fake.routes[f"/fhir/Practitioner/{rid}"] = read_route
    return fake


def _fetch(world: SyncWorld, fake: FakeFhir, wanted: list[str], scope: str = "patient/*.rs") -> Any:
    conn = load_connection(world.env.db, connect_static(world, fake.fhir_base, patient_id="p1", scope=scope))
    with world.env.warehouse() as wh, world.env.fhir_client(conn) as client:
        return fetch_references(world.env, conn, client, wh, "run-1", [f"Practitioner/{i}" for i in wanted])[
            "Practitioner"
        ]


def _searches(fake: FakeFhir) -> list[list[str]]:
    return [q["_id"][0].split(",") for q in fake.query_of("/fhir/Practitioner")]


def _reads(fake: FakeFhir) -> list[str]:
    return sorted(p.rsplit("/", 1)[1] for p, _ in fake.requests if p.startswith("/fhir/Practitioner/"))


def test_ids_are_fetched_in_batches_and_a_missing_one_is_read_to_tell_not_found(world: SyncWorld) -> None:
    present = {f"pr{i:03d}" for i in range(120)}
    with serve(_server(present)) as fake:
        report = _fetch(world, fake, [*sorted(present), "gone"])
    assert [len(batch) for batch in _searches(fake)] == [ID_BATCH, ID_BATCH, 21]
    assert _reads(fake) == ["gone"]  # the only id no search returned; the server says 404
    assert (report.fetched, report.not_found, report.created) == (120, 1, 120)


@pytest.mark.parametrize("search", ["ignores", "refuses"])
def test_a_server_that_ignores_or_refuses_the_id_list_loses_nothing(world: SyncWorld, search: str) -> None:
    present = {f"pr{i:03d}" for i in range(60)}
    with serve(_server(present, search=search)) as fake:
        report = _fetch(world, fake, sorted(present))
    assert report.fetched == report.created == 60 and report.not_found == 0
    assert _reads(fake) == sorted(present)
    # a refused search is not asked again for the next batch; an ignored list is (it may be per batch)
    assert len(_searches(fake)) == (1 if search == "refuses" else 2)


def test_a_server_listing_its_whole_directory_is_not_paged_through(world: SyncWorld) -> None:
    """A server that ignores ``_id`` and pages through every Practitioner it has: the first page gives it away
    (an id not asked for), batching stops for the type and the ids are read one by one."""
    present = {f"pr{i:03d}" for i in range(60)}
    with serve(_server(present, search="lists")) as fake:
        report = _fetch(world, fake, sorted(present))
    assert len(_searches(fake)) == 1 and fake.hits("/fhir/directory-page-2") == 0
    assert _reads(fake) == sorted(present) and report.fetched == report.created == 60


def test_an_id_search_answer_that_cannot_be_read_falls_back_to_reads(world: SyncWorld) -> None:
    """A page that is no readable searchset (``entry`` a bare object, BDX-29) says nothing about the ids: they are
    read one by one, as when the search is refused, instead of failing the type (its references queued for good)."""
    present = {f"pr{i:03d}" for i in range(60)}
    with serve(_server(present, search="bare")) as fake:
        report = _fetch(world, fake, sorted(present))
    assert report.error is None and report.fetched == report.created == 60
    assert _reads(fake) == sorted(present) and len(_searches(fake)) == 1  # not asked again for the next batch


def test_an_id_search_match_whose_id_is_not_a_string_falls_back_to_reads(world: SyncWorld) -> None:
    """A match whose ``id`` is a JSON array is no id asked for: the ids are read one by one. Before, testing it
    against the set of ids asked for raised TypeError (unhashable), a traceback out of the references step (and out
    of a reconciliation's delete confirmation) instead of a fallback."""
    present = {f"pr{i:03d}" for i in range(60)}
    with serve(_server(present, search="array_id")) as fake:
        report = _fetch(world, fake, sorted(present))
    assert report.error is None and report.fetched == report.created == 60
    assert _reads(fake) == sorted(present) and len(_searches(fake)) == 1


def test_no_search_without_search_type_in_the_capability_statement(world: SyncWorld) -> None:
    with serve(_server({"a", "b"}, interactions=[{"code": "read"}])) as fake:
        report = _fetch(world, fake, ["a", "b"])
    assert _searches(fake) == [] and _reads(fake) == ["a", "b"] and report.fetched == 2


def test_no_search_when_the_grant_allows_read_only(world: SyncWorld) -> None:
    """SMART v2 separates read (``r``) from search (``s``): ``Practitioner.r`` alone means reads by id."""
    with serve(_server({"a", "b"})) as fake:
        report = _fetch(world, fake, ["a", "b"], scope="patient/Patient.rs patient/Practitioner.r")
    assert _searches(fake) == [] and _reads(fake) == ["a", "b"] and report.fetched == 2


def test_athena_id_searches_carry_ah_practice(world: SyncWorld) -> None:
    """vendors.md §6: ``ah-practice`` on every athenahealth search, the reference step's ``_id`` batches too (the
    plugin's rule, as in its search plans). The scripted server refuses a search without it, as athenahealth
    would; with it every id comes from the batch searches and none is read one by one."""
    present = {f"a-1.E-{i}" for i in range(60)}
    practice = "Organization/a-1.Practice-195900"
    fake = _server(present)
    honours = fake.routes["/fhir/Practitioner"]

    def scoped(path: str, query: dict[str, list[str]]) -> Reply:
        return honours(path, query) if query.get("ah-practice") == [practice] else outcome(400, "required")

    fake.routes["/fhir/Practitioner"] = scoped
    with serve(fake):
        stored = load_connection(world.env.db, connect_static(world, fake.fhir_base, patient_id="p1"))
        config = {"fhirBaseUrl": fake.fhir_base, "clientId": "c", "practiceId": "195900"}
        conn = replace(stored, provider_id="athena", provider_config=config)
        with world.env.warehouse() as wh, world.env.fhir_client(conn) as client:
            refs = [f"Practitioner/{i}" for i in sorted(present)]
            report = fetch_references(world.env, conn, client, wh, "run-1", refs)["Practitioner"]
    queries = fake.query_of("/fhir/Practitioner")
    assert len(queries) == 2 and all(q["ah-practice"] == [practice] for q in queries)
    assert _reads(fake) == [] and report.fetched == report.created == 60


def test_batch_size_keeps_the_query_short() -> None:
    longest_id = "x" * 64  # FHIR ids are at most 64 characters
    assert len(",".join([longest_id] * references.ID_BATCH)) < 4000


def test_athena_config_stored_with_a_key_id_still_builds_its_searches(world: SyncWorld) -> None:
    """The store keeps members of its own (``kid`` is stored as ``key_id``, ``jwksUrl`` as ``jku``); athena's config
    schema refuses unknown members, so before the engine kept only what the schema knows, every athena search plan
    failed with ``key_id: Extra inputs are not permitted`` (found while fixing ``ah-practice``)."""
    conn_id = connect_static(world, "https://athena.example.org/fhir/r4", patient_id="p1")
    with world.env.db.locked_session() as session:
        row = session.get(Connection, conn_id)
        assert row is not None
        row.provider_id = "athena"
        save_provider_config(
            session,
            TokenCipher(world.cipher_key),
            tenant_id=str(row.tenant_id),
            provider_id="athena",
            config={
                "fhirBaseUrl": "https://athena.example.org/fhir/r4",
                "clientId": "c",
                "practiceId": "195900",
                "kid": "key-1",
                "jwksUrl": "https://app.example.org/.well-known/jwks.json",
            },
        )
        session.commit()
    conn = load_connection(world.env.db, conn_id)
    assert conn.provider_config is not None and "key_id" not in conn.provider_config
    [plan] = conn.provider.search_plans("Condition", "p1", config=conn.provider_config)
    assert plan["ah-practice"] == "Organization/a-1.Practice-195900"
