"""Bulk Data client protocol edge cases over httpx.MockTransport (BDX-01..20)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson
import pytest

from connectors.bulk import (
    WHOLE_EXPORT,
    BulkClient,
    HostConcurrencyLimiter,
    ManifestItem,
    download_items,
    incomplete_types,
    iter_ndjson_lines,
    parse_manifest,
    verify_ndjson_file,
)
from connectors.errors import (
    BulkExportBusyError,
    BulkExportError,
    BulkFileExpiredError,
    RateLimitedError,
    SecurityPolicyError,
)
from connectors.tokens import StaticTokenSource
from tests.connectors.helpers import BASE, TOKEN, Script, oo, recording_policy

STATUS = "https://ehr.example.org/bulk/status/job1"


def _bulk(script: Script, sleeps: list[float] | None = None, **policy: object) -> BulkClient:
    retry = recording_policy([] if sleeps is None else sleeps, **policy)
    return BulkClient(BASE, StaticTokenSource(TOKEN), http=script.client(), retry=retry)


def _manifest(**overrides: object) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transactionTime": "2026-11-25T09:00:00.000Z",
        "request": f"{BASE}/Group/g1/$export",
        "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": "https://ehr.example.org/bulk/files/job1/Patient.ndjson", "count": 2}],
        "error": [],
    }
    body.update(overrides)
    return body


def _accepted() -> httpx.Response:
    return httpx.Response(202, headers={"Content-Location": STATUS})


# --- kick-off -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "group", "path"),
    [("system", None, "/$export"), ("patient", None, "/Patient/$export"), ("group", "g1", "/Group/g1/$export")],
)
def test_bdx01_02_03_kickoff_levels_headers_and_params(level: str, group: str | None, path: str) -> None:
    script = Script(_accepted())
    since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    status_url = _bulk(script).kickoff(
        level,  # type: ignore[arg-type]
        group_id=group,
        types=["Patient", "Observation"],
        since=since,
        type_filters=["MedicationRequest?status=active,completed", "Observation?category=laboratory"],
    )
    assert status_url == STATUS
    request = script.requests[0]
    assert request.method == "GET" and urlsplit(str(request.url)).path == "/fhir/r4" + path
    assert request.headers["Accept"] == "application/fhir+json"
    assert request.headers["Prefer"] == "respond-async"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    query = urlsplit(str(request.url)).query
    assert "_since=2026-01-02T01%3A04%3A05Z" in query  # converted to UTC instant, URL-encoded
    assert "_typeFilter=MedicationRequest%3Fstatus%3Dactive%2Ccompleted" in query
    assert parse_qsl(query) == [
        ("_outputFormat", "application/fhir+ndjson"),
        ("_since", "2026-01-02T01:04:05Z"),
        ("_type", "Patient,Observation"),
        ("_typeFilter", "MedicationRequest?status=active,completed"),
        ("_typeFilter", "Observation?category=laboratory"),
    ]


@pytest.mark.parametrize("group", ["", "../Patient", "g1/$export?_type=Patient", "g 1"])
def test_bdx01_a_group_id_that_is_no_fhir_id_is_refused_before_any_request(group: str) -> None:
    """The client's own guard, whoever calls it: a group id is put in ``Group/{id}/$export`` only when it is a FHIR
    id (a slash or a query would export something else than the group)."""
    script = Script(_accepted())
    with pytest.raises(ValueError, match="valid group_id"):
        _bulk(script).kickoff("group", group_id=group, types=["Patient"])
    assert script.requests == []


def test_bdx03_since_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        _bulk(Script()).kickoff("system", since=datetime(2026, 1, 1))


@pytest.mark.parametrize("bad", ["Patient,Observation", "patient", "Patient&_since=2020-01-01", "P"])
def test_bdx03_a_type_that_is_no_resource_type_name_is_refused_before_any_request(bad: str) -> None:
    """``_type`` is joined with commas: a name holding one (or another parameter) would ask for other data."""
    script = Script()
    with pytest.raises(ValueError, match="not a FHIR resource type"):
        _bulk(script).kickoff("system", types=["Condition", bad])
    assert script.requests == []


def test_bdx03_elements_and_other_extra_parameters_are_sent_encoded_after_the_standard_ones() -> None:
    """The engine's ``_elements`` (and a vendor's member parameters) reach the server as given."""
    script = Script(_accepted())
    _bulk(script).kickoff("group", group_id="g1", types=["Patient"], extra_params=[("_elements", "id,meta")])
    query = urlsplit(str(script.requests[0].url)).query
    assert "_elements=id%2Cmeta" in query
    assert parse_qsl(query)[-1] == ("_elements", "id,meta")


def test_bdx04_patient_list_is_posted_as_parameters() -> None:
    script = Script(_accepted())
    _bulk(script).kickoff(
        "group",
        group_id="g1",
        types=["Patient"],
        patients=["Patient/a", "Patient/b"],
        since=datetime(2026, 1, 1, tzinfo=UTC),
    )
    request = script.requests[0]
    assert request.method == "POST" and request.headers["Content-Type"] == "application/fhir+json"
    assert request.headers["Prefer"] == "respond-async"
    body = orjson.loads(request.content)
    assert body["resourceType"] == "Parameters"
    assert {"name": "_since", "valueInstant": "2026-01-01T00:00:00Z"} in body["parameter"]
    refs = [p["valueReference"]["reference"] for p in body["parameter"] if p["name"] == "patient"]
    assert refs == ["Patient/a", "Patient/b"]
    with pytest.raises(ValueError, match="BDX-04"):
        _bulk(Script()).kickoff("system", patients=["Patient/a"])
    with pytest.raises(ValueError, match="Patient/<id>"):
        _bulk(Script()).kickoff("patient", patients=["Group/a"])


def test_bdx06_missing_content_location_is_a_typed_error() -> None:
    with pytest.raises(BulkExportError, match="Content-Location"):
        _bulk(Script(httpx.Response(202))).kickoff("system")


@pytest.mark.parametrize("status", [200, 201, 204])
def test_bdx06_a_kickoff_answered_other_than_202_is_no_export_even_with_a_content_location(status: int) -> None:
    """BDX-06: only ``202 Accepted`` starts an export. A 200 (a synchronous answer, a gateway's page) carrying a
    Content-Location is a typed error naming what was needed, never a status URL saved and polled."""
    script = Script(httpx.Response(status, headers={"Content-Location": STATUS}))
    with pytest.raises(BulkExportError, match="needs 202") as info:
        _bulk(script).kickoff("system")
    assert info.value.status == status and len(script.requests) == 1


def test_bdx06_kickoff_error_carries_operation_outcome() -> None:
    script = Script(httpx.Response(400, content=orjson.dumps(oo("not-supported"))))
    with pytest.raises(BulkExportError) as info:
        _bulk(script).kickoff("system")
    assert info.value.status == 400 and info.value.operation_outcome == oo("not-supported")


def test_bdx07_kickoff_429_waits_per_retry_after_and_retries() -> None:
    sleeps: list[float] = []
    script = Script(httpx.Response(429, headers={"Retry-After": "120"}), _accepted())
    assert _bulk(script, sleeps).kickoff("group", group_id="g1") == STATUS
    assert sleeps == [120.0] and len(script.requests) == 2


@pytest.mark.parametrize("patients", [None, ["Patient/a"]], ids=["GET", "POST"])
@pytest.mark.parametrize("body", [b"", orjson.dumps(oo("transient"))], ids=["bare", "transient-outcome"])
def test_bdx06_bdx07_kickoff_503_without_retry_after_is_sent_once(patients: list[str] | None, body: bytes) -> None:
    """Either kick-off form answered 503 with no Retry-After fails at once as BulkExportError (status 503), one
    request sent: a gateway answers so after giving up on an EHR that may have started the job, and a second kick-off
    would start a second export (the engine's retry of the failed run kicks off again after its backoff). A 503
    with Retry-After says the server did not act: waited out and sent again, as a 429 is (BDX-07)."""
    script = Script(httpx.Response(503, content=body), _accepted())
    with pytest.raises(BulkExportError, match="HTTP 503") as info:
        _bulk(script).kickoff("group", group_id="g1", patients=patients)
    assert info.value.status == 503 and len(script.requests) == 1
    sleeps: list[float] = []
    throttled = Script(httpx.Response(503, headers={"Retry-After": "7"}, content=body), _accepted())
    assert _bulk(throttled, sleeps).kickoff("group", group_id="g1", patients=patients) == STATUS
    assert sleeps == [7.0] and [r.method for r in throttled.requests] == ["POST" if patients else "GET"] * 2


@pytest.mark.parametrize("status", [429, 503])
def test_bdx07_a_kickoff_still_throttled_names_the_status_the_server_answered(status: int) -> None:
    """A kick-off still throttled once the attempts are spent is BulkExportBusyError naming the status the server
    really answered: a 503 with Retry-After is a throttle as a 429 is, but its message said "429" too."""
    script = Script(*[lambda _r: httpx.Response(status, headers={"Retry-After": "1"})] * 10)
    with pytest.raises(BulkExportBusyError) as info:
        _bulk(script, max_attempts=2).kickoff("group", group_id="g1")
    other = 503 if status == 429 else 429
    assert info.value.status == status and f"answered HTTP {status}" in str(info.value)
    assert str(other) not in str(info.value), str(info.value)


class _TokenEndpointThrottledError(RateLimitedError):
    """As ``engine.token_throttle.TokenEndpointThrottledError`` (connectors do not import the engine)."""

    code = "token_endpoint_throttled"


class _ThrottledTokenSource:
    """The engine's token source when the token endpoint throttled the grant (``engine.token_throttle``)."""

    def get_token(self) -> str:
        raise _TokenEndpointThrottledError(
            "the token endpoint throttled the token refresh (HTTP 429)", 429, retry_after=9
        )

    def refresh_after_unauthorized(self, rejected: str) -> str:
        return self.get_token()


def test_bdx07_a_kickoff_whose_token_request_was_throttled_says_it_was_not_sent() -> None:
    """The token endpoint throttled the grant, so the kick-off never reached the EHR: the message says it was not
    sent and names no answer of the EHR's to an export (before: "the EHR answered 429, as an EHR does to an export
    beyond its limit of concurrent exports per client"); the wait is kept, so the run still notes its hold."""
    script = Script()
    client = BulkClient(BASE, _ThrottledTokenSource(), http=script.client(), retry=recording_policy([]))
    with pytest.raises(BulkExportBusyError) as info:
        client.kickoff("group", group_id="g1")
    message = str(info.value)
    assert "not sent" in message and "token_endpoint_throttled" in message, message
    assert "the EHR answered" not in message and "beyond its limit" not in message, message
    assert info.value.retry_after == 9 and script.requests == []


def test_bdx06_relative_content_location_is_resolved() -> None:
    script = Script(httpx.Response(202, headers={"Content-Location": "/bulk/status/job9"}))
    assert _bulk(script).kickoff("system") == "https://ehr.example.org/bulk/status/job9"


# --- polling ------------------------------------------------------------------------------------------


def test_bdx09_poll_table() -> None:
    script = Script(
        httpx.Response(202, headers={"X-Progress": "x" * 150, "Retry-After": "10"}),
        httpx.Response(429, headers={"Retry-After": "30"}),
        httpx.Response(500, content=orjson.dumps(oo("transient"))),
        httpx.Response(200, content=orjson.dumps(_manifest()), headers={"Expires": "Thu, 26 Nov 2026 10:00:00 GMT"}),
    )
    bulk = _bulk(script)
    progress = bulk.poll(STATUS)
    assert not progress.done and progress.retry_after == 10.0 and progress.progress == "x" * 100
    assert bulk.poll(STATUS).throttled
    assert bulk.poll(STATUS).transient
    done = bulk.poll(STATUS)
    assert done.done and done.manifest is not None and done.expires is not None
    assert script.requests[0].headers["Accept"] == "application/json"
    assert script.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(500, content=orjson.dumps(oo("exception"))),
        httpx.Response(404, content=orjson.dumps(oo("not-found"))),
    ],
)
def test_bdx09_other_errors_fail_the_job_with_outcome(response: httpx.Response) -> None:
    script = Script(response)
    with pytest.raises(BulkExportError) as info:
        _bulk(script).poll(STATUS)
    assert info.value.status == response.status_code
    assert len(script.requests) == 1  # no retry of the same URL


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(502, content=b"<html>bad gateway</html>"),
        httpx.Response(503),
        httpx.Response(504),
        httpx.Response(408),
        httpx.Response(500),
        httpx.Response(200, content=b"<html>please try again later</html>", headers={"Content-Type": "text/html"}),
        httpx.Response(200, content=orjson.dumps(_manifest())[:40]),
        httpx.Response(200, content=b"[]"),
        httpx.Response(200),
    ],
    ids=["502", "503", "504", "408", "500", "200-html", "200-cut", "200-array", "200-empty"],
)
def test_bdx09_infrastructure_errors_are_polling_hiccups(response: httpx.Response) -> None:
    """Issue 10: a proxy's 502/503/504/408 (and a bare 500) is transient per connectors.errors.is_transient_answer;
    so is a 200 that is not a JSON object (a gateway's page served 200, a body cut short): no manifest at all."""
    status = _bulk(Script(response)).poll(STATUS)
    assert status.transient and not status.done


