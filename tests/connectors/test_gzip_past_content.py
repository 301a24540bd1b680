"""A Bulk file stored gzipped (no Content-Encoding) of members that inflate to nothing (20 bytes each), or of zero
padding after its last member, held a reader for ~0.1-0.2 s of CPU per MB (gzip reads them a member, or a byte, at
a time), under any inflated-byte limit: ~30 min for a 10 GiB file, outside the per-file deadline (BDX-17). The
readers with a limit (the truncation check, landing) now stop once the compressed bytes read run AHEAD_BYTES past
what they inflated to, naming the file; a file of content, however poorly it compresses, never gets near that."""

from __future__ import annotations

import base64
import gzip
import os
import re
from pathlib import Path

import pytest

from connectors.bulk import BulkClient
from connectors.bulk.ndjson import truncation_of
from connectors.errors import BulkFileTooLargeError, GzipPastContentError
from connectors.ndjson_files import AHEAD_BYTES, open_ndjson
from tests.connectors.helpers import recording_policy
from tests.connectors.scripted import Scripted, send
from warehouse import LandingFileTooLargeError, LandingZone, land_ndjson_file

LIMIT = 10 * 1024**3  # the default per-file limit: no help against a file that inflates to almost nothing
LINE = b'{"resourceType":"Patient","id":"p"}\n'
EMPTY = gzip.compress(b"")
FILE_BYTES = 3 * AHEAD_BYTES


def _empty_members() -> bytes:
    """A line, then members that inflate to nothing: three times what may be read past the content."""
    return gzip.compress(LINE) + EMPTY * (FILE_BYTES // len(EMPTY))


def _zero_padding() -> bytes:
    return gzip.compress(LINE) + b"\0" * FILE_BYTES


def _read_of(message: str) -> int:
    """The compressed bytes read before stopping, as the message names them."""
    found = re.search(r"\((\d+) read, (\d+) inflated", message)
    assert found, message
    return int(found.group(1))


@pytest.mark.parametrize("body", [_empty_members, _zero_padding], ids=["empty-members", "zero-padding"])
def test_bdx17_a_stored_gzip_read_far_past_its_content_fails_naming_it(tmp_path: Path, body: object) -> None:
    path = tmp_path / "f.ndjson"
    path.write_bytes(body())  # type: ignore[operator]
    with pytest.raises(GzipPastContentError, match=r"f\.ndjson is gzip whose compressed bytes run more than") as info:
        truncation_of(path, path.stat().st_size, None, LIMIT)
    read = _read_of(str(info.value))
    assert AHEAD_BYTES < read <= AHEAD_BYTES + 64 * 1024  # stopped there, not at the end (3 * AHEAD_BYTES)
    assert len(EMPTY) == 20 and read // len(EMPTY) < path.stat().st_size // len(EMPTY) // 2


def test_bdx17_landing_a_stored_gzip_of_empty_members_fails_naming_it_and_lands_nothing(tmp_path: Path) -> None:
    path = tmp_path / "f.ndjson"
    path.write_bytes(_empty_members())
    zone = LandingZone(tmp_path / "zone")
    with pytest.raises(LandingFileTooLargeError, match=r"f\.ndjson is gzip whose compressed bytes") as info:
        land_ndjson_file(
            zone, path, connection_id="c1", resource_type="Patient", run_id="r1", source="s", max_bytes=LIMIT
        )
    assert _read_of(str(info.value)) <= AHEAD_BYTES + 64 * 1024
    assert not list((tmp_path / "zone").rglob("*.parquet"))


def test_bdx17_a_downloaded_stored_gzip_of_empty_members_fails_as_too_large(
    server: tuple[str, Scripted], tmp_path: Path
) -> None:
    """Fetched again it would be the same bytes: BulkFileTooLargeError naming the file and why, one request."""
    base, script = server
    script.actions = [send(200, _empty_members()) for _ in range(3)]
    bulk = BulkClient(f"{base}/fhir", None, retry=recording_policy([]))  # type: ignore[arg-type]
    with pytest.raises(BulkFileTooLargeError) as info:
        bulk.download(f"{base}/files/Patient.ndjson", tmp_path / "p.ndjson", requires_token=False, max_bytes=LIMIT)
    message = str(info.value)
    assert (
        f"bulk file {base}/files/Patient.ndjson, stored gzipped" in message and "inflate to almost nothing" in message
    )
    assert len(script.seen) == 1 and list(tmp_path.iterdir()) == []


def _poorly_compressing(lines: int, line_bytes: int) -> bytes:
    """NDJSON of random base64 (deflate's worst case for text: ~0.75 of its size) with a line of ``line_bytes``."""
    text = base64.b64encode(os.urandom(line_bytes * 3 // 4)).decode()
    long = b'{"resourceType":"Binary","id":"b","data":"' + text.encode() + b'"}\n'
    data = [base64.b64encode(os.urandom(600)) for _ in range(lines)]
    rest = [b'{"resourceType":"Binary","id":"b%d","data":"%s"}\n' % (n, d) for n, d in enumerate(data)]
    return long + b"".join(rest)


def test_bdx17_a_file_of_content_is_never_taken_for_one_read_past_it(tmp_path: Path) -> None:
    """Random base64 with a first line of 3 * AHEAD_BYTES (a read covers it a piece at a time), then a member per
    line and some empty members between: each read whole, by every reader with a limit."""
    body = _poorly_compressing(2000, 3 * AHEAD_BYTES)
    lines = body.splitlines(keepends=True)
    path = tmp_path / "f.ndjson"
    stored = gzip.compress(b"".join(lines[:1000]), 1) + b"".join(gzip.compress(x) + EMPTY * 50 for x in lines[1000:])
    path.write_bytes(stored)
    assert path.stat().st_size > len(body) * 0.7
    assert truncation_of(path, path.stat().st_size, None, LIMIT) is None
    with open_ndjson(path, LIMIT) as handle:
        assert handle.readline() == lines[0] and sum(1 for _ in handle) == len(lines) - 1
    with open_ndjson(path, LIMIT) as handle:
        assert handle.read() == body
    zone = LandingZone(tmp_path / "zone", max_resource_bytes=4 * AHEAD_BYTES)
    landed = land_ndjson_file(
        zone, path, connection_id="c", resource_type="Binary", run_id="r", source="s", max_bytes=LIMIT
    )
    assert landed.rows == len(lines)
