"""The Bulk client's edges of paged manifests (``link`` ``next``) and refused files, one answer at a time over
httpx.MockTransport; the whole exports are in ``tests/engine/test_bulk_real_servers.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.bulk import BulkClient
from connectors.bulk.manifest_pages import MAX_MANIFEST_PAGES
from connectors.errors import (
    BulkExportError,
    BulkFileExpiredError,
    BulkStatusUnavailableError,
    NeedsReauthError,
    SecurityPolicyError,
)
from connectors.tokens import StaticTokenSource
from connectors.transport.bounds import BodyBounds
from tests.connectors.helpers import BASE, TOKEN, Script, recording_policy

STATUS = "https://ehr.example.org/bulk/status/job1"
FILES = "https://ehr.example.org/bulk/files/job1"
TX = "2026-11-25T09:00:00Z"


def _bulk(script: Script, unauthorized: list[str] | None = None) -> BulkClient:
    hook = (lambda: unauthorized.append("called")) if unauthorized is not None else None
    return BulkClient(
        BASE, StaticTokenSource(TOKEN), http=script.client(), retry=recording_policy([]), on_unauthorized=hook
    )


def _page(files: list[str], next_url: str | None = None, **overrides: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "transactionTime": TX,
        "request": f"{BASE}/Group/g1/$export",
        "requiresAccessToken": True,
        "output": [{"type": "Observation", "url": f"{FILES}/{name}.ndjson"} for name in files],
        "error": [],
    }
    if next_url is not None:
        body["link"] = [{"relation": "self", "url": STATUS}, {"relation": "next", "url": next_url}]
    body.update(overrides)
    return httpx.Response(200, json=body)


def test_bdx12_manifest_pages_are_gathered_following_relative_and_absolute_next_links() -> None:
    script = Script(
        _page(["o1"], next_url="job1/page/2"),  # relative: resolved against the page it came in
        _page(["o2", "o3"], next_url=f"{STATUS}/page/3"),
        _page(["o4"]),
    )
    manifest = _bulk(script).wait(STATUS)
    assert [i.url.rsplit("/", 1)[1] for i in manifest.output] == ["o1.ndjson", "o2.ndjson", "o3.ndjson", "o4.ndjson"]
    assert [str(r.url) for r in script.requests] == [STATUS, f"{STATUS}/page/2", f"{STATUS}/page/3"]
    assert manifest.next_page is None
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in script.requests)


def test_bdx12_a_next_link_spelt_with_a_capital_is_followed() -> None:
    """RFC 8288 compares relation types case-insensitively (as the REST search's paging does, BDX-29): a ``Next``
    read as no link ended the manifest at its first page, and ``_since`` moved past the files of the others."""
    links = [{"relation": "Self", "url": STATUS}, {"relation": "Next", "url": f"{STATUS}/page/2"}]
    script = Script(_page(["o1"], link=links), _page(["o2"]))
    assert [i.url for i in _bulk(script).wait(STATUS).output] == [f"{FILES}/o1.ndjson", f"{FILES}/o2.ndjson"]


def test_bdx12_a_later_page_may_leave_out_request_and_error() -> None:
    later: dict[str, Any] = {
        "transactionTime": TX,
        "requiresAccessToken": True,
        "output": [{"type": "Observation", "url": f"{FILES}/o2.ndjson"}],
    }
    script = Script(_page(["o1"], next_url=f"{STATUS}/page/2"), httpx.Response(200, json=later))
    assert [i.url for i in _bulk(script).wait(STATUS).output] == [f"{FILES}/o1.ndjson", f"{FILES}/o2.ndjson"]


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (_page(["o2"], next_url=f"{STATUS}/page/2"), "leads back to a page already read"),
        (_page(["o2"], transactionTime="2026-11-25T09:00:01Z"), "another transactionTime"),
        (_page(["o2"], requiresAccessToken=False), "another requiresAccessToken"),
    ],
    ids=["cycle", "transaction-time", "token-rule"],
)
def test_bdx12_an_inconsistent_paged_manifest_is_invalid_and_the_job_cancelled(
    second: httpx.Response, message: str
) -> None:
    """An invalid manifest is never half-used: the export fails (status 200, like any invalid manifest) and the
    job is cancelled, so ``_since`` cannot move past the files the bad page would have listed."""
    script = Script(_page(["o1"], next_url=f"{STATUS}/page/2"), second, httpx.Response(202))
    with pytest.raises(BulkExportError, match=message) as info:
        _bulk(script).wait(STATUS)
    assert info.value.status == 200
    assert script.requests[-1].method == "DELETE"


def test_bdx12_manifest_pages_are_bounded() -> None:
    def endless(request: httpx.Request) -> httpx.Response:
        n = int(request.url.path.rsplit("/", 1)[1]) if "/page/" in request.url.path else 1
        return _page([f"o{n}"], next_url=f"{STATUS}/page/{n + 1}")

    script = Script(*([endless] * MAX_MANIFEST_PAGES), httpx.Response(202))
    with pytest.raises(BulkExportError, match=f"past {MAX_MANIFEST_PAGES} pages"):
        _bulk(script).wait(STATUS)
    assert len(script.requests) == MAX_MANIFEST_PAGES + 1  # every page, then the DELETE


def test_bdx19_a_single_403_is_asked_again_and_lands(tmp_path: Path) -> None:
    body = b'{"resourceType":"Observation","id":"o1"}\n'
    script = Script(httpx.Response(403), httpx.Response(200, content=body))
    path = _bulk(script).download(f"{FILES}/o1.ndjson", tmp_path / "o1", requires_token=False)
    assert path.read_bytes() == body and len(script.requests) == 2


@pytest.mark.parametrize("status", [403, 401])
def test_bdx19_bdx16_refused_twice_is_an_expired_file_and_not_the_clients_fault(status: int, tmp_path: Path) -> None:
    unauthorized: list[str] = []
    script = Script(httpx.Response(status), httpx.Response(status))
    with pytest.raises(BulkFileExpiredError, match=rf"refused twice \(HTTP {status}\)") as info:
        _bulk(script, unauthorized).download(f"{FILES}/o1.ndjson", tmp_path / "o1", requires_token=False)
    assert info.value.status == status
    assert unauthorized == [] and not any("Authorization" in r.headers for r in script.requests)
    assert list(tmp_path.iterdir()) == []


def test_bdx16_a_401_to_a_file_sent_with_the_token_is_still_the_clients(tmp_path: Path) -> None:
    """With the token sent, a 401 is still the OAuth client's business (its token source is asked for a fresh one;
    a static token cannot give one): only a request sent without the token is the storage host's."""
    script = Script(httpx.Response(401))
    with pytest.raises(NeedsReauthError):
        _bulk(script).download(f"{FILES}/o1.ndjson", tmp_path / "o1", requires_token=True)
    assert script.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_bdx09_a_later_page_failing_transiently_keeps_the_job_resumable() -> None:
    """A 503 on page 2 after the retries is the hiccup it is on the status URL (BDX-09): the job is neither failed
    nor cancelled, and the next run reads every page again."""
    script = Script(_page(["o1"], next_url=f"{STATUS}/page/2"), *([httpx.Response(503)] * 5))
    with pytest.raises(BulkStatusUnavailableError, match="kept failing transiently"):
        _bulk(script).wait(STATUS)
    assert all(r.method == "GET" for r in script.requests) and len(script.requests) == 6