def test_bdx09_poll_401_refreshes_once() -> None:
    tokens = StaticTokenSource(TOKEN, refresher=lambda: "tok-NEW")
    script = Script(httpx.Response(401), httpx.Response(202))
    bulk = BulkClient(BASE, tokens, http=script.client(), retry=recording_policy([]))
    assert not bulk.poll(STATUS).done
    assert script.requests[1].headers["Authorization"] == "Bearer tok-NEW"


def test_sal40_status_url_on_another_host_gets_no_token() -> None:
    with pytest.raises(SecurityPolicyError):
        _bulk(Script()).poll("https://evil.example/bulk/status/1")


def test_bdx10_wait_uses_clamped_retry_after_and_slows_on_429() -> None:
    sleeps: list[float] = []
    script = Script(
        httpx.Response(202, headers={"Retry-After": "0"}),  # clamped up to 2 s
        httpx.Response(202, headers={"Retry-After": "86400"}),  # absurd: backoff instead
        httpx.Response(429, headers={"Retry-After": "1"}),  # throttled: the floor doubles
        httpx.Response(202, headers={"Retry-After": "2"}),  # still at least the raised floor
        httpx.Response(200, content=orjson.dumps(_manifest())),
    )
    seen: list[object] = []
    manifest = _bulk(script, sleeps).wait(STATUS, on_progress=seen.append)
    assert manifest.requires_access_token is True and len(seen) == 4
    assert sleeps[0] == 2.0
    assert 3.2 <= sleeps[1] <= 4.8  # backoff attempt 1 (4 s ± 20 %)
    assert sleeps[2] == 4.0 and sleeps[3] == 4.0


