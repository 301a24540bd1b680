"""FHIR REST: read, search, paging, _lastUpdated, scopes and compartments, Binary, conditional create."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from sandbox import SandboxConfig, SandboxServer
from sandbox.admin_client import SandboxAdminError
from tests.sandbox.helpers import backend_token, bearer, patient_login


@pytest.fixture(scope="module")
def system_token(sandbox_session: SandboxServer) -> str:
    return backend_token(sandbox_session, "system/*.cruds")


def _get(sb: SandboxServer, path: str, token: str, **params: Any) -> httpx.Response:
    return httpx.get(sb.fhir_base + path, params=params, headers=bearer(token))


def _all_pages(sb: SandboxServer, token: str, path: str, **params: Any) -> list[dict[str, Any]]:
    resp = _get(sb, path, token, **params)
    out: list[dict[str, Any]] = []
    while True:
        assert resp.status_code == 200, resp.text
        bundle = resp.json()
        out.extend(e["resource"] for e in bundle["entry"])
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            return out
        resp = httpx.get(nxt[0], headers=bearer(token))


def test_read_returns_resource_with_etag(sandbox: SandboxServer, system_token: str) -> None:
    resp = _get(sandbox, "/Observation/obs3-2", system_token)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/fhir+json")
    assert resp.json()["id"] == "obs3-2" and resp.headers["etag"] == 'W/"1"'
    missing = _get(sandbox, "/Observation/obs3-99999", system_token)
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
    assert _get(sandbox, "/Nonsense/1", system_token).status_code == 404


def test_requests_without_valid_token_get_401_outcome(sandbox: SandboxServer) -> None:
    resp = httpx.get(sandbox.fhir_base + "/Patient/pat1")
    assert resp.status_code == 401 and resp.json()["issue"][0]["code"] == "login"
    assert "Bearer" in resp.headers["www-authenticate"]
    assert _get(sandbox, "/Patient/pat1", "not-a-token").status_code == 401


def test_access_token_lifetime_is_configurable_and_enforced(sandbox: SandboxServer) -> None:
    sandbox.admin.settings(access_token_lifetime_s=5)
    _, token = patient_login(sandbox)
    assert token["expires_in"] == 5
    assert _get(sandbox, "/Patient/pat1", token["access_token"]).status_code == 200
    sandbox.admin.settings(clock_shift_s=6)
    assert _get(sandbox, "/Patient/pat1", token["access_token"]).status_code == 401


def test_user_scopes_see_every_patient_and_fhir_user_is_a_practitioner(sandbox: SandboxServer) -> None:
    cid, token = patient_login(sandbox, scope="openid fhirUser user/*.rs")
    assert "patient" not in token
    assert _get(sandbox, "/Condition", token["access_token"], patient="pat9").status_code == 200
    introspected = httpx.post(
        sandbox.base_url + "/oauth/introspect", data={"token": token["access_token"], "client_id": cid}
    ).json()
    assert introspected["fhirUser"].endswith("/Practitioner/prac0")


def test_bdx29_paging_follows_opaque_next_links_and_covers_everything(
    sandbox: SandboxServer, system_token: str
) -> None:
    paged = _all_pages(sandbox, system_token, "/Observation", patient="pat2", _count=7)
    whole = _all_pages(sandbox, system_token, "/Observation", patient="Patient/pat2", _count=1000)
    assert len(paged) == len(whole) > 7
    assert sorted(r["id"] for r in paged) == sorted(r["id"] for r in whole)
    subject = _all_pages(sandbox, system_token, "/Observation", subject=f"{sandbox.fhir_base}/Patient/pat2")
    assert len(subject) == len(whole)


def test_bdx33_count_default_and_cap(sandbox: SandboxServer, system_token: str) -> None:
    assert len(_get(sandbox, "/Observation", system_token).json()["entry"]) == 50
    sandbox.admin.settings(max_count=5)
    assert len(_get(sandbox, "/Observation", system_token, _count=500).json()["entry"]) == 5


def test_bdx33_last_updated_prefixes(sandbox: SandboxServer, system_token: str) -> None:
    everything = _all_pages(sandbox, system_token, "/Condition", _count=1000)
    stamps = sorted(r["meta"]["lastUpdated"] for r in everything)
    pivot = stamps[len(stamps) // 2]
    for op, expected in (
        ("gt", [s for s in stamps if s > pivot]),
        ("ge", [s for s in stamps if s >= pivot]),
        ("lt", [s for s in stamps if s < pivot]),
        ("le", [s for s in stamps if s <= pivot]),
    ):
        got = _all_pages(sandbox, system_token, "/Condition", _lastUpdated=f"{op}{pivot}", _count=1000)
        assert sorted(r["meta"]["lastUpdated"] for r in got) == expected, op
    day = pivot[:10]  # a date without a time is its whole day: gt is after the day, le up to its end
    for op, expected in (
        ("gt", [s for s in stamps if s[:10] > day]),
        ("ge", [s for s in stamps if s[:10] >= day]),
        ("lt", [s for s in stamps if s[:10] < day]),
        ("le", [s for s in stamps if s[:10] <= day]),
        ("eq", [s for s in stamps if s[:10] == day]),
    ):
        got = _all_pages(sandbox, system_token, "/Condition", _lastUpdated=f"{op}{day}", _count=1000)
        assert sorted(r["meta"]["lastUpdated"] for r in got) == expected, op
    low, high = stamps[2], stamps[-3]
    both = httpx.get(
        sandbox.fhir_base + "/Condition",
        params=[("_lastUpdated", f"ge{low}"), ("_lastUpdated", f"lt{high}"), ("_count", "1000")],
        headers=bearer(system_token),
    ).json()
    assert len(both["entry"]) == len([s for s in stamps if low <= s < high])


def test_bdx33_sort_by_last_updated_and_flag_to_ignore(sandbox: SandboxServer, system_token: str) -> None:
    got = _all_pages(sandbox, system_token, "/Encounter", _sort="_lastUpdated", _count=13)
    stamps = [r["meta"]["lastUpdated"] for r in got]
    assert stamps == sorted(stamps) and len(got) > 100
    desc = [
        e["resource"]["meta"]["lastUpdated"]
        for e in _get(sandbox, "/Encounter", system_token, _sort="-_lastUpdated").json()["entry"]
    ]
    assert desc == sorted(desc, reverse=True)
    sandbox.admin.settings(ignore_sort=True)
    ignored = [
        r["resource"]["meta"]["lastUpdated"]
        for r in _get(sandbox, "/Encounter", system_token, _sort="_lastUpdated").json()["entry"]
    ]
    assert ignored != sorted(ignored)


def test_bdx27_bundle_meta_and_date_follow_the_server_clock(sandbox: SandboxServer, system_token: str) -> None:
    sandbox.admin.settings(clock_shift_s=-86_400)
    resp = _get(sandbox, "/Patient", system_token, _count=1)
    meta = datetime.fromisoformat(resp.json()["meta"]["lastUpdated"].replace("Z", "+00:00"))
    date = parsedate_to_datetime(resp.headers["date"])
    expected = datetime.now(UTC) - timedelta(days=1)
    assert abs((meta - expected).total_seconds()) < 30
    assert abs((date - expected).total_seconds()) < 30


def test_bdx33_next_links_are_signed_and_expire(sandbox: SandboxServer, system_token: str) -> None:
    bundle = _get(sandbox, "/Observation", system_token, _count=2).json()
    nxt = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    tampered = nxt[:-3] + ("AAA" if not nxt.endswith("AAA") else "BBB")
    assert httpx.get(tampered, headers=bearer(system_token)).status_code == 404
    sandbox.admin.settings(clock_shift_s=601)  # past the 600 s link lifetime, token still valid
    expired = httpx.get(nxt, headers=bearer(system_token))
    assert expired.status_code == 410 and expired.json()["resourceType"] == "OperationOutcome"


def test_bdx33_paging_stays_complete_while_a_writer_changes_data() -> None:
    with SandboxServer(SandboxConfig(patients=6, seed=3)) as sb:
        token = backend_token(sb)
        before = {r["id"] for r in _all_pages(sb, token, "/Condition", _count=1000)}
        first = _get(sb, "/Condition", token, _count=3, _sort="_lastUpdated").json()
        seen = {e["resource"]["id"] for e in first["entry"]}
        changed = sb.admin.mutate(update=3, seed=11)
        url = next(link["url"] for link in first["link"] if link["relation"] == "next")
        while url:
            page = httpx.get(url, headers=bearer(token)).json()
            seen |= {e["resource"]["id"] for e in page["entry"]}
            url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
        updated_conditions = {ref.split("/")[1] for ref in changed["updated"] if ref.startswith("Condition/")}
        assert before <= seen | updated_conditions
        assert updated_conditions <= seen  # updated resources move to the end and are seen again


def test_elements_id_and_category_search(sandbox: SandboxServer, system_token: str) -> None:
    ids = _get(sandbox, "/Observation", system_token, patient="pat1", _elements="id").json()["entry"]
    assert set(ids[0]["resource"]) == {"resourceType", "id", "meta"}
    assert ids[0]["resource"]["meta"]["tag"][0]["code"] == "SUBSETTED"
    labs = _all_pages(sandbox, system_token, "/Observation", patient="pat1", category="laboratory")
    assert labs and all(r["category"][0]["coding"][0]["code"] == "laboratory" for r in labs)
    system_cat = "http://terminology.hl7.org/CodeSystem/observation-category|social-history"
    assert len(_all_pages(sandbox, system_token, "/Observation", patient="pat1", category=system_cat)) == 1


def test_sal22_patient_token_is_limited_to_its_compartment(sandbox: SandboxServer) -> None:
    _, token = patient_login(sandbox, patient="pat1")
    access = token["access_token"]
    own = _all_pages(sandbox, access, "/Condition")
    assert own and all(r["subject"]["reference"] == "Patient/pat1" for r in own)
    assert _get(sandbox, "/Condition", access, patient="pat2").status_code == 403
    assert _get(sandbox, "/Observation/obs2-0", access).status_code == 403
    assert _get(sandbox, "/Observation/obs1-0", access).status_code == 200
    assert _get(sandbox, "/Practitioner/prac0", access).status_code == 200  # outside any compartment
    assert _get(sandbox, "/Binary/bin1-0", access).status_code == 200
    assert _get(sandbox, "/Binary/bin2-0", access).status_code == 403  # another patient's note
    patients = _all_pages(sandbox, access, "/Patient")
    assert [p["id"] for p in patients] == ["pat1"]


def test_sal22_type_and_granular_category_scopes(sandbox: SandboxServer) -> None:
    cat = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    _, token = patient_login(sandbox, scope=f"launch/patient patient/Observation.rs?category={cat}")
    access = token["access_token"]
    assert _get(sandbox, "/Condition", access).status_code == 403
    labs = _all_pages(sandbox, access, "/Observation")
    assert labs and {r["category"][0]["coding"][0]["code"] for r in labs} == {"laboratory"}
    assert _get(sandbox, "/Observation", access, category="vital-signs").status_code == 403
    assert _get(sandbox, "/Observation/obs1-0", access).status_code == 403  # a vital sign
    _, v1 = patient_login(sandbox, scope="launch/patient patient/Observation.read")
    assert _get(sandbox, "/Observation", v1["access_token"]).status_code == 200
    assert _get(sandbox, "/Condition", v1["access_token"]).status_code == 403


def test_binary_raw_content_or_fhir_json(sandbox: SandboxServer, system_token: str) -> None:
    doc = _get(sandbox, "/DocumentReference", system_token, patient="pat3").json()["entry"][0]["resource"]
    url = sandbox.fhir_base + "/" + doc["content"][0]["attachment"]["url"]
    raw = httpx.get(url, headers={"Authorization": f"Bearer {system_token}", "Accept": "*/*"})
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith(doc["content"][0]["attachment"]["contentType"])
    assert len(raw.content) == doc["content"][0]["attachment"]["size"]
    as_fhir = httpx.get(url, headers=bearer(system_token)).json()
    assert as_fhir["resourceType"] == "Binary" and base64.b64decode(as_fhir["data"]) == raw.content


def test_groups_are_discoverable_by_search(sandbox: SandboxServer, system_token: str) -> None:
    groups = _all_pages(sandbox, system_token, "/Group")
    assert len(groups) == 3
    assert groups[0]["quantity"] == 25 and len(groups[0]["member"]) == 25


def _doc(identifier: str, patient: str = "pat1") -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "docStatus": "preliminary",
        "identifier": [{"system": "urn:ehrsync:test", "value": identifier}],
        "subject": {"reference": f"Patient/{patient}"},
        "content": [{"attachment": {"contentType": "text/plain", "data": base64.b64encode(b"hello").decode()}}],
    }


def test_conditional_create_201_then_200_then_412(sandbox: SandboxServer, system_token: str) -> None:
    url = sandbox.fhir_base + "/DocumentReference"
    cond = {"If-None-Exist": "identifier=urn:ehrsync:test|abc-1", **bearer(system_token)}
    first = httpx.post(url, json=_doc("abc-1"), headers=cond)
    assert first.status_code == 201, first.text
    created = first.json()
    assert first.headers["location"].startswith(f"{url}/{created['id']}")
    assert created["meta"]["versionId"] == "1"
    again = httpx.post(url, json=_doc("abc-1"), headers=cond)
    assert again.status_code == 200 and again.json()["id"] == created["id"]
    httpx.post(url, json=_doc("dup"), headers=bearer(system_token))
    httpx.post(url, json=_doc("dup"), headers=bearer(system_token))
    clash = httpx.post(
        url, json=_doc("dup"), headers={"If-None-Exist": "identifier=urn:ehrsync:test|dup", **bearer(system_token)}
    )
    assert clash.status_code == 412 and clash.json()["resourceType"] == "OperationOutcome"
    assert _get(sandbox, f"/DocumentReference/{created['id']}", system_token).status_code == 200


def test_create_prefer_minimal_binary_and_validation(sandbox: SandboxServer, system_token: str) -> None:
    headers = {"Prefer": "return=minimal", **bearer(system_token)}
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": base64.b64encode(b"note").decode()}
    resp = httpx.post(sandbox.fhir_base + "/Binary", json=binary, headers=headers)
    assert resp.status_code == 201 and resp.content == b"" and "/Binary/" in resp.headers["location"]
    binary_id = resp.headers["location"].split("/Binary/")[1].split("/")[0]
    assert binary_id in {r["id"] for r in _all_pages(sandbox, system_token, "/Binary", _count=1000)}
    cond = {"If-None-Exist": f"_id={binary_id}", **bearer(system_token)}
    assert httpx.post(sandbox.fhir_base + "/Binary", json=binary, headers=cond).status_code == 200
    bad = httpx.post(
        sandbox.fhir_base + "/DocumentReference",
        json={"resourceType": "DocumentReference"},
        headers=bearer(system_token),
    )
    assert bad.status_code == 422 and "status" in bad.json()["issue"][0]["diagnostics"]
    wrong = httpx.post(
        sandbox.fhir_base + "/Observation", json={"resourceType": "Observation"}, headers=bearer(system_token)
    )
    assert wrong.status_code == 405


def test_create_refused_when_write_disabled_or_scope_missing(sandbox: SandboxServer, system_token: str) -> None:
    _, token = patient_login(sandbox)
    resp = httpx.post(sandbox.fhir_base + "/DocumentReference", json=_doc("p1"), headers=bearer(token["access_token"]))
    assert resp.status_code == 403  # patient/*.rs has no create
    sandbox.admin.settings(write_enabled=False)
    resp = httpx.post(sandbox.fhir_base + "/DocumentReference", json=_doc("p2"), headers=bearer(system_token))
    assert resp.status_code == 405


def test_deleted_resources_are_gone_and_invisible() -> None:
    with SandboxServer(SandboxConfig(patients=3, seed=5)) as sb:
        token = backend_token(sb)
        changed = sb.admin.mutate(delete=2, seed=4)
        for ref in changed["deleted"]:
            rtype, rid = ref.split("/")
            assert _get(sb, f"/{rtype}/{rid}", token).status_code == 410
            assert rid not in {r["id"] for r in _all_pages(sb, token, f"/{rtype}", _count=1000)}


def test_restored_resource_is_back_under_its_id_and_omit_last_updated_hides_the_stamp() -> None:
    """``POST /admin/restore`` re-creates a deleted resource under its id (a new version, stamped now);
    ``omit_last_updated`` serves read, search and bulk output without ``meta.lastUpdated`` while
    ``_lastUpdated`` still selects by the stamp the server keeps."""
    with SandboxServer(SandboxConfig(patients=2, seed=5)) as sb:
        token = backend_token(sb)
        (ref,) = sb.admin.mutate(delete=1, seed=4)["deleted"]
        rtype, rid = ref.split("/")
        before = datetime.now(UTC) - timedelta(seconds=1)
        assert sb.admin.restore(ref) == [ref]
        back = _get(sb, f"/{rtype}/{rid}", token).json()
        stamped = datetime.fromisoformat(back["meta"]["lastUpdated"].replace("Z", "+00:00"))
        assert back["meta"]["versionId"] == "2" and stamped > before
        with pytest.raises(SandboxAdminError, match="not deleted"):
            sb.admin.restore(ref)  # no longer deleted
        sb.admin.settings(omit_last_updated=True)
        read = _get(sb, f"/{rtype}/{rid}", token).json()
        assert read["meta"] == {"versionId": "2"} and {k: v for k, v in back.items() if k != "meta"} == {
            k: v for k, v in read.items() if k != "meta"
        }
        since = before.strftime("%Y-%m-%dT%H:%M:%SZ")
        found = _all_pages(sb, token, f"/{rtype}", _lastUpdated=f"gt{since}")
        assert [r["id"] for r in found] == [rid] and "lastUpdated" not in found[0]["meta"]
        every = _all_pages(sb, token, f"/{rtype}", _count=1000)
        assert every and all("lastUpdated" not in r.get("meta", {}) for r in every)


def test_every_fhir_error_is_an_operation_outcome(sandbox: SandboxServer, system_token: str) -> None:
    for resp in (
        httpx.put(sandbox.fhir_base + "/Patient/pat1", headers=bearer(system_token)),  # 405 from routing
        _get(sandbox, "/Observation", system_token, _lastUpdated="gtyesterday"),  # 400 bad date
        _get(sandbox, "/Observation", system_token, _sort="status"),  # 400 unsupported sort
        httpx.get(
            sandbox.fhir_base + "/Observation",
            params={"unknown": "1"},
            headers={**bearer(system_token), "Prefer": "handling=strict"},
        ),
    ):
        assert resp.status_code >= 400
        assert resp.headers["content-type"].startswith("application/fhir+json")
        assert resp.json()["resourceType"] == "OperationOutcome"


def test_code_and_status_search(sandbox: SandboxServer, system_token: str) -> None:
    hr = _all_pages(sandbox, system_token, "/Observation", patient="pat1", code="http://loinc.org|8867-4")
    assert hr and {o["code"]["coding"][0]["code"] for o in hr} == {"8867-4"}
    active = _all_pages(sandbox, system_token, "/MedicationRequest", status="active", _count=1000)
    assert active and {m["status"] for m in active} == {"active"}
