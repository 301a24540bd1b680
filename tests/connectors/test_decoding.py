"""Bodies inflated a bounded piece at a time (connectors/transport/decoding.py): every coding a server may send
for ``Accept-Encoding: gzip, deflate``, arriving in chunks of any size, decodes to exactly what gzip(1)/zlib
would."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator

import httpx
import pytest

from connectors.errors import UnsupportedContentEncodingError
from connectors.transport.bounds import read_capped
from connectors.transport.decoding import ERROR_BODY_BYTES, error_answer, iter_decoded

TEXT = b"".join(b'{"resourceType":"Observation","id":"o%d"}\n' % i for i in range(3000))


class _Chunks(httpx.SyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks


def _response(body: bytes, coding: str | None, chunk: int = 4096) -> httpx.Response:
    headers = {"Content-Encoding": coding} if coding is not None else {}
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    return httpx.Response(200, headers=headers, stream=_Chunks(chunks), request=httpx.Request("GET", "https://e/f"))


def _decoded(body: bytes, coding: str | None, chunk: int = 4096, piece: int = 1000) -> bytes:
    pieces = list(iter_decoded(_response(body, coding, chunk), piece_bytes=piece))
    assert all(0 < len(p) <= piece for p in pieces)
    return b"".join(pieces)


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        (None, TEXT),
        ("identity", TEXT),
        ("gzip", gzip.compress(TEXT)),
        ("x-gzip", gzip.compress(TEXT)),
        ("GZip", gzip.compress(TEXT)),
        ("deflate", zlib.compress(TEXT)),  # RFC 9110: the zlib format
        ("deflate", _raw_deflate(TEXT)),  # what some servers send as "deflate"
        ("gzip, gzip", gzip.compress(gzip.compress(TEXT))),  # applied in order, undone in reverse
        ("deflate, gzip", gzip.compress(zlib.compress(TEXT))),
        ("utf-8", TEXT),  # not a compression (a known server mistake): read as is, as httpx does
    ],
)
@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_every_coding_decodes_exactly_at_any_chunking(coding: str | None, body: bytes, chunk: int) -> None:
    assert _decoded(body, coding, chunk) == TEXT


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_every_gzip_member_is_decoded_with_trailing_garbage_ignored(chunk: int) -> None:
    """RFC 1952 §2.2: a gzip file is a series of members (httpx kept only the first); bytes after the last
    member that do not start another one are ignored, as gzip(1) does."""
    third = len(TEXT) // 3
    body = gzip.compress(TEXT[:third]) + gzip.compress(TEXT[third : 2 * third]) + gzip.compress(TEXT[2 * third :])
    assert _decoded(body, "gzip", chunk) == TEXT
    assert _decoded(body + b"\x00\x00junk", "gzip", chunk) == TEXT


def test_pieces_stay_bounded_however_far_the_body_inflates() -> None:
    """~64 KiB of gzip inflating to 64 MiB: no piece longer than asked for, nothing lost."""
    body = gzip.compress(b"\x00" * (64 * 1024 * 1024), compresslevel=9)
    total = 0
    for piece in iter_decoded(_response(body, "gzip", chunk=64 * 1024), piece_bytes=1 << 20):
        assert len(piece) <= 1 << 20
        total += len(piece)
    assert total == 64 * 1024 * 1024


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_body_without_its_end_marker_is_kept_as_far_as_it_goes_with_a_warning(
    coding: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As httpx and browsers do: servers that flush a gzip stream but never finish it exist; HTTP's framing, the
    Bulk line checks and the JSON parser are what catch a cut body."""
    packer = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16 if coding == "gzip" else zlib.MAX_WBITS)
    unfinished = packer.compress(TEXT) + packer.flush(zlib.Z_SYNC_FLUSH)
    with caplog.at_level("WARNING", logger="connectors.transport.decoding"):
        assert _decoded(unfinished, coding) == TEXT
    assert "ended without its end marker" in caplog.text
    assert [getattr(r, "url", None) for r in caplog.records] == ["https://e/f"]
    caplog.clear()
    assert _decoded(gzip.compress(TEXT) if coding == "gzip" else zlib.compress(TEXT), coding) == TEXT
    assert not caplog.text


def test_a_corrupt_body_is_a_decoding_error() -> None:
    body = bytearray(gzip.compress(TEXT))
    body[30:40] = b"\xff" * 10
    with pytest.raises(httpx.DecodingError, match="invalid gzip body"):
        _decoded(bytes(body), "gzip")


def test_an_empty_gzip_body_is_empty() -> None:
    assert _decoded(b"", "gzip") == b""


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, br", "compress"])
def test_compressions_ehrsync_cannot_undo_are_refused_by_name(coding: str) -> None:
    with pytest.raises(UnsupportedContentEncodingError, match=r"GET https://e/f answered with Content-Encoding"):
        _decoded(b"\x1b\x00", coding)


def test_a_body_read_before_streaming_is_yielded_in_pieces() -> None:
    response = httpx.Response(200, content=gzip.compress(TEXT), headers={"Content-Encoding": "gzip"})
    response.read()
    pieces = list(iter_decoded(response, piece_bytes=10_000))
    assert b"".join(pieces) == TEXT and max(map(len, pieces)) == 10_000


def _error(body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.Response(500, headers=headers, stream=_Chunks([body]), request=httpx.Request("GET", "https://e/f"))


def test_an_error_answer_is_read_at_once_decoded_and_cut_at_its_bound() -> None:
    page = b"{" + b" " * (3 * ERROR_BODY_BYTES)
    answer = error_answer(_error(gzip.compress(page), {"Content-Encoding": "gzip", "Retry-After": "7"}))
    assert answer.status_code == 500 and answer.headers["Retry-After"] == "7"
    assert "Content-Encoding" not in answer.headers and answer.content == page[:ERROR_BODY_BYTES]
    assert answer.request.url == "https://e/f"


def test_an_undecodable_error_answer_keeps_its_status() -> None:
    answer = error_answer(_error(b"\x1f\x8bnot gzip at all", {"Content-Encoding": "gzip"}))
    assert answer.status_code == 500 and answer.content == b""
    assert error_answer(_error(b"\x1b\x00", {"Content-Encoding": "br"})).status_code == 500


def test_an_uncapped_json_read_decodes_through_the_same_path() -> None:
    """``read_capped(response, None)`` (no byte limit) reads through ``iter_decoded`` too: every gzip member
    (httpx's ``read()`` kept the first only), and a coding ehrsync cannot undo refused by name."""
    half = len(TEXT) // 2
    body = gzip.compress(TEXT[:half]) + gzip.compress(TEXT[half:])
    assert read_capped(_response(body, "gzip"), None) == TEXT
    with pytest.raises(UnsupportedContentEncodingError):
        read_capped(_response(b"\x1b\x00", "br"), None)