def test_bdx10_bdx11_wait_deadline_cancels_the_job() -> None:
    sleeps: list[float] = []
    clock = iter([0.0, 0.0, 50.0, 95.0, 200.0])
    script = Script(
        httpx.Response(202, headers={"Retry-After": "30"}),
        httpx.Response(202, headers={"Retry-After": "30"}),
        httpx.Response(202),
    )

    def cancel(request: httpx.Request) -> httpx.Response:
        assert request.method == "DELETE" and str(request.url) == STATUS
        return httpx.Response(202)

    script.steps.append(cancel)
    with pytest.raises(BulkExportError, match="cancelled"):
        _bulk(script, sleeps, monotonic=lambda: next(clock)).wait(STATUS, deadline_s=100)
    assert script.requests[-1].method == "DELETE"


def test_wait_gives_up_after_repeated_transient_failures() -> None:
    script = Script(*[httpx.Response(503, content=orjson.dumps(oo("transient"))) for _ in range(5)])
    with pytest.raises(BulkExportError, match="transiently"):
        _bulk(script).wait(STATUS)


def test_bdx12_invalid_manifest_in_wait_cancels_job() -> None:
    script = Script(httpx.Response(200, content=orjson.dumps(_manifest(error=None))), httpx.Response(202))
    with pytest.raises(BulkExportError, match="'error'"):
        _bulk(script).wait(STATUS)
    assert script.requests[-1].method == "DELETE"


