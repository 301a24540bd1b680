"""A Bulk file stored gzipped and served as is (``.ndjson.gz``, no ``Content-Encoding``) is held to the per-file limit
(EHRSYNC_BULK_MAX_FILE_BYTES) once inflated, as a ``Content-Encoding: gzip`` body is while it arrives (BDX-17): the
download capped the compressed bytes only, and the truncation check then inflated the whole stream (1 MB of gzipped
zeros is 1 GiB, ~3 s of CPU; at the 10 GiB limit, hours)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from connectors.bulk import BulkClient
from connectors.bulk.ndjson import truncation_of
from connectors.errors import BulkFileTooLargeError, ContentTooLargeError
from connectors.ndjson_files import UTF8_BOM, open_ndjson
from tests.connectors.helpers import recording_policy
from tests.connectors.scripted import Scripted, line_bomb, send
from tests.inflation import count_inflated

LIMIT = 4 * 1024 * 1024


@pytest.fixture
def inflated(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    return count_inflated(monkeypatch)


def test_bdx17_a_stored_gzip_inflating_past_the_limit_stops_there(tmp_path: Path, inflated: dict[int, int]) -> None:
    """The truncation check inflates no more than the limit (and the BOM probe's 3 bytes), then names the file."""
    path = tmp_path / "f.ndjson"
    path.write_bytes(line_bomb(64 * 1024 * 1024))
    with pytest.raises(ContentTooLargeError, match=rf"f\.ndjson is gzip whose content inflates past the {LIMIT}-byte"):
        truncation_of(path, path.stat().st_size, None, LIMIT)
    assert 0 < max(inflated.values()) <= LIMIT + 1 + len(UTF8_BOM)


def test_bdx17_a_stored_gzip_exactly_at_the_limit_is_whole(tmp_path: Path) -> None:
    """Its byte order mark counts, as a ``Content-Encoding`` body's decoded bytes and a plain file's size hold it:
    it was skipped uncounted, so the same content stored gzipped passed 3 bytes over the limit."""
    body = UTF8_BOM + b'{"resourceType":"Patient","id":"p"}\n' * 1000
    path = tmp_path / "f.ndjson"
    path.write_bytes(gzip.compress(body))
    assert truncation_of(path, path.stat().st_size, None, len(body)) is None
    with pytest.raises(ContentTooLargeError):
        truncation_of(path, path.stat().st_size, None, len(body) - 1)
    with open_ndjson(path, len(body)) as handle:  # lines read one at a time are counted too
        assert sum(1 for _ in handle) == 1000
    with pytest.raises(ContentTooLargeError), open_ndjson(path, len(body) - 1) as handle:
        sum(1 for _ in handle)
    for limit in (1, 2):  # a limit smaller than the mark alone
        with pytest.raises(ContentTooLargeError), open_ndjson(path, limit) as handle:
            handle.read(1024)


@pytest.mark.parametrize("encoded", [False, True], ids=["stored-gzip", "content-encoding-gzip"])
def test_bdx17_a_gzip_bomb_fails_as_too_large_whether_encoded_or_stored(
    server: tuple[str, Scripted], tmp_path: Path, inflated: dict[int, int], encoded: bool
) -> None:
    """Both ways a server may send gzip fail alike: BulkFileTooLargeError naming the file and the limit, one request
    (a limit is no truncation: nothing is fetched again), no file left behind. A stored gzip used to pass: its ~64 KB
    on disk were under the limit and only the compressed bytes were counted."""
    base, script = server
    headers = {"Content-Encoding": "gzip"} if encoded else {}
    script.actions = [send(200, line_bomb(64 * 1024 * 1024), headers) for _ in range(3)]
    bulk = BulkClient(f"{base}/fhir", None, retry=recording_policy([]))  # type: ignore[arg-type]
    dest = tmp_path / "p.ndjson"
    with pytest.raises(BulkFileTooLargeError) as info:
        bulk.download(f"{base}/files/Patient.ndjson", dest, requires_token=False, max_bytes=LIMIT)
    message = str(info.value)
    assert f"{base}/files/Patient.ndjson" in message and f"{LIMIT}-byte limit per file" in message
    assert "EHRSYNC_BULK_MAX_FILE_BYTES" in message
    assert len(script.seen) == 1 and list(tmp_path.iterdir()) == []
    assert max(inflated.values(), default=0) <= LIMIT + 1 + len(UTF8_BOM)
