"""A Bulk manifest page is decoded whole, and decoding costs ~500 bytes of memory a JSON object: a 60 MiB page of a
million tiny file items took ~540 MB before the file limit (EHRSYNC_BULK_MAX_FILES) refused it. A page holding more
objects than the files the limit allows could need (``OBJECTS_PER_FILE`` each, extensions included) is refused
before it is decoded, naming the limit and the setting to raise, as an invalid manifest (the job cancelled). A legal
manifest of as many files as the limit allows, each with an ``extension`` object, is still accepted."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import httpx
import orjson
import pytest

from connectors.bulk import BulkClient, BulkManifest
from connectors.bulk.manifest import MAX_MANIFEST_FILES
from connectors.errors import BulkExportError, BulkStatusUnavailableError
from connectors.tokens import MintingTokenSource, StaticTokenSource
from sandbox import SandboxServer
from tests.connectors.backend_auth import BackendClient
from tests.connectors.helpers import BASE, TOKEN, Script, recording_policy

STATUS = "https://ehr.example.org/bulk/status/job1"
REFUSED = (
    r"invalid bulk manifest: a page of it holds \d+ JSON objects and arrays, more than {allowed}, what the {limit} "
    r"files ehrsync lands from one export \(EHRSYNC_BULK_MAX_FILES\) could need .* raise EHRSYNC_BULK_MAX_FILES to land"
)


def _page(files: int, *, extension: bool = False, next_url: str | None = None, url_bytes: int = 40) -> bytes:
    pad = "x" * max(0, url_bytes - 40)

    def item(n: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "Observation", "url": f"https://files.example.org/{n}{pad}.ndjson"}
        if extension:  # three objects more a file: the extension, and two complex values in it
            entry["extension"] = {"https://x.example/a": {"valueCoding": {"code": str(n)}}, "https://x.example/b": n}
        return entry

    body: dict[str, Any] = {
        "transactionTime": "2024-01-01T00:00:00Z",
        "request": f"{BASE}/$export",
        "requiresAccessToken": True,
        "output": [item(n) for n in range(files)],
        "error": [],
    }
    if next_url is not None:
        body["link"] = [{"relation": "self", "url": STATUS}, {"relation": "next", "url": next_url}]
    return orjson.dumps(body)


def _client(script: Script) -> BulkClient:
    return BulkClient(BASE, StaticTokenSource(TOKEN), http=script.client(), retry=recording_policy([]))


@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "later-page"])
def test_bdx12_a_page_of_too_many_tiny_files_is_refused_before_it_is_decoded(paged: bool) -> None:
    """300,000 tiny items (~20 MiB): decoded, they held a traced peak of ~360 MiB (18× the page) before the file count
    refused them; now the page is refused at ~40 MiB (2×: the response's copies of its bytes)."""
    big = _page(300_000)
    answers = [httpx.Response(200, content=big)]
    if paged:
        answers.insert(0, httpx.Response(200, content=_page(1, next_url=f"{STATUS}/page/2")))
    script = Script(*answers, httpx.Response(202))
    client = _client(script)
    tracemalloc.start()
    try:
        with pytest.raises(BulkExportError, match=REFUSED.format(allowed=160064, limit=MAX_MANIFEST_FILES)) as info:
            client.check(STATUS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.status == 200 and script.requests[-1].method == "DELETE"  # invalid: the job is cancelled
    assert peak < 4 * len(big), f"peak {peak / 2**20:.0f} MiB for a {len(big) / 2**20:.0f} MiB page"


def test_bdx12_a_legal_manifest_of_as_many_files_as_the_limit_allows_each_with_an_extension_is_accepted() -> None:
    """20,000 files (the default limit), each with long signed-URL-like URLs and an extension of three objects, on one
    page and split over two: every file is gathered."""
    whole = _page(MAX_MANIFEST_FILES, extension=True, url_bytes=250)
    assert len(_client(Script(httpx.Response(200, content=whole))).wait(STATUS).output) == MAX_MANIFEST_FILES
    half = MAX_MANIFEST_FILES // 2
    first = _page(half, extension=True, next_url=f"{STATUS}/page/2", url_bytes=250)
    script = Script(httpx.Response(200, content=first), httpx.Response(200, content=_page(half, extension=True)))
    manifest = _client(script).check(STATUS)
    assert isinstance(manifest, BulkManifest) and len(manifest.output) == MAX_MANIFEST_FILES


def test_bdx12_a_sandbox_page_of_more_objects_than_the_limit_could_need_is_refused_naming_it(
    ehr: SandboxServer,
) -> None:
    """Over the sandbox on a real socket: a file per resource (400-odd), a client landing at most 10 files, so at most
    144 objects a page (10 × 8 + 64): refused before decoding, naming the limit and the setting, the job cancelled
    (its status URL then answers 404)."""
    ehr.admin.settings(bulk_lines_per_file=1)
    backend = BackendClient(ehr)
    policy = recording_policy([], sleep=lambda _s: time.sleep(0.05))
    bulk = BulkClient(ehr.fhir_base, MintingTokenSource(backend.mint_with_expiry), retry=policy, max_manifest_files=10)
    status_url = bulk.kickoff("group", group_id="grp2", types=["Patient", "Observation"])
    with pytest.raises(BulkExportError, match=REFUSED.format(allowed=144, limit=10)):
        bulk.wait(status_url, deadline_s=60)
    with pytest.raises(BulkExportError) as info:
        bulk.poll(status_url)
    assert info.value.status == 404


_TINY = 300_000
_MANIFEST_HEAD = b'{"transactionTime":"2024-01-01T00:00:00Z","request":"x","requiresAccessToken":true,"output":['


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        (_MANIFEST_HEAD + b",".join([b"[]"] * _TINY) + b"]}", True),  # arrays, not objects: as costly to decode
        (b" " * 5000 + _MANIFEST_HEAD + b",".join([b"{}"] * _TINY) + b"]}", True),  # legal leading whitespace
        (b"[" + b",".join([b"{}"] * _TINY) + b"]", False),  # a JSON array is no manifest: never decoded
    ],
    ids=["arrays-in-a-manifest", "after-4-KiB-of-whitespace", "a-json-array"],
)
@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "later-page"])
def test_bdx12_a_page_of_many_json_values_in_any_shape_is_never_decoded(
    body: bytes, refused: bool, paged: bool
) -> None:
    """The bound holds whatever the page's shape: 300,000 empty arrays in ``output``, or objects after more than 4 KiB
    of whitespace, decoded to ~50× the page before the bound counted them; a JSON array body (no manifest, asked
    again as a hiccup) was decoded on every attempt. Now each stays within 4× the page's bytes."""
    answers = [httpx.Response(200, content=body) for _ in range(6)]
    if paged:
        answers.insert(0, httpx.Response(200, content=_page(1, next_url=f"{STATUS}/page/2")))
    client = _client(Script(*answers, httpx.Response(202)))
    tracemalloc.start()
    try:
        if refused:
            with pytest.raises(BulkExportError, match=REFUSED.format(allowed=160064, limit=MAX_MANIFEST_FILES)):
                client.check(STATUS)
        elif paged:
            with pytest.raises(BulkStatusUnavailableError, match="not a JSON object"):
                client.check(STATUS)
        else:
            assert client.poll(STATUS).transient
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(body), f"peak {peak / 2**20:.0f} MiB for a {len(body) / 2**20:.0f} MiB page"