def test_bdx11_cancel_tolerates_already_gone() -> None:
    _bulk(Script(httpx.Response(404))).cancel(STATUS)
    with pytest.raises(BulkExportError):
        _bulk(Script(httpx.Response(400))).cancel(STATUS)


# --- manifest -----------------------------------------------------------------------------------------


def test_bdx12_manifest_keeps_extension_deleted_and_ignores_unknown_fields() -> None:
    manifest = parse_manifest(
        _manifest(
            extension={"https://example.org/ext": {"a": 1}},
            deleted=[{"type": "Bundle", "url": "https://ehr.example.org/bulk/del.ndjson"}],
            somethingNew=True,
            error=[{"type": "OperationOutcome", "url": "https://ehr.example.org/bulk/err.ndjson"}],
        )
    )
    assert manifest.extension == {"https://example.org/ext": {"a": 1}}
    assert manifest.deleted[0].type == "Bundle" and manifest.error[0].count is None
    assert manifest.output[0] == ManifestItem("Patient", "https://ehr.example.org/bulk/files/job1/Patient.ndjson", 2)
    assert manifest.transaction_time == datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert parse_manifest(_manifest(output=[])).output == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"transactionTime": None}, "transactionTime"),
        ({"transactionTime": "2026-11-25T09:00:00"}, "transactionTime"),
        ({"request": None}, "request"),
        ({"request": ""}, "request"),
        ({"requiresAccessToken": "true"}, "requiresAccessToken"),
        ({"output": None}, "output"),
        ({"error": None}, "error"),
        ({"output": [{"type": "Patient", "url": "/bulk/files/p.ndjson"}]}, "absolute"),
        ({"output": [{"url": "https://h/p.ndjson"}]}, "type"),
        ({"output": [{"type": "", "url": "https://h/p.ndjson"}]}, "type"),
        ({"output": [{"type": "Patient", "url": "https://h/p", "count": -1}]}, "count"),
        ({"output": [{"type": "Patient", "url": "https://h/p", "count": True}]}, "count"),
        ({"extension": []}, "extension"),
    ],
)
def test_bdx12_manifest_rejects_missing_required_fields(change: dict[str, Any], message: str) -> None:
    body = _manifest(**change)
    for key, value in change.items():
        if value is None:
            body.pop(key)
    with pytest.raises(BulkExportError, match=message):
        parse_manifest(body)


