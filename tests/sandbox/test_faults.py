"""Switchable faults: throttling, transient errors, slowness, dropped connections, token and bulk faults."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

import httpx
import jwt
import orjson
import pytest

from sandbox import SandboxServer
from tests.sandbox.helpers import (
    authorize,
    authorize_params,
    backend_token,
    bearer,
    patient_login,
    pkce,
    public_client,
    query_of,
    run,
)


@pytest.fixture(scope="module")
def token(sandbox_session: SandboxServer) -> str:
    return backend_token(sandbox_session)


def _get(sb: SandboxServer, token: str, path: str = "/Patient/pat1") -> httpx.Response:
    return httpx.get(sb.fhir_base + path, headers=bearer(token), timeout=10)


def test_bdx10_429_with_retry_after_seconds_then_recovers(sandbox: SandboxServer, token: str) -> None:
    sandbox.admin.set_fault("429", path="/fhir/Patient", times=2, retry_after="3")
    for _ in range(2):
        resp = _get(sandbox, token)
        assert resp.status_code == 429 and resp.headers["retry-after"] == "3"
        assert resp.json()["issue"][0]["code"] == "throttled"
    assert _get(sandbox, token).status_code == 200


def test_bdx10_429_with_http_date_and_without_header(sandbox: SandboxServer, token: str) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    sandbox.admin.set_fault("429", retry_after=when)
    resp = _get(sandbox, token)
    assert parsedate_to_datetime(resp.headers["retry-after"]) > datetime.now(UTC)
    sandbox.admin.set_fault("429", retry_after="")
    assert "retry-after" not in _get(sandbox, token).headers


def test_path_prefix_limits_where_a_fault_fires(sandbox: SandboxServer, token: str) -> None:
    sandbox.admin.set_fault("500", path="/fhir/Observation")
    assert _get(sandbox, token, "/Patient/pat1").status_code == 200
    assert _get(sandbox, token, "/Observation/obs1-1").status_code == 500
    assert _get(sandbox, token, "/Observation/obs1-1").status_code == 200


@pytest.mark.parametrize("status", [500, 503])
def test_transient_errors_carry_operation_outcome_transient(sandbox: SandboxServer, token: str, status: int) -> None:
    sandbox.admin.set_fault(str(status))
    resp = _get(sandbox, token)
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("application/fhir+json")
    assert resp.json()["issue"][0]["code"] == "transient"


def test_slow_response(sandbox: SandboxServer, token: str) -> None:
    sandbox.admin.set_fault("slow", delay_s=0.6)
    start = time.monotonic()
    assert _get(sandbox, token).status_code == 200
    assert time.monotonic() - start >= 0.6


def test_a_held_slow_request_goes_on_when_released_and_the_fault_stays_armed(
    sandbox: SandboxServer, token: str
) -> None:
    """``POST /admin/faults/release`` lets a request a ``slow`` fault holds go on before its ``delay_s`` (a test acts
    while it is held, then releases it); the fault's other firings stay armed, and a clear releases too."""
    sandbox.admin.set_fault("slow", delay_s=60, times=3)
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        held = pool.submit(_get, sandbox, token)
        while sandbox.admin.faults()[0]["times"] == 3:  # the request reached the fault: it is held now
            assert time.monotonic() - started < 30 and not held.done()
            time.sleep(0.02)
        time.sleep(0.3)
        assert not held.done()  # held, not answered
        sandbox.admin.release_held()
        assert held.result(timeout=30).status_code == 200 and time.monotonic() - started < 30
        assert sandbox.admin.faults()[0]["times"] == 2
        again = pool.submit(_get, sandbox, token)
        while sandbox.admin.faults()[0]["times"] == 2:  # held again; then a clear lets it go on too
            assert time.monotonic() - started < 30
            time.sleep(0.02)
        sandbox.admin.clear_faults()
        assert again.result(timeout=30).status_code == 200 and time.monotonic() - started < 45


def test_dropped_connection_without_response(sandbox: SandboxServer, token: str) -> None:
    sandbox.admin.set_fault("drop", path="/fhir/Patient", times=2)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        _get(sandbox, token)
    port = int(sandbox.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"GET /fhir/Patient/pat1 HTTP/1.1\r\nHost: sandbox\r\n\r\n")
        try:
            received = raw.recv(100)
        except ConnectionResetError:
            received = b""
    assert received == b""  # closed without a single response byte
    assert _get(sandbox, token).status_code == 200


