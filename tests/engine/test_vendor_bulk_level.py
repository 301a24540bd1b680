"""The Bulk level a connection exports at follows its vendor (BDX-01; vendors.md §1, §3, §7): Group-only vendors
are never sent a system ``/$export``, and a server without vendor Bulk support only when its
CapabilityStatement declares the operation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from engine import run_bulk_export
from engine.bulk_export import export_level
from engine.bulk_level import declares_system_export
from engine.connection_info import ConnectionInfo
from engine.errors import ConnectionNotSyncableError
from store.models import Connection
from tests.engine.fake_fhir import FakeFhir, Reply, outcome, serve
from tests.engine.helpers import SyncWorld, connect_static


def _info(provider_id: str, kind: str = "backend", group_id: str | None = None) -> ConnectionInfo:
    return ConnectionInfo(
        id="c1",
        tenant_id="t1",
        provider_id=provider_id,
        kind=kind,
        fhir_base="https://ehr.example/r4/x",
        status="active",
        patient_id=None,
        group_id=group_id,
        granted_scopes=None,
    )


@pytest.mark.parametrize("provider_id", ["cerner", "epic", "athena"])
def test_bdx01_group_only_vendor_backend_connection_without_group_is_refused_naming_the_fix(provider_id: str) -> None:
    """BDX-01: Oracle Health ("Group export only"), Epic and athenahealth never get a system-level export."""
    with pytest.raises(ConnectionNotSyncableError) as caught:
        export_level(_info(provider_id))
    assert "only at Group level" in caught.value.message and "group_id" in caught.value.message
    assert export_level(_info(provider_id, kind="group", group_id="g1")) == ("group", "g1")
    # the other vendors keep their levels: all patients for eCW/PointClickCare, the system (if declared) for generic
    assert [export_level(_info(p)) for p in ("ecw", "pcc", "generic")] == [
        ("patient", None),
        ("patient", None),
        ("system", None),
    ]


def _json(body: dict[str, Any]) -> Reply:
    return 200, {"Content-Type": "application/fhir+json"}, orjson.dumps(body)


def _statement(*, system_export: bool) -> dict[str, Any]:
    rest: dict[str, Any] = {"mode": "server", "resource": [{"type": "Patient", "interaction": [{"code": "read"}]}]}
    if system_export:
        rest["operation"] = [
            {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}
        ]
    return {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance", "rest": [rest]}


def _as_provider(world: SyncWorld, connection_id: str, provider_id: str) -> None:
    with world.env.db.session() as session:
        row = session.get(Connection, connection_id)
        assert row is not None
        row.provider_id = provider_id
        session.commit()


def test_bdx01_generic_server_declaring_no_export_gets_no_system_kickoff(world: SyncWorld) -> None:
    """BDX-01 (vendors.md §7 "Bulk: only if an export operation is declared"): the run fails naming the reason,
    and the server never sees a ``$export``."""
    fake = FakeFhir()
    fake.routes["GET /fhir/metadata"] = lambda _p, _q: _json(_statement(system_export=False))
    fake.routes["GET /fhir/$export"] = lambda _p, _q: outcome(500, "exception")
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, kind="backend", scope="system/*.rs")
        report = run_bulk_export(world.env, conn, "run-1")
    assert report.status == "failed"
    assert "connection_not_syncable" in (report.error or "") and "declares no system-level export" in report.error
    assert fake.hits("/fhir/$export") == 0 and fake.hits("/fhir/metadata") == 1


def test_bdx01_group_only_vendor_backend_row_is_refused_before_any_request(world: SyncWorld) -> None:
    """BDX-01: an existing backend row of a Group-only vendor (created before the check) is refused at sync."""
    fake = FakeFhir()
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, kind="backend", scope="system/*.read")
        _as_provider(world, conn, "cerner")
        with pytest.raises(ConnectionNotSyncableError, match="only at Group level"):
            run_bulk_export(world.env, conn, "run-1")
    assert fake.requests == []


_OPERATIONS = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition"


@pytest.mark.parametrize(
    ("operation", "declared"),
    [
        ({"name": "export", "definition": f"{_OPERATIONS}/export"}, True),
        ({"name": "bulk-export", "definition": f"{_OPERATIONS}/export|2.0.0"}, True),
        ({"name": "group-export", "definition": f"{_OPERATIONS}/group-export"}, False),
        ({"name": "export", "definition": "https://ehr.example.org/fhir/OperationDefinition/bulk-data-export"}, True),
    ],
    ids=["by-name", "versioned-canonical", "group-only", "by-name-with-the-servers-own-definition"],
)
def test_bdx01_a_declared_system_export_is_recognised_by_name_or_canonical(
    operation: dict[str, str], declared: bool
) -> None:
    statement = {"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "operation": [operation]}]}
    assert declares_system_export(statement) is declared


@pytest.mark.parametrize("group_id", ["../Patient", "g1/$export?_type=Patient&x=", "g 1"])
def test_bdx01_a_group_id_that_is_no_fhir_id_is_refused_before_any_request(world: SyncWorld, group_id: str) -> None:
    """BDX-01: the admin API bounds a group id only by length, and one that is no FHIR id (a path of its own, a
    query) would export something else than the group. The connection is refused by name, the server never asked;
    before, the run died of an untyped ValueError from building the URL."""
    fake = FakeFhir()
    with serve(fake):
        conn = connect_static(world, fake.fhir_base, kind="group", group_id=group_id, scope="system/*.rs")
        with pytest.raises(ConnectionNotSyncableError, match="group_id that is no FHIR id"):
            run_bulk_export(world.env, conn, "run-1")
    assert fake.requests == []