# --- downloads ----------------------------------------------------------------------------------------


FILE = "https://ehr.example.org/bulk/files/job1/Patient.ndjson"


def test_bdx16_17_download_with_token_gzip_and_ndjson_accept(tmp_path: Path) -> None:
    lines = b'{"resourceType":"Patient","id":"1"}\n{"resourceType":"Patient","id":"2"}\n'
    script = Script(httpx.Response(200, content=gzip.compress(lines), headers={"Content-Encoding": "gzip"}))
    path = _bulk(script).download(FILE, tmp_path / "p.ndjson", requires_token=True)
    assert path.read_bytes() == lines
    request = script.requests[0]
    assert request.headers["Accept"] == "application/fhir+ndjson"
    # gzip alone, whose inflation the byte limits bound (BDX-17), not httpx's default, which adds deflate and,
    # once brotli or zstandard is installed (any dependency may bring one), br and zstd
    assert request.headers["Accept-Encoding"] == "gzip"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_bdx16_sal40_no_token_when_not_required_even_on_another_host(tmp_path: Path) -> None:
    script = Script(httpx.Response(200, content=b"{}\n"), httpx.Response(200, content=b"{}\n"))
    bulk = _bulk(script)
    bulk.download("https://93.184.216.34/signed/p.ndjson?sig=1", tmp_path / "a", requires_token=False)
    bulk.download(FILE, tmp_path / "b", requires_token=False)
    assert all("Authorization" not in r.headers for r in script.requests)
    with pytest.raises(SecurityPolicyError):
        bulk.download("https://93.184.216.34/p.ndjson", tmp_path / "c", requires_token=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/iam",  # cloud metadata
        "http://93.184.216.34/p.ndjson",  # off-origin plain http
        "https://10.1.2.3/p.ndjson",  # private network
    ],
)
def test_bdx16_manifest_cannot_point_downloads_at_internal_services(url: str, tmp_path: Path) -> None:
    """A ``requiresAccessToken=false`` file is fetched from anywhere public, never from an internal address."""
    script = Script(httpx.Response(200, content=b"{}\n"))
    with pytest.raises(SecurityPolicyError, match="refusing to fetch"):
        _bulk(script).download(url, tmp_path / "p", requires_token=False)
    assert script.requests == [], "the internal address must never be requested"