_NO_JSON_OBJECT = [
    httpx.Response(200, content=b"<html>"),
    httpx.Response(200, content=b'{"transactionTi'),
    httpx.Response(200, json=["not", "an", "object"]),
]


def test_bdx09_a_later_page_answering_no_json_object_is_asked_again() -> None:
    """A gateway's HTML page, a body cut short, a JSON array: no manifest page at all, as on the status URL itself
    (``wire.UNREADABLE_200``), so the same page is asked again and the manifest gathered whole."""
    script = Script(_page(["o1"], next_url=f"{STATUS}/page/2"), *_NO_JSON_OBJECT, _page(["o2"]))
    assert [i.url for i in _bulk(script).wait(STATUS).output] == [f"{FILES}/o1.ndjson", f"{FILES}/o2.ndjson"]
    assert [str(r.url) for r in script.requests] == [STATUS, *[f"{STATUS}/page/2"] * 4]


def test_bdx09_a_later_page_that_keeps_answering_no_json_object_keeps_the_job_resumable() -> None:
    """Once the retry policy's attempts are spent the run fails by name, the job neither failed nor cancelled.
    Before, the first such answer made the manifest invalid and the job was cancelled (``DELETE``), so the next run
    exported everything again, although the server had the whole export ready."""
    cut = httpx.Response(200, content=b"<")
    script = Script(_page(["o1"], next_url=f"{STATUS}/page/2"), *_NO_JSON_OBJECT, cut, cut)
    with pytest.raises(BulkStatusUnavailableError, match="answered 200 with a body that is not a JSON object"):
        _bulk(script).wait(STATUS)
    assert all(r.method == "GET" for r in script.requests) and len(script.requests) == 6  # 1 + max_attempts (5)