def test_expired_token_fires_once_for_a_valid_token(sandbox: SandboxServer, token: str) -> None:
    sandbox.admin.set_fault("expired_token")
    assert httpx.get(sandbox.fhir_base + "/metadata").status_code == 200  # no token: not consumed
    resp = _get(sandbox, token)
    assert resp.status_code == 401 and 'error="invalid_token"' in resp.headers["www-authenticate"]
    assert _get(sandbox, token).status_code == 200


def test_sal36_forced_oauth_errors(sandbox: SandboxServer) -> None:
    sandbox.admin.set_fault("oauth_error", path="/oauth/token", error="temporarily_unavailable")
    resp = httpx.post(sandbox.base_url + "/oauth/token", data={"grant_type": "client_credentials"})
    assert resp.status_code == 400 and resp.json()["error"] == "temporarily_unavailable"
    desc = "Invalid authorization code: {code}"
    sandbox.admin.set_fault("oauth_error", path="/oauth/token", error="invalid_grant", error_description=desc)
    resp = httpx.post(sandbox.base_url + "/oauth/token", data={"grant_type": "authorization_code", "code": "c-1"})
    assert resp.json() == {"error": "invalid_grant", "error_description": "Invalid authorization code: c-1"}
    sandbox.admin.set_fault("oauth_error", path="/oauth/authorize", error="unauthorized_client")
    cid = public_client(sandbox)
    params = authorize_params(sandbox, cid, "launch/patient patient/*.rs", pkce()[1])
    got = query_of(authorize(sandbox, params))
    assert got["error"] == "unauthorized_client" and got["state"] == params["state"]


def test_faults_are_listed_and_cleared(sandbox: SandboxServer, token: str) -> None:
    sandbox.admin.set_fault("503", times=None)
    assert [f["kind"] for f in sandbox.admin.faults()] == ["503"]
    assert _get(sandbox, token).status_code == 503
    assert _get(sandbox, token).status_code == 503
    sandbox.admin.clear_faults()
    assert _get(sandbox, token).status_code == 200


def test_admin_paths_are_never_faulted(sandbox: SandboxServer) -> None:
    sandbox.admin.set_fault("500", times=None)
    assert sandbox.admin.patients()[:2] == ["pat0", "pat1"]


def test_bdx19_bulk_410_on_a_file(sandbox: SandboxServer, token: str) -> None:
    url = run(sandbox, token, _type="Patient")["output"][0]["url"]
    sandbox.admin.set_fault("bulk_410")
    assert httpx.get(url, headers=bearer(token)).status_code == 410
    assert httpx.get(url, headers=bearer(token)).status_code == 200


def test_bdx20_bulk_file_faults(sandbox: SandboxServer, token: str) -> None:
    manifest = run(sandbox, token, _type="Patient")
    url = manifest["output"][0]["url"]
    good = httpx.get(url, headers=bearer(token)).content
    sandbox.admin.set_fault("bulk_truncated")
    truncated = httpx.get(url, headers=bearer(token)).content
    assert len(truncated) < len(good) and good.startswith(truncated)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(truncated.splitlines()[-1])
    sandbox.admin.set_fault("bulk_blank_line")
    assert httpx.get(url, headers=bearer(token)).content == good + b"\n"
    sandbox.admin.set_fault("bulk_mixed_type")
    last = httpx.get(url, headers=bearer(token)).content.splitlines()[-1]
    assert orjson.loads(last)["resourceType"] != "Patient"


def test_bdx20_wrong_count_in_manifest(sandbox: SandboxServer, token: str) -> None:
    sandbox.admin.set_fault("bulk_wrong_count", path="/bulk/files/")
    manifest = run(sandbox, token, _type="Patient")
    assert manifest["output"][0]["count"] == 26


def _id_token_claims(sb: SandboxServer, id_token: str, jwks: dict[str, object]) -> dict[str, object]:
    header = jwt.get_unverified_header(id_token)
    keys = [k for k in jwks["keys"] if isinstance(k, dict) and k["kid"] == header["kid"]]  # type: ignore[attr-defined]
    if not keys:
        raise LookupError("kid not in JWKS")
    claims: dict[str, object] = jwt.decode(
        id_token, jwt.PyJWK(keys[0]).key, algorithms=["RS256"], options={"verify_aud": False}
    )
    return claims


