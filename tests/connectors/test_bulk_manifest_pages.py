"""The Bulk client's edges of paged manifests (``link`` ``next``) and refused files, one answer at a time over
httpx.MockTransport; the whole exports are in ``tests/engine/test_bulk_real_servers.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.bulk import BulkClient
from connectors.bulk.manifest_pages import MAX_MANIFEST_PAGES
from connectors.errors import BulkExportError, BulkFileExpiredError, NeedsReauthError
from connectors.tokens import StaticTokenSource
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
        (httpx.Response(200, content=b"<html>"), "manifest page is not JSON"),
    ],
    ids=["cycle", "transaction-time", "token-rule", "not-json"],
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