def test_bdx16_file_redirects_are_vetted_before_following(tmp_path: Path) -> None:
    script = Script(httpx.Response(302, headers={"Location": "https://169.254.169.254/latest/meta-data/"}))
    with pytest.raises(SecurityPolicyError):
        _bulk(script).download("https://93.184.216.34/signed/p.ndjson", tmp_path / "p", requires_token=False)
    assert [str(r.url) for r in script.requests] == ["https://93.184.216.34/signed/p.ndjson"]


@pytest.mark.parametrize("status", [404, 410])
def test_bdx19_expired_file_raises_file_expired(status: int, tmp_path: Path) -> None:
    with pytest.raises(BulkFileExpiredError) as info:
        _bulk(Script(httpx.Response(status))).download(FILE, tmp_path / "p", requires_token=True)
    assert info.value.status == status
    assert list(tmp_path.iterdir()) == []


def test_bdx18_5xx_retries_restart_the_file(tmp_path: Path) -> None:
    sleeps: list[float] = []
    script = Script(httpx.Response(503), httpx.Response(200, content=b'{"resourceType":"Patient"}\n'))
    path = _bulk(script, sleeps).download(FILE, tmp_path / "p", requires_token=True)
    assert path.read_bytes() == b'{"resourceType":"Patient"}\n' and len(sleeps) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def test_bdx18_parallel_downloads_report_each_outcome(tmp_path: Path) -> None:
    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("gone.ndjson"):
            return httpx.Response(410)
        return httpx.Response(200, content=b'{"resourceType":"Observation"}\n')

    client = httpx.Client(transport=httpx.MockTransport(serve))
    bulk = BulkClient(BASE, StaticTokenSource(TOKEN), http=client, retry=recording_policy([]))
    items = [ManifestItem("Observation", f"https://ehr.example.org/bulk/f{i}.ndjson") for i in range(6)]
    items.append(ManifestItem("Observation", "https://ehr.example.org/bulk/gone.ndjson"))
    outcomes = download_items(bulk, items, tmp_path, requires_token=True, hosts=HostConcurrencyLimiter(2))
    assert [o.ok for o in outcomes] == [True] * 6 + [False]
    assert isinstance(outcomes[-1].error, BulkFileExpiredError)
    assert outcomes[0].path == tmp_path / "0000.Observation.ndjson"