@pytest.mark.parametrize("variant", ["wrong_aud", "expired", "bad_signature", "rotated_kid"])
def test_sal33_id_token_faults(sandbox: SandboxServer, variant: str) -> None:
    cached = httpx.get(sandbox.base_url + "/oauth/jwks").json()
    sandbox.admin.set_fault("id_token", error=variant)
    cid, token = patient_login(sandbox)
    id_token = token["id_token"]
    if variant == "wrong_aud":
        assert _id_token_claims(sandbox, id_token, cached)["aud"] != cid
    elif variant == "expired":
        with pytest.raises(jwt.ExpiredSignatureError):
            _id_token_claims(sandbox, id_token, cached)
    elif variant == "bad_signature":
        with pytest.raises(jwt.InvalidSignatureError):
            _id_token_claims(sandbox, id_token, cached)
    else:
        with pytest.raises(LookupError):
            _id_token_claims(sandbox, id_token, cached)
        fresh = httpx.get(sandbox.base_url + "/oauth/jwks").json()
        assert _id_token_claims(sandbox, id_token, fresh)["aud"] == cid  # refetching the JWKS succeeds


def test_bdx09_polling_too_fast_gets_429_and_http_date_retry_after(sandbox: SandboxServer, token: str) -> None:
    """The job runs ~12 s (25 patients, 0.5 s each), so the first poll finds it running on a loaded machine too; the
    date is 30 s ahead: an HTTP-date has whole seconds, so one a second ahead, stamped just before a second ticks,
    was already past when a slow client read its clock (``bulk_retry_after_s`` 1 did that)."""
    settings = {"bulk_min_poll_interval_s": 60, "bulk_throttle_s": 0.5, "bulk_retry_after_s": 30}
    sandbox.admin.settings(**settings, bulk_retry_after_http_date=True)
    resp = httpx.get(
        sandbox.fhir_base + "/$export",
        params={"_type": "Patient"},
        headers={**bearer(token), "Prefer": "respond-async"},
    )
    status_url = resp.headers["content-location"]
    try:
        first = httpx.get(status_url, headers=bearer(token))
        assert first.status_code == 202
        assert parsedate_to_datetime(first.headers["retry-after"]) > datetime.now(UTC)
        second = httpx.get(status_url, headers=bearer(token))
        assert second.status_code == 429 and second.json()["issue"][0]["code"] == "throttled"
    finally:
        httpx.delete(status_url, headers=bearer(token))


def _pages(sb: SandboxServer, token: str, path: str, **params: str) -> list[dict[str, object]]:
    """Every page of a search, following next links (each page's JSON)."""
    pages: list[dict[str, object]] = []
    url: str | None = sb.fhir_base + path
    query: dict[str, str] | None = params
    while url is not None:
        page = httpx.get(url, params=query, headers=bearer(token), timeout=10).json()
        pages.append(page)
        url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
        query = None
    return pages


