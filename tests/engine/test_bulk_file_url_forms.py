"""Manifest file URLs written as references (BDX-12), through the production engine over real sockets.

Bulk Data 1.0 calls ``output.url`` "the path to the file" and 2.0 "the absolute path to the file": a server may write
``/bulk/files/...`` (an absolute-path reference) or a path relative to the manifest's own URL. Either names the
file at the URL it resolves to against the manifest page it came on (RFC 3986 §5), as a kick-off's
``Content-Location`` and a manifest's ``next`` link already are. Such a manifest used to be refused as invalid: the
job was cancelled and the run failed, and every later run kicked off the same export and failed the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.bulk import parse_manifest
from connectors.errors import BulkExportError
from engine import cursors, run_bulk_export
from sandbox import SandboxServer
from tests.engine.helpers import connect_backend, content_fingerprint, make_environment

GROUP = "grp0"
STREAM = cursors.bulk_stream("group", GROUP)


def _export(sb: SandboxServer, root: Path, http: httpx.Client, run_id: str) -> list[tuple[Any, ...]]:
    """What one export of ``sb``, as it is set now, lands into a new world under ``root``; it must complete and move
    ``_since``."""
    world = make_environment(root / run_id, http=http)
    conn = connect_backend(world, sb, http=http, group_id=GROUP)
    report = run_bulk_export(world.env, conn, run_id)
    assert report.status == "completed", report.error
    assert report.files > 1 and not report.count_mismatches
    assert sum(r.quarantined for r in report.types.values()) == 0
    assert cursors.get_mark(world.env.db, conn, STREAM, "*") is not None
    return content_fingerprint(world.env.warehouse_target, with_connection=False)


@pytest.mark.parametrize("form", ["path", "relative"])
@pytest.mark.parametrize("paged", [False, True], ids=["one-page", "paged"])
def test_bdx12_file_urls_written_as_references_resolve_against_their_manifest_page(
    start_sandbox: Any, tmp_path: Path, http: httpx.Client, request_log: Any, form: str, paged: bool
) -> None:
    sb = start_sandbox(bulk_lines_per_file=40, bulk_manifest_page_size=2 if paged else None)
    clean = _export(sb, tmp_path, http, "absolute")
    sb.admin.settings(bulk_file_url_form=form)
    request_log.clear()
    assert _export(sb, tmp_path, http, form) == clean
    assert len(request_log.paths("/bulk/files/")) > 1, "every file is fetched at the URL its reference names"
    assert any("/page/" in url.path for url in request_log.paths("/bulk/status/")) == paged


def test_bdx12_a_file_reference_resolves_against_the_page_it_came_on_and_must_then_be_http() -> None:
    """Unit view of the rule: absolute URLs are kept as written, references are resolved against the page's URL, and
    what does not resolve to an http(s) URL (another scheme, or a reference with no page URL to resolve it against)
    is still an invalid manifest naming the item."""
    page = "https://ehr.example.org/fhir/bulk/status/j1?x=1"
    written = ["https://cdn.example.org/a.ndjson?sig=1", "/files/b.ndjson", "../files/c.ndjson", "//cdn.example.org/d"]
    body = {
        "transactionTime": "2026-11-25T09:00:00Z",
        "request": "https://ehr.example.org/fhir/$export",
        "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": url} for url in written],
        "error": [],
    }
    urls = [item.url for item in parse_manifest(body, base_url=page).output]
    assert urls == [
        "https://cdn.example.org/a.ndjson?sig=1",
        "https://ehr.example.org/files/b.ndjson",
        "https://ehr.example.org/fhir/bulk/files/c.ndjson",
        "https://cdn.example.org/d",
    ]
    with pytest.raises(BulkExportError, match=r"output\[1\]\.url must be an http\(s\) URL: it is not an absolute"):
        parse_manifest(body)
    body["output"] = [{"type": "Patient", "url": "s3://bucket/e.ndjson"}]
    with pytest.raises(BulkExportError, match=r"output\[0\]\.url .* once resolved against the manifest's URL"):
        parse_manifest(body, base_url=page)


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("/files/p\n.ndjson", "contains control characters"),
        ("/\t/evil.example/x", "contains control characters"),
    ],
)
def test_bdx12_an_empty_file_reference_or_one_with_control_characters_is_invalid_not_resolved(
    written: str, problem: str
) -> None:
    """An empty ``url`` resolves (RFC 3986 §5.2) to the manifest page itself, and urllib drops tabs and newlines
    before resolving (``/\\t/evil.example/x`` became ``https://evil.example/x``, another origin): resolved, the status
    URL was downloaded as a file, or a URL other than the one written was. Both were refused before references were
    resolved; they still are, naming the item and the problem."""
    body = {
        "transactionTime": "2026-11-25T09:00:00Z",
        "request": "https://ehr.example.org/fhir/$export",
        "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": "/files/a.ndjson"}],
        "error": [],
        "deleted": [{"type": "Bundle", "url": written}],
    }
    with pytest.raises(BulkExportError, match=rf"deleted\[0\]\.url must be an http\(s\) URL.*: it {problem}"):
        parse_manifest(body, base_url="https://ehr.example.org/fhir/bulk/status/j1")


@pytest.mark.parametrize("written", ["#files", "https://ehr.example.org/fhir/bulk/status/j1", "j1#part"])
def test_bdx12_a_file_reference_naming_the_manifest_page_itself_is_invalid(written: str) -> None:
    """A fragment-only reference resolves (RFC 3986 §5.2) to the page it came on: that page is the manifest, never a
    file, and downloading it would land the manifest's JSON as NDJSON of the item's type."""
    body = {
        "transactionTime": "2026-11-25T09:00:00Z",
        "request": "https://ehr.example.org/fhir/$export",
        "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": written}],
        "error": [],
    }
    with pytest.raises(BulkExportError, match=r"output\[0\]\.url names the manifest page itself, not a file"):
        parse_manifest(body, base_url="https://ehr.example.org/fhir/bulk/status/j1")