# --- NDJSON helpers -----------------------------------------------------------------------------------


def test_bdx20_verify_counts_types_and_json(tmp_path: Path) -> None:
    good = tmp_path / "good.ndjson"
    good.write_bytes(b'{"resourceType":"Patient","id":"1"}\r\n{"resourceType":"Patient","id":"2"}\n\n')
    result = verify_ndjson_file(good, "Patient", 2)
    assert result.ok and result.lines == 2 and result.blank_lines == 1
    assert list(iter_ndjson_lines(good)) == [
        b'{"resourceType":"Patient","id":"1"}',
        b'{"resourceType":"Patient","id":"2"}',
    ]

    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(b'{"resourceType":"Patient"}\n{"resourceType":"Observation"}\n{"resourceType":"Pat')
    result = verify_ndjson_file(bad, "Patient", 5)
    assert not result.ok and (result.lines, result.wrong_type, result.invalid_json) == (3, 1, 1)
    assert not result.count_matches
    assert result.problems[0] == "line 2: resourceType 'Observation', expected 'Patient'"


@pytest.mark.parametrize(
    ("body", "count"),
    [
        (b'{"resourceType":"Patient"}\n{"resourceType":"Patient"}\n', 3),  # the count alone is wrong
        (b'{"resourceType":"Patient"}\n{"resourceType":"Pat\n', 2),  # one line alone is not JSON
        (b'{"resourceType":"Patient"}\n{"resourceType":"Observation"}\n', 2),  # one line alone of another type
    ],
)
def test_bdx20_each_problem_alone_fails_the_file(tmp_path: Path, body: bytes, count: int) -> None:
    """BDX-20: a wrong count, a line that is not JSON and a line of another type each fail the file on its own
    (the test above has all three in one file, so it held with any two of the checks gone)."""
    path = tmp_path / "one-problem.ndjson"
    path.write_bytes(body)
    result = verify_ndjson_file(path, "Patient", count)
    assert not result.ok and len(result.problems) == 1, result


def test_ndjson_helpers_read_gzip_files(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson.gz"
    path.write_bytes(gzip.compress(b'{"resourceType":"Patient"}\n' * 3))
    assert len(list(iter_ndjson_lines(path))) == 3
    assert verify_ndjson_file(path, "Patient", 3).ok


def test_bdx21_deleted_file_yields_tombstones(tmp_path: Path) -> None:
    from connectors.bulk import iter_deleted_refs

    tx = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    with_meta = {
        "resourceType": "Bundle",
        "type": "transaction",
        "meta": {"lastUpdated": "2026-11-24T08:00:00Z"},
        "entry": [
            {"request": {"method": "DELETE", "url": "Observation/o1"}},
            {"request": {"method": "PUT", "url": "X/1"}},
        ],
    }
    without_meta = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "Patient/p9"}}],
    }
    path = tmp_path / "del.ndjson"
    path.write_bytes(orjson.dumps(with_meta) + b"\n" + orjson.dumps(without_meta) + b"\n")
    refs = [(r.resource_type, r.id, r.deleted_at) for r in iter_deleted_refs(path, tx)]
    assert refs == [("Observation", "o1", datetime(2026, 11, 24, 8, 0, tzinfo=UTC)), ("Patient", "p9", tx)]
    path.write_bytes(b'{"resourceType":"Patient"}\n')
    with pytest.raises(BulkExportError, match="not a Bundle"):
        list(iter_deleted_refs(path, tx))
    # the line named is the server's file's line: blank lines before it are counted, not skipped
    path.write_bytes(orjson.dumps(without_meta) + b"\n\n\n" + b"not json\n")
    with pytest.raises(BulkExportError, match="deleted file line 4 is not JSON"):
        list(iter_deleted_refs(path, tx))


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ({"request": {"method": "DELETE", "url": "Patient/p9"}}, r"line 2: Bundle\.entry is not an array"),
        ([{"request": {"method": "DELETE", "url": "Patient/p9"}}, "Patient/p8"], r"line 2: Bundle\.entry\[1\] is not"),
    ],
    ids=["entry_object", "entry_string"],
)
def test_bdx21_a_deleted_line_whose_entries_cannot_be_read_raises(tmp_path: Path, entry: object, named: str) -> None:
    """A one-item ``entry`` sent as the bare object, or an entry that is not an object, is a malformed line (as a
    line that is not a Bundle is), never read as a Bundle holding no deletion."""
    from connectors.bulk import iter_deleted_refs

    tx = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    fine = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    path = tmp_path / "del.ndjson"
    path.write_bytes(orjson.dumps(fine) + b"\n" + orjson.dumps({**fine, "entry": entry}) + b"\n")
    with pytest.raises(BulkExportError, match=named):
        list(iter_deleted_refs(path, tx))