@pytest.mark.parametrize("value", [b'"ab"', b"1000", b"1.5"], ids=["strings", "numbers", "floats"])
@pytest.mark.parametrize("paged", [False, True], ids=["first-page", "later-page"])
def test_bdx12_a_page_of_more_values_than_the_limit_could_need_is_refused_before_it_is_decoded(
    value: bytes, paged: bool
) -> None:
    """No object or array among them: 100,000 strings or numbers in ``output`` decoded to ~20-25x the page before the
    file count refused them. A client landing at most 1,000 files allows 64 commas a file (64,064): refused unread."""
    body = _MANIFEST_HEAD + b",".join([value] * 100_000) + b"]}"
    answers = [httpx.Response(200, content=body)]
    if paged:
        answers.insert(0, httpx.Response(200, content=_page(1, next_url=f"{STATUS}/page/2")))
    script = Script(*answers, httpx.Response(202))
    client = BulkClient(
        BASE, StaticTokenSource(TOKEN), http=script.client(), retry=recording_policy([]), max_manifest_files=1000
    )
    values = r"invalid bulk manifest: a page of it holds 100\d\d\d JSON values \(counted by the commas between them\), "
    tracemalloc.start()
    try:
        with pytest.raises(BulkExportError, match=values + r"more than 64064, what the 1000 files .* raise EHRSYNC"):
            client.check(STATUS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert script.requests[-1].method == "DELETE"  # invalid: the job is cancelled
    assert peak < 4 * len(body), f"peak {peak / 2**20:.1f} MiB for a {len(body) / 2**20:.1f} MiB page"
