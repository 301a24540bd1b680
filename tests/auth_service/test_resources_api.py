"""``GET /api/ehr/resources``: a connection's synced resources from a real DuckDB / PostgreSQL warehouse, written
through the warehouse's own API (landing + upsert + attachment records, as a sync writes them): tenant-scoped,
keyset-paged exactly once through every row, bad input answered 400, a busy warehouse answered 503."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from store.models import Connection
from tests.auth_service.conftest import AppHandle
from tests.warehouse.conftest import land, resource
from warehouse import AttachmentRef, LandingZone, open_warehouse
from warehouse.postgres_backend import psycopg_conninfo

PATH = "/api/ehr/resources"
FHIR_BASE = "https://ehr.example/fhir"
OBSERVATIONS = 23
DOC_STORED = f"{FHIR_BASE}/Binary/doc-1"


@dataclass
class World:
    handle: AppHandle
    target: str
    key_a: str
    key_b: str
    conn_a: str
    conn_b: str
    tmp: Path

    def get(self, key: str | None = None, **params: Any) -> Any:
        headers = {"X-API-Key": key or self.key_a}
        return self.handle.client.get(PATH, params=params, headers=headers)


def _add_connection(handle: AppHandle, tenant_id: str) -> str:
    with handle.app.state.ctx.db.session() as session, session.begin():
        conn = Connection(tenant_id=tenant_id, provider_id="smart", kind="patient", fhir_base=FHIR_BASE, client_id="a")
        session.add(conn)
        session.flush()
        return conn.id


def _document(rid: str, url: str) -> dict[str, Any]:
    content = [{"attachment": {"contentType": "text/plain", "url": url, "size": 11}}]
    return resource(rid, resource_type="DocumentReference", status="current", content=content)


def _fill(target: str, zone: LandingZone, conn_a: str, conn_b: str) -> None:
    """Tenant A: a patient, 23 observations (one tombstoned afterwards), two documents (one attachment stored,
    one relative link not fetched). Tenant B: one observation that A must never see."""
    with open_warehouse(target) as wh:
        wh.upsert(
            land(zone, [resource("pat0", resource_type="Patient")], connection_id=conn_a, resource_type="Patient")
        )
        observations = [resource(f"obs{i:02d}", status="final") for i in range(OBSERVATIONS + 1)]
        wh.upsert(land(zone, observations, connection_id=conn_a))
        docs = [_document("doc-1", DOC_STORED), _document("doc-2", "Binary/doc-2")]
        wh.upsert(land(zone, docs, connection_id=conn_a, resource_type="DocumentReference"))
        wh.record_attachment(conn_a, DOC_STORED, AttachmentRef("ab" * 32, 11, "text/plain", zone.root / "x"))
        wh.tombstone(conn_a, "Observation", [f"obs{OBSERVATIONS:02d}"], datetime(2027, 1, 1, tzinfo=UTC))
        wh.upsert(land(zone, [resource("secret-obs")], connection_id=conn_b))


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path: Path, make_app: Callable[..., AppHandle]) -> World:
    target = str(tmp_path / "wh.duckdb") if request.param == "duckdb" else request.getfixturevalue("postgres_url")
    handle = make_app(WAREHOUSE_URL=target, WAREHOUSE_READ_WAIT_SECONDS=0.5)
    key_a, key_b = handle.bootstrap("ta"), handle.bootstrap("tb")
    conn_a, conn_b = _add_connection(handle, "ta"), _add_connection(handle, "tb")
    _fill(target, LandingZone(tmp_path / "landing"), conn_a, conn_b)
    return World(handle, target, key_a, key_b, conn_a, conn_b, tmp_path)


def _all_pages(world: World, **params: Any) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        r = world.get(**params, **({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        body = r.json()
        yield body
        cursor = body["nextCursor"]
        if cursor is None:
            return


def test_pages_through_every_live_row_exactly_once(world: World) -> None:
    pages = list(_all_pages(world, connectionId=world.conn_a, limit=4))
    keys = [(i["resourceType"], i["id"]) for p in pages for i in p["items"]]
    expected = sorted(
        [("DocumentReference", "doc-1"), ("DocumentReference", "doc-2"), ("Patient", "pat0")]
        + [("Observation", f"obs{i:02d}") for i in range(OBSERVATIONS)]
    )
    assert keys == expected  # key order, no duplicate, no gap, the tombstoned observation left out
    assert [len(p["items"]) for p in pages] == [4] * 6 + [2]
    first = pages[0]["items"][0]
    assert first["versionId"] == "1" and first["lastUpdated"] == "2026-01-01T00:00:00Z"
    assert first["resource"]["resourceType"] == first["resourceType"] and first["resource"]["id"] == first["id"]


def test_type_filter_and_exact_last_page(world: World) -> None:
    pages = list(_all_pages(world, connectionId=world.conn_a, resourceType="Observation", limit=OBSERVATIONS))
    assert len(pages) == 1 and len(pages[0]["items"]) == OBSERVATIONS  # exactly `limit` rows: no empty extra page
    assert {i["resourceType"] for i in pages[0]["items"]} == {"Observation"}
    assert world.get(connectionId=world.conn_a, resourceType="Condition").json()["items"] == []
    default = world.get(connectionId=world.conn_a).json()
    assert len(default["items"]) == 26 and default["nextCursor"] is None  # default limit 50


def test_attachment_link_and_whether_it_was_downloaded(world: World) -> None:
    body = world.get(connectionId=world.conn_a, resourceType="DocumentReference").json()
    by_id = {i["id"]: i["attachments"] for i in body["items"]}
    assert by_id["doc-1"] == [
        {"url": DOC_STORED, "contentType": "text/plain", "size": 11, "downloaded": True, "sha256": "ab" * 32}
    ]
    assert by_id["doc-2"] == [
        {"url": "Binary/doc-2", "contentType": "text/plain", "size": 11, "downloaded": False, "sha256": None}
    ]
    patient = world.get(connectionId=world.conn_a, resourceType="Patient").json()["items"][0]
    assert patient["attachments"] == []


def test_tenant_isolation(world: World) -> None:
    """Another tenant's connection is not found, with or without a cursor taken from its owner."""
    r = world.get(world.key_a, connectionId=world.conn_b)
    assert r.status_code == 404 and r.json()["error"] == "not_connected"
    assert "secret-obs" not in r.text
    own = world.get(world.key_b, connectionId=world.conn_b).json()
    assert [i["id"] for i in own["items"]] == ["secret-obs"]
    cursor = world.get(connectionId=world.conn_a, limit=1).json()["nextCursor"]
    r = world.get(world.key_b, connectionId=world.conn_a, cursor=cursor)
    assert r.status_code == 404
    assert world.handle.client.get(PATH, params={"connectionId": world.conn_a}).status_code == 401