@pytest.mark.parametrize(
    ("second_url", "message"),
    [
        (f"{STATUS}/page/2", "answered HTTP 404"),
        ("https://other.example.org/bulk/status/job1/page/2", "is on another origin than the FHIR server"),
    ],
    ids=["gone", "other-origin"],
)
def test_bdx12_sal40_a_page_gone_or_elsewhere_makes_the_manifest_invalid(second_url: str, message: str) -> None:
    """A page that is gone, or linked on another origin (the token goes only to the FHIR server's, SAL-40), makes the
    manifest unusable: the export fails and the job is cancelled, so it does not hold the server's slot."""
    answers: list[httpx.Response] = [_page(["o1"], next_url=second_url)]
    if "other" not in second_url:
        answers.append(httpx.Response(404))
    script = Script(*answers, httpx.Response(202))
    with pytest.raises(BulkExportError, match=message):
        _bulk(script).wait(STATUS)
    assert [r.method for r in script.requests][-1] == "DELETE"
    assert not any(r.url.host == "other.example.org" for r in script.requests)


def test_bdx12_a_pages_link_is_vetted_even_without_a_token() -> None:
    """A client without a token still never follows a next link to an internal address (the file guard)."""
    script = Script(_page(["o1"], next_url="http://169.254.169.254/latest/meta-data"), httpx.Response(202))
    client = BulkClient(BASE, None, http=script.client(), retry=recording_policy([]))
    with pytest.raises(SecurityPolicyError):
        client.wait(STATUS)
    assert [r.url.host for r in script.requests] == ["ehr.example.org"]


def test_bdx12_later_pages_together_are_held_to_the_response_limit() -> None:
    """Each page is under the per-response limit, but together the later pages may not exceed it either: a paged
    manifest holds no more than one manifest could before paging."""
    many = [f"file-{n:05d}" for n in range(400)]
    script = Script(
        _page(["o1"], next_url=f"{STATUS}/page/2"),
        _page(many[:200], next_url=f"{STATUS}/page/3"),
        _page(many[200:]),
        httpx.Response(202),
    )
    size = len(script.steps[1].content)
    client = BulkClient(
        BASE,
        StaticTokenSource(TOKEN),
        http=script.client(),
        retry=recording_policy([]),
        bounds=BodyBounds(max_bytes=int(size * 1.5), deadline_s=None),
    )
    with pytest.raises(BulkExportError, match="later pages together exceed"):
        client.wait(STATUS)


def test_bdx19_refusals_apart_are_not_an_expiry(tmp_path: Path) -> None:
    """403, a truncated body, 403 again, then the whole file: refusals that are not in a row do not make the file
    expired, and a refusal never spends one of the attempts a truncated body has."""
    body = b'{"resourceType":"Observation","id":"o1"}\n'
    script = Script(
        httpx.Response(403),
        httpx.Response(200, content=body[:10]),
        httpx.Response(403),
        httpx.Response(200, content=body),
    )
    path = _bulk(script).download(f"{FILES}/o1.ndjson", tmp_path / "o1", requires_token=False, attempts=2)
    assert path.read_bytes() == body and len(script.requests) == 4


def test_bdx19_refused_twice_is_an_expiry_even_with_one_attempt(tmp_path: Path) -> None:
    script = Script(httpx.Response(403), httpx.Response(403))
    with pytest.raises(BulkFileExpiredError):
        _bulk(script).download(f"{FILES}/o1.ndjson", tmp_path / "o1", requires_token=False, attempts=1)