def _match_ids(page: dict[str, object]) -> list[str]:
    entries = page.get("entry") or []
    assert isinstance(entries, list)
    return [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"]


def test_bdx33_search_offset_shift_repeats_the_first_match_and_skips_one(sandbox: SandboxServer, token: str) -> None:
    """The paging of a live-query offset server after an update moved the first match to the end: a page
    reached by a next link starts with the search's first match instead of its own first, and says ``total``."""
    clean = [_match_ids(p) for p in _pages(sandbox, token, "/Observation", patient="pat1", _count="5")]
    assert len(clean) >= 3
    sandbox.admin.set_fault("search_offset_shift", path="/fhir/Observation", times=1)
    shifted = _pages(sandbox, token, "/Observation", patient="pat1", _count="5")
    ids = [_match_ids(p) for p in shifted]
    assert ids[0] == clean[0] and ids[2:] == clean[2:]  # only the first page behind a link is shifted
    assert ids[1] == [clean[0][0], *clean[1][1:]] and shifted[1]["total"] == sum(map(len, clean))
    assert clean[1][0] not in {i for page in ids for i in page}  # skipped for good


def test_bdx33_search_deleted_shift_says_the_whole_total_then_skips_one_with_a_smaller_total(
    sandbox: SandboxServer, token: str
) -> None:
    """An offset server after a match already read was deleted: the first page says the whole total; the page
    behind the next link skips its own first match and says a total one smaller."""
    clean = [_match_ids(p) for p in _pages(sandbox, token, "/Observation", patient="pat1", _count="5")]
    assert len(clean) >= 3
    sandbox.admin.set_fault("search_deleted_shift", path="/fhir/Observation", times=2)
    shifted = _pages(sandbox, token, "/Observation", patient="pat1", _count="5")
    ids = [_match_ids(p) for p in shifted]
    everything = sum(map(len, clean))
    assert ids[0] == clean[0] and shifted[0]["total"] == everything
    assert ids[1] == clean[1][1:] and shifted[1]["total"] == everything - 1
    assert ids[2:] == clean[2:] and "total" not in shifted[2]


def test_bdx33_search_error_outcome_drops_a_match_and_says_so(sandbox: SandboxServer, token: str) -> None:
    clean = [_match_ids(p) for p in _pages(sandbox, token, "/Observation", patient="pat1", _count="5")]
    sandbox.admin.set_fault("search_error_outcome", path="/fhir/Observation", times=1)
    (first, *rest) = _pages(sandbox, token, "/Observation", patient="pat1", _count="5")
    assert _match_ids(first) == clean[0][:-1] and [_match_ids(p) for p in rest] == clean[1:]
    entries = first["entry"]
    assert isinstance(entries, list)
    (outcome,) = [e for e in entries if e["search"]["mode"] == "outcome"]
    assert outcome["resource"]["resourceType"] == "OperationOutcome"
    assert outcome["resource"]["issue"][0]["severity"] == "error"
    assert outcome["resource"]["issue"][0]["code"] == "incomplete"


def test_bdx33_search_moved_match_repeats_the_first_match_and_skips_one_without_a_total(
    sandbox: SandboxServer, token: str
) -> None:
    """``search_offset_shift`` on a server that never says a total: only the repeated match shows the skip."""
    clean = [_match_ids(p) for p in _pages(sandbox, token, "/Observation", patient="pat1", _count="5")]
    assert len(clean) >= 3
    sandbox.admin.set_fault("search_moved_match", path="/fhir/Observation", times=1)
    shifted = _pages(sandbox, token, "/Observation", patient="pat1", _count="5")
    ids = [_match_ids(p) for p in shifted]
    assert ids[0] == clean[0] and ids[1] == [clean[0][0], *clean[1][1:]] and ids[2:] == clean[2:]
    assert all("total" not in p for p in shifted)


def test_bdx33_search_overlap_repeats_the_previous_pages_last_match_and_skips_none(
    sandbox: SandboxServer, token: str
) -> None:
    """Pages that overlap by one (armed with ``times`` None: every page reached by a next link, as some servers
    always page): each starts with the page before's last match again; nothing is skipped and no total is said."""
    clean = [_match_ids(p) for p in _pages(sandbox, token, "/Observation", patient="pat1", _count="5")]
    assert len(clean) >= 3
    sandbox.admin.set_fault("search_overlap", path="/fhir/Observation", times=None)
    overlapping = _pages(sandbox, token, "/Observation", patient="pat1", _count="5")
    ids = [_match_ids(p) for p in overlapping]
    assert len(ids) == len(clean) and ids[0] == clean[0]
    assert all(ids[n] == [clean[n - 1][-1], *clean[n]] for n in range(1, len(clean)))
    assert all("total" not in p for p in overlapping)


def test_bdx33_search_error_outcome_may_say_so_with_a_warning(sandbox: SandboxServer, token: str) -> None:
    sandbox.admin.set_fault("search_error_outcome", path="/fhir/Observation", times=1, severity="warning")
    (first, *_rest) = _pages(sandbox, token, "/Observation", patient="pat1", _count="5")
    entries = first["entry"]
    assert isinstance(entries, list)
    (outcome,) = [e["resource"] for e in entries if e["search"]["mode"] == "outcome"]
    assert outcome["issue"][0]["severity"] == "warning" and outcome["issue"][0]["code"] == "incomplete"


def test_a_fault_limited_to_a_method_leaves_the_others_alone(sandbox: SandboxServer, token: str) -> None:
    """``method``: a POST-only fault (a create's lost answer) does not fire on the same path's searches."""
    sandbox.admin.set_fault("500", path="/fhir/Patient", method="POST", times=None)
    assert _get(sandbox, token, "/Patient?_id=pat1").status_code == 200
    posted = httpx.post(sandbox.fhir_base + "/Patient", headers=bearer(token), json={"resourceType": "Patient"})
    assert posted.status_code == 500
    assert _get(sandbox, token, "/Patient/pat1").status_code == 200
    sandbox.admin.clear_faults()


def test_bdx33_search_silent_skip_skips_one_match_and_says_nothing(sandbox: SandboxServer, token: str) -> None:
    """An offset server without totals after a match already read was deleted: the page behind the next link
    skips its own first match, and no page carries a total or an outcome that would show it."""
    clean = [_match_ids(p) for p in _pages(sandbox, token, "/Observation", patient="pat1", _count="5")]
    assert len(clean) >= 3
    sandbox.admin.set_fault("search_silent_skip", path="/fhir/Observation", times=1)
    skipped = _pages(sandbox, token, "/Observation", patient="pat1", _count="5")
    ids = [_match_ids(p) for p in skipped]
    assert ids[0] == clean[0] and ids[1] == clean[1][1:] and ids[2:] == clean[2:]
    assert all("total" not in p and all(e["search"]["mode"] == "match" for e in p["entry"]) for p in skipped)


def test_bdx33_search_empty_page_answers_no_match_and_a_new_link_to_the_same_page(
    sandbox: SandboxServer, token: str
) -> None:
    """A cursor that changes on every empty page: each of ``times`` pages is empty with a next link never sent
    before; once the fault is spent the search goes on where it was, every match there."""
    clean = [_match_ids(p) for p in _pages(sandbox, token, "/Observation", patient="pat1", _count="5")]
    assert len(clean) >= 2
    sandbox.admin.set_fault("search_empty_page", path="/fhir/Observation", times=3)
    pages = _pages(sandbox, token, "/Observation", patient="pat1", _count="5")
    nexts = [next(link["url"] for link in p["link"] if link["relation"] == "next") for p in pages[:3]]
    assert [_match_ids(p) for p in pages] == [[], [], [], *clean] and len(set(nexts)) == 3


def test_search_shape_writes_one_element_arrays_as_objects_or_capitalises_relations(
    sandbox: SandboxServer, token: str
) -> None:
    """``search_shape`` (sandbox.shape_fault): ``single_objects`` sends a page of one match with ``entry`` (and a
    lone ``link``) as bare objects; ``relation_case`` spells the relations ``Self``/``Next``."""
    url = sandbox.fhir_base + "/Observation"
    sandbox.admin.set_fault("search_shape", path="/fhir/Observation", times=2, shape="single_objects")
    one = httpx.get(url, params={"_id": "obs1-1"}, headers=bearer(token), timeout=10).json()
    assert one["entry"]["resource"]["id"] == "obs1-1" and one["link"]["relation"] == "self"
    paged = httpx.get(url, params={"patient": "pat1", "_count": "1"}, headers=bearer(token), timeout=10).json()
    assert isinstance(paged["entry"], dict) and isinstance(paged["link"], list)  # self and next: still an array
    sandbox.admin.set_fault("search_shape", path="/fhir/Observation", times=1, shape="relation_case")
    cased = httpx.get(url, params={"patient": "pat1", "_count": "5"}, headers=bearer(token), timeout=10).json()
    assert [link["relation"] for link in cased["link"]] == ["Self", "Next"]
    assert len(_match_ids(cased)) == 5


def test_search_shape_unmarked_others_adds_what_the_matches_refer_to_without_search_mode(
    sandbox: SandboxServer, token: str
) -> None:
    """``unmarked_others``: the matches as before, then the Patient (and any Medication) they refer to, once a page,
    as the resource the server holds, in entries with no ``search`` (legal: R4 ``Bundle.entry.search`` is 0..1)."""
    sandbox.admin.set_fault("search_shape", path="/fhir/MedicationRequest", times=1, shape="unmarked_others")
    url = sandbox.fhir_base + "/MedicationRequest"
    page = httpx.get(url, params={"patient": "pat1"}, headers=bearer(token), timeout=10).json()
    matches = [e for e in page["entry"] if "search" in e]
    others = [e for e in page["entry"] if "search" not in e]
    assert matches and all(e["search"]["mode"] == "match" for e in matches)
    kinds = {e["resource"]["resourceType"] for e in others}
    assert kinds == {"Patient", "Medication"} and len(others) == len({e["fullUrl"] for e in others})
    patient = next(e for e in others if e["resource"]["resourceType"] == "Patient")
    assert patient["fullUrl"] == f"{sandbox.fhir_base}/Patient/pat1" and patient["resource"]["id"] == "pat1"
    clean = httpx.get(url, params={"patient": "pat1"}, headers=bearer(token), timeout=10).json()
    assert all("search" in e for e in clean["entry"])  # the fault was spent
