"""Scripted searchset servers for tests/engine/test_search_completeness*.py: what real EHRs were seen doing
(offset paging over live data, error outcomes in a 200 searchset, a ``_count`` maximum answered with 400/422)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from engine import cursors
from tests.engine.fake_fhir import FakeFhir, Reply
from tests.engine.helpers import SyncWorld

BUNDLE_TIME = "2026-10-20T00:00:00Z"
Store = dict[str, dict[str, Any]]


def obs(i: int, updated: str | None = None) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o{i}",
        "meta": {"lastUpdated": updated or f"2026-10-{i:02d}T00:00:00Z", "versionId": "1"},
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/p1"},
    }


def searchset(
    resources: list[dict[str, Any]],
    *,
    next_url: str | None = None,
    total: int | None = None,
    outcomes: list[dict[str, Any]] | None = None,
) -> Reply:
    body: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "meta": {"lastUpdated": BUNDLE_TIME}}
    if total is not None:
        body["total"] = total
    if next_url:
        body["link"] = [{"relation": "next", "url": next_url}]
    body["entry"] = [{"resource": r, "search": {"mode": "match"}} for r in resources] + [
        {"resource": o, "search": {"mode": "outcome"}} for o in outcomes or []
    ]
    return 200, {"Content-Type": "application/fhir+json"}, orjson.dumps(body)


def operation_outcome(severity: str, code: str, diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def in_bounds(query: dict[str, list[str]], updated: str) -> bool:
    """``_lastUpdated`` with ``gt``/``ge``/``lt``/``le``, as a real server applies it."""
    when = datetime.fromisoformat(updated)
    tests: dict[str, Callable[[datetime, datetime], bool]] = {
        "gt": lambda a, b: a > b,
        "ge": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "le": lambda a, b: a <= b,
    }
    return all(tests[v[:2]](when, datetime.fromisoformat(v[2:])) for v in query.get("_lastUpdated", []))


def windowed(query: dict[str, list[str]]) -> bool:
    return len(query.get("_lastUpdated", [])) == 2


def capability_statement(_path: str, _q: dict[str, list[str]]) -> Reply:
    """Declares ``_lastUpdated`` for Observation, so incremental runs use it (and recovery may split windows)."""
    params = [{"name": "_lastUpdated", "type": "date"}, {"name": "patient", "type": "reference"}]
    resource = {"type": "Observation", "interaction": [{"code": "search-type"}], "searchParam": params}
    body = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{"mode": "server", "resource": [resource]}],
    }
    return 200, {"Content-Type": "application/fhir+json"}, orjson.dumps(body)


def fake_server() -> FakeFhir:
    fake = FakeFhir()
    fake.routes["/fhir/metadata"] = capability_statement
    return fake


class OffsetServer:
    """A live-query server paging by offset (no snapshot), as many vendor servers do: order (lastUpdated, id),
    ``size`` matches a page, ``total`` from the current state. ``between_pages`` runs before a page past the first
    (an update the EHR makes while the client pages) as long as ``shifts`` lasts (None: always); windowed
    searches are never disturbed when ``spare_windows``."""

    def __init__(self, fake: FakeFhir, count: int = 4, size: int = 2) -> None:
        self.fake = fake
        self.store: Store = {o["id"]: o for o in (obs(i) for i in range(1, count + 1))}
        self.size = size
        self.between_pages: Callable[[Store], None] | None = None
        self.shifts: int | None = 1
        self.spare_windows = False

    def route(self, _path: str, query: dict[str, list[str]]) -> Reply:
        offset = int(query.get("_getpagesoffset", ["0"])[0])
        disturbed = offset > 0 and not (self.spare_windows and windowed(query))
        if disturbed and self.between_pages is not None and (self.shifts is None or self.shifts > 0):
            self.between_pages(self.store)
            self.shifts = None if self.shifts is None else self.shifts - 1
        found = sorted(
            (r for r in self.store.values() if in_bounds(query, r["meta"]["lastUpdated"])),
            key=lambda r: (r["meta"]["lastUpdated"], r["id"]),
        )
        page = found[offset : offset + self.size]
        if "id" in query.get("_elements", []):
            page = [{"resourceType": r["resourceType"], "id": r["id"]} for r in page]
        nxt = None
        if offset + self.size < len(found):
            keep = "&".join(f"{k}={v}" for k, vs in sorted(query.items()) if k != "_getpagesoffset" for v in vs)
            nxt = f"{self.fake.base_url}/fhir/Observation?{keep}&_getpagesoffset={offset + self.size}"
        return searchset(page, next_url=nxt, total=len(found))


def touch_first(store: Store) -> None:
    """The EHR updates the oldest match: it moves to the end, every later match slides one place forward."""
    first = min(store.values(), key=lambda r: (r["meta"]["lastUpdated"], r["id"]))
    store[first["id"]] = {**first, "meta": {"lastUpdated": "2026-10-20T00:00:01Z", "versionId": "2"}}


def delete_first(store: Store) -> None:
    """The EHR deletes the oldest match (already read on page 1): every later match slides one place forward."""
    del store[min(store.values(), key=lambda r: (r["meta"]["lastUpdated"], r["id"]))["id"]]


def mark_of(world: SyncWorld, conn: str) -> datetime | None:
    return cursors.get_mark(world.env.db, conn, cursors.REST_STREAM, "Observation")


def set_mark(world: SyncWorld, conn: str, mark: datetime) -> None:
    with world.env.db.locked_session() as session:
        cursors.advance(session, conn, cursors.REST_STREAM, "Observation", "test-rewind", mark)
        session.commit()


def warehouse_ids(world: SyncWorld, conn: str, *, live_only: bool = True) -> set[str]:
    import duckdb

    con = duckdb.connect(world.env.warehouse_target, read_only=True)
    try:
        sql = "SELECT id FROM fhir_resources WHERE connection_id = ? AND resource_type = 'Observation'"
        if live_only:
            sql += " AND deleted_at IS NULL"
        return {r[0] for r in con.execute(sql, [conn]).fetchall()}
    finally:
        con.close()