def test_bdx22_error_file_summary(tmp_path: Path) -> None:
    from connectors.bulk import summarize_error_file

    path = tmp_path / "err.ndjson"
    lines = [
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "warning", "code": "informational", "diagnostics": "x"}],
        },
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing"}, {"severity": "fatal", "code": "exception"}],
        },
    ]
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    summary = summarize_error_file(path)
    assert (summary.outcomes, summary.failures) == (2, 2)
    assert summary.by_severity == {"warning": 1, "error": 1, "fatal": 1}
    assert summary.by_code["processing"] == 1


@pytest.mark.parametrize("issue", [None, [], "failed", ["Observation failed"], [{"severity": "warning"}, 3]])
def test_bdx22_an_error_line_whose_issues_cannot_be_read_holds_its_types(issue: object) -> None:
    """``issue`` is 1..* objects: an error-file OperationOutcome without readable issues may have said a type failed,
    so the item's type (else the whole export) is held incomplete, as for a line that is no OperationOutcome at all;
    before, it counted as reporting no failure and ``_since`` could pass data that never arrived."""
    line = {"resourceType": "OperationOutcome", "issue": issue}
    assert incomplete_types(line, "Condition", {"Observation", "Condition"}) == {"Condition"}
    assert incomplete_types(line, "OperationOutcome", {"Observation"}) == {WHOLE_EXPORT}


def _oo(**issue: Any) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [issue]}


@pytest.mark.parametrize(
    ("line", "item_type", "expected"),
    [
        (
            _oo(severity="fatal", code="exception", diagnostics="failed to export Observation"),
            "OperationOutcome",
            {"Observation"},
        ),
        (_oo(severity="error", code="processing", expression=["Condition.code"]), "OperationOutcome", {"Condition"}),
        (
            _oo(severity="error", code="x", details={"coding": [{"code": "Encounter"}]}),
            "OperationOutcome",
            {"Encounter"},
        ),
        (_oo(severity="error", code="exception", diagnostics="disk full"), "OperationOutcome", {WHOLE_EXPORT}),
        (_oo(severity="error", code="exception", diagnostics="disk full"), "Procedure", {"Procedure"}),
        (
            _oo(severity="warning", code="informational", diagnostics="Observation skipped _typeFilter"),
            "OperationOutcome",
            set(),
        ),
        (_oo(severity="information", code="informational"), "OperationOutcome", set()),
        (_oo(severity="error", diagnostics="Patient Smith is not Unknownthing"), "OperationOutcome", {"Patient"}),
    ],
)
def test_issue10_error_outcomes_name_the_types_they_failed(line: Any, item_type: str, expected: set[str]) -> None:
    """BDX-22 / issue 10: ``error``/``fatal`` issues say which types are incomplete; warnings say nothing."""
    candidates = {"Patient", "Observation", "Condition", "Encounter", "Procedure"}
    assert incomplete_types(line, item_type, candidates) == expected