def _tampered(cursor: str) -> str:
    payload, _, sig = cursor.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["a"] = ["Observation", "obs10"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{forged}.{sig}"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({}, "connectionId"),
        ({"connectionId": "bad id!"}, "connectionId"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"resourceType": "observation"}, "resourceType"),
        ({"resourceType": "Obs'; DROP"}, "resourceType"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": ""}, "cursor"),
        ({"cursor": "x" * 3000}, "cursor"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(world: World, params: dict[str, str], named: str) -> None:
    if "connectionId" not in params and named != "connectionId":
        params = {"connectionId": world.conn_a, **params}
    r = world.get(**params)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request" and f"'{named}'" in r.json()["message"]
    assert "Traceback" not in r.text


def test_cursor_is_tamper_evident_and_bound_to_its_query(world: World) -> None:
    cursor = world.get(connectionId=world.conn_a, limit=2).json()["nextCursor"]
    r = world.get(connectionId=world.conn_a, cursor=_tampered(cursor))
    assert r.status_code == 400 and "altered" in r.json()["message"]
    r = world.get(connectionId=world.conn_a, resourceType="Observation", cursor=cursor)
    assert r.status_code == 400 and "another query" in r.json()["message"]
    r = world.handle.client.get(
        f"{PATH}?connectionId={world.conn_a}&limit=1&limit=2", headers={"X-API-Key": world.key_a}
    )
    assert r.status_code == 400 and "'limit'" in r.json()["message"]


_HOLD_WRITER = textwrap.dedent(
    """
    import sys
    from warehouse import open_warehouse
    wh = open_warehouse(sys.argv[1])
    with wh.batch():  # what a sync holds while it merges a burst of landed files
        print("holding", flush=True)
        sys.stdin.readline()
    """
)


def _hold_duckdb(target: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITER, target], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def test_busy_warehouse_answers_503_with_retry_after(world: World) -> None:
    """A sync holding the warehouse (DuckDB: another process's write batch; PostgreSQL: a migration's exclusive
    table lock) past the short wait is a 503 with Retry-After, never a hang or a 500; released, it answers."""
    if world.target.startswith("postgresql"):
        holder = psycopg.connect(psycopg_conninfo(world.target))
        holder.execute("LOCK TABLE fhir_resources IN ACCESS EXCLUSIVE MODE")
        release: Callable[[], None] = holder.close
    else:
        proc = _hold_duckdb(world.target)

        def release() -> None:
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert proc.wait(timeout=30) == 0

    try:
        r = world.get(connectionId=world.conn_a)
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "warehouse_busy" and r.headers["Retry-After"] == "5"
        assert r.json()["retryAfterSeconds"] == 5
    finally:
        release()
    assert world.get(connectionId=world.conn_a).status_code == 200


def test_nothing_synced_yet_is_an_empty_page(make_app: Callable[..., AppHandle], tmp_path: Path) -> None:
    handle = make_app(WAREHOUSE_URL=str(tmp_path / "never-created.duckdb"))
    key = handle.bootstrap("ta")
    conn = _add_connection(handle, "ta")
    r = handle.client.get(PATH, params={"connectionId": conn}, headers={"X-API-Key": key})
    assert r.status_code == 200 and r.json() == {
        "connectionId": conn,
        "resourceType": None,
        "items": [],
        "nextCursor": None,
    }
    assert not (tmp_path / "never-created.duckdb").exists()  # a read never creates the warehouse


@pytest.mark.postgres
def test_postgres_without_tables_is_empty_and_unreachable_is_503(
    make_app: Callable[..., AppHandle], postgres_url: str
) -> None:
    handle = make_app(WAREHOUSE_URL=postgres_url)
    key = handle.bootstrap("ta")
    conn = _add_connection(handle, "ta")
    r = handle.client.get(PATH, params={"connectionId": conn}, headers={"X-API-Key": key})
    assert r.status_code == 200 and r.json()["items"] == []
    down = make_app(WAREHOUSE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    key = down.bootstrap("ta")
    conn = _add_connection(down, "ta")
    r = down.client.get(PATH, params={"connectionId": conn}, headers={"X-API-Key": key})
    assert r.status_code == 503 and r.json()["error"] == "warehouse_unavailable"
    assert r.headers["Retry-After"] == "30" and "postgres@" not in r.text


def test_large_resources_cut_a_page_early(world: World) -> None:
    """A page stops at about 8 MB of JSON whatever the limit; the next page continues right after it."""
    big = "x" * (3 * 1024 * 1024)
    zone = LandingZone(world.tmp / "big-landing")
    notes = [resource(f"big{i}", resource_type="Basic", text={"div": big}) for i in range(4)]
    with open_warehouse(world.target) as wh:
        wh.upsert(land(zone, notes, connection_id=world.conn_a, resource_type="Basic"))
    pages = list(_all_pages(world, connectionId=world.conn_a, resourceType="Basic", limit=10))
    assert [[i["id"] for i in p["items"]] for p in pages] == [["big0", "big1"], ["big2", "big3"]]


def test_openapi_documents_the_operation(world: World) -> None:
    spec = world.handle.client.get("/openapi.json").json()
    op = spec["paths"][PATH]["get"]
    assert [p["name"] for p in op["parameters"]] == ["connectionId", "resourceType", "limit", "cursor"]
    assert {"200", "400", "404", "503"} <= set(op["responses"])


def test_numbers_are_served_exactly_as_the_ehr_wrote_them(world: World) -> None:
    """A FHIR decimal keeps its precision (``7.10`` is not ``7.1``) and may hold more digits than a double: the API
    sends each resource as stored, not parsed and written again."""
    conn = _add_connection(world.handle, "ta")
    exact = {"value": orjson.Fragment(b"7.10"), "unit": "mmol/L"}
    big = orjson.Fragment(b"12345678901234567890.123")
    observation = resource("obs-exact", status="final", valueQuantity=exact, extension=[{"valueDecimal": big}])
    with open_warehouse(world.target) as wh:
        wh.upsert(land(LandingZone(world.tmp / "exact"), [observation], connection_id=conn))
    r = world.get(connectionId=conn)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert b'"value":7.10' in r.content.replace(b" ", b"")
    assert b"12345678901234567890.123" in r.content
    [item] = r.json()["items"]
    assert item["resource"]["id"] == "obs-exact" and item["id"] == "obs-exact"
