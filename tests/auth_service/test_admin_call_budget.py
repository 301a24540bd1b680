"""The admin's test calls spend eClinicalWorks' shared call budget (vendors.md §4: 250 calls a minute per practice
base, every caller and the token endpoint counted) like the launch, the code exchange, the backend mint and the
admin's refresh do, over real sockets (the sandbox as EHR, a live auth service).

With the budget busy (background syncs took every call), ``GET /api/integrations/smart/test/patient`` and the
provider test (``POST /api/integrations/admin/providers/ecw/test``: discovery, then a Patient read) send nothing
and answer ``503 ehr_unavailable`` with ``Retry-After`` and ``retryAfterSeconds``; once calls are free the same
request reaches the EHR. What was sent is seen on the service's own HTTP client, under the budget's layer.

The sandbox serves FHIR at ``/fhir`` only, while an eCW base is ``{host}/fhir/r4/{practiceCode}``: the eCW
connection's base is pointed at the sandbox's so a read that is sent is answered (the budget follows the
connection's base, as a sync's does).
"""

from __future__ import annotations

from typing import Any

import httpx

from store.models import Connection
from store.rate_windows import RateSlot
from tests.auth_service.ehr import patient_ids, running_service
from tests.auth_service.test_admin_refresh import _ecw_backend, _ecw_practice, _unique
from tests.auth_service.test_call_budget import _saturate

READ = "/api/integrations/smart/test/patient"
PROVIDER_TEST = "/api/integrations/admin/providers/ecw/test"


def _sent_paths(svc: Any) -> list[str]:
    """The paths of every request the service sends from now on (its HTTP client, below the call budget's layer)."""
    paths: list[str] = []

    def record(request: httpx.Request) -> None:
        paths.append(request.url.path)

    svc.ctx.http.event_hooks["request"].append(record)
    return paths


def _free_calls(svc: Any) -> None:
    with svc.ctx.db.session() as session, session.begin():
        session.query(RateSlot).delete()


def _ecw_connection(svc: Any, sandbox: Any, client: str, base: str, *, patient: str | None = None) -> str:
    """An eCW backend connection whose base the sandbox serves (and, given, a patient in context)."""
    created = _ecw_backend(svc, sandbox, client, base)
    assert created.status_code == 201, created.text
    conn_id = str(created.json()["connection_id"])
    with svc.ctx.db.session() as session, session.begin():
        conn = session.get(Connection, conn_id)
        assert conn is not None
        conn.fhir_base, conn.patient_id = sandbox.fhir_base, patient
    _free_calls(svc)  # the creation's calls: the syncs below take every call instead
    return conn_id


def _assert_busy(r: httpx.Response) -> None:
    assert (r.status_code, r.json().get("error")) == (503, "ehr_unavailable"), r.text
    assert "no free call" in r.json()["message"] and "nothing was sent" in r.json()["message"]
    assert int(r.headers["Retry-After"]) >= 1 and r.json()["retryAfterSeconds"] == int(r.headers["Retry-After"])


def _settings(base: str) -> dict[str, Any]:
    return {"SMART_ISSUER_ALLOWLIST": base, "EHR_CALL_BUDGET_WAIT_SECONDS": 0.5}


def test_test_patient_read_spends_the_ecw_call_budget_503_retry_after_when_busy(
    make_settings: Any, sandbox: Any
) -> None:
    base = f"{sandbox.base_url}/fhir/r4/ABCD12"
    pid = patient_ids(sandbox)[0]
    client = _unique("ecw-read")
    with running_service(make_settings, sandbox, _ecw_practice(sandbox, client, "kid-1"), **_settings(base)) as svc:
        conn_id = _ecw_connection(svc, sandbox, client, base)
        sent = _sent_paths(svc)
        _saturate(svc, sandbox.fhir_base)
        r = svc.admin("GET", READ, params={"connection_id": conn_id, "patient": pid})
        _assert_busy(r)
        assert not [p for p in sent if p.startswith("/fhir/Patient")], sent  # nothing was sent
        events = svc.admin("GET", "/api/integrations/admin/audit", params={"connection_id": conn_id}).json()
        [read] = [e for e in events if e["action"] == "data.read"]
        assert (read["outcome"], read["detail"]["error_code"]) == ("failure", "ehr_unavailable")
        _free_calls(svc)  # the syncs are done: calls free again
        again = svc.admin("GET", READ, params={"connection_id": conn_id, "patient": pid})
        assert again.status_code == 200 and again.json()["id"] == pid, again.text
        assert f"/fhir/Patient/{pid}" in sent


def test_provider_test_spends_the_ecw_call_budget_for_its_read_and_its_discovery(
    make_settings: Any, sandbox: Any
) -> None:
    """Both steps of the provider test spend the budget: the Patient read (under the connection's base) and the
    discovery (under the practice base, when not cached). Busy, the step reports ``ehr_unavailable``, nothing is sent,
    and the answer is ``503`` with ``Retry-After``, each step's result alongside."""
    base = f"{sandbox.base_url}/fhir/r4/ABCD12"
    pid = patient_ids(sandbox)[0]
    client = _unique("ecw-provider-test")
    with running_service(make_settings, sandbox, _ecw_practice(sandbox, client, "kid-1"), **_settings(base)) as svc:
        conn_id = _ecw_connection(svc, sandbox, client, base, patient=pid)
        sent = _sent_paths(svc)
        _saturate(svc, sandbox.fhir_base)
        r = svc.admin("POST", PROVIDER_TEST)
        _assert_busy(r)
        assert r.json()["discovery"]["ok"] is True  # cached when the connection was created: nothing to send
        assert r.json()["patient_read"]["error"] == "ehr_unavailable"
        assert not [p for p in sent if p.startswith("/fhir/Patient")], sent
        _free_calls(svc)
        ok = svc.admin("POST", PROVIDER_TEST)
        assert ok.status_code == 200 and ok.json()["ok"] is True, ok.text
        assert ok.json()["patient_read"] == {"ok": True, "connection_id": conn_id, "id": pid}

        svc.ctx.discovery.invalidate(base)  # the practice base's discovery must be asked for again...
        _saturate(svc, base)  # ...while syncs of that base take every call
        sent.clear()
        busy = svc.admin("POST", PROVIDER_TEST)
        _assert_busy(busy)
        assert busy.json()["discovery"]["error"] == "ehr_unavailable", busy.text
        assert not [p for p in sent if p.startswith("/fhir/r4/ABCD12")], sent  # no discovery request sent
        assert busy.json()["patient_read"]["ok"] is True  # the read's base has free calls
