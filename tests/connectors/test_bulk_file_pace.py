"""What a server can make a Bulk file download spend: time (a trickled body, trickled headers) and CPU (a body that
decodes to nothing). A file may rightly stream for hours, so it has no request deadline; before this, a server
sending one byte per read timeout held a download worker for as long as it liked, its headers as well, and an
endless run of empty gzip members never reached the decoded byte cap. Now the request deadline covers a file up to
its headers, the body must average ``LowSpeedLimit`` over each window (curl's ``--speed-limit``/``--speed-time``),
and the bytes on the wire are capped at ``wire_allowance`` of the file's limit.

A scripted socket server (``tests/connectors/scripted.py``) plays the EHR: real sockets, real timing."""

from __future__ import annotations

import gzip
import inspect
import os
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import orjson
import pytest

from connectors.bulk import BulkClient, download_items
from connectors.bulk.file_limits import (
    DEFAULT_FILE_DEADLINE_S,
    DEFAULT_LOW_SPEED,
    DEFAULT_MAX_FILE_BYTES,
    file_deadline_from_env,
    low_speed_from_env,
)
from connectors.errors import (
    BulkFileDeadlineError,
    BulkFileTooLargeError,
    BulkFileTooSlowError,
    BulkFileTruncatedError,
    ConfigurationError,
    RequestDeadlineError,
    TransferDeadlineError,
    TransferTooSlowError,
)
from connectors.fhir.download import wire_allowance
from connectors.transport import BodyBounds, LowSpeedLimit, TransferDeadline
from tests.connectors.helpers import recording_policy
from tests.connectors.scripted import Action, Scripted, headers_a_byte_at_a_time, send

NDJSON = b"".join(orjson.dumps({"resourceType": "Patient", "id": str(i)}) + b"\n" for i in range(6))


def _body_in_bursts(body: bytes, burst: int, every_s: float) -> Action:
    """200 with the whole Content-Length announced, then ``burst`` bytes every ``every_s`` seconds."""

    def act(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/fhir+ndjson")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        try:
            for start in range(0, len(body), burst):
                h.wfile.write(body[start : start + burst])
                h.wfile.flush()
                time.sleep(every_s)
        except OSError:  # the client hung up: the point
            h.close_connection = True

    return act


def _headers_a_byte_at_a_time(delay_s: float) -> Action:
    return headers_a_byte_at_a_time(NDJSON, delay_s, "application/fhir+ndjson")


def _bulk(base: str, **kwargs: object) -> BulkClient:
    return BulkClient(f"{base}/fhir", None, retry=recording_policy([]), **kwargs)  # type: ignore[arg-type]


def test_bdx18_a_trickled_file_is_cut_off_at_the_low_speed_limit_and_fetched_again(
    server: tuple[str, Scripted], tmp_path: Path
) -> None:
    """20 bytes every 0.1 s (~200 B/s) against 2,000 B/s over 0.3 s: each attempt ends ~0.3 s in, the file is
    fetched again (as a truncated one is), then fails by name, naming the variables; no partial file is left."""
    base, script = server
    body = NDJSON * 4
    script.actions = [_body_in_bursts(body, 20, 0.1) for _ in range(3)]
    bulk = _bulk(base, low_speed=LowSpeedLimit(2000, 0.3))
    started = time.monotonic()
    with pytest.raises(BulkFileTooSlowError) as caught:
        bulk.download(f"{base}/files/Patient.ndjson", tmp_path / "p.ndjson", requires_token=False)
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert caught.value.code == "bulk_file_too_slow"
    assert "arrived too slowly on each of 3 attempts" in message
    assert "below the low-speed limit of 2000 bytes/s" in message
    assert "EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S over EHRSYNC_BULK_LOW_SPEED_WINDOW_S" in message
    assert len(script.seen) == 3
    assert elapsed < 8.0, elapsed  # each attempt ~0.4 s; the whole body would take ~4.4 s per attempt, 13 s in all
    assert list(tmp_path.iterdir()) == []


def test_a_file_slow_once_lands_on_its_next_attempt(server: tuple[str, Scripted], tmp_path: Path) -> None:
    base, script = server
    body = NDJSON * 4
    script.actions = [_body_in_bursts(body, 20, 0.1), send(200, body)]
    dest = _bulk(base, low_speed=LowSpeedLimit(2000, 0.3)).download(f"{base}/f", tmp_path / "p", requires_token=False)
    assert dest.read_bytes() == body and len(script.seen) == 2


@pytest.mark.parametrize("slow_last", [True, False], ids=["slow-last", "truncated-last"])
def test_a_file_cut_short_and_slow_fails_by_its_last_problem_counting_both(
    server: tuple[str, Scripted], tmp_path: Path, slow_last: bool
) -> None:
    base, script = server
    body = NDJSON * 4
    cut, slow = send(200, body[:-10]), _body_in_bursts(body, 20, 0.1)
    script.actions = [cut, cut, slow] if slow_last else [slow, slow, cut]
    error = BulkFileTooSlowError if slow_last else BulkFileTruncatedError
    counts = "2 truncated, 1 too slow" if slow_last else "1 truncated, 2 too slow"
    last = "below the low-speed limit" if slow_last else "in the middle of a resource"
    with pytest.raises(error, match=rf"failed on each of 3 attempts \({counts}; the last shown\) \(.*{last}"):
        _bulk(base, low_speed=LowSpeedLimit(2000, 0.3)).download(f"{base}/f", tmp_path / "p", requires_token=False)


def test_the_same_body_completes_without_a_low_speed_limit_and_above_it(
    server: tuple[str, Scripted], tmp_path: Path
) -> None:
    """The limit, not the server, cut the file above: with none, or one the body keeps up, the same trickle lands
    whole."""
    base, script = server
    body = NDJSON * 2
    script.actions = [_body_in_bursts(body, 40, 0.05), _body_in_bursts(body, 40, 0.05)]
    for n, limit in enumerate([None, LowSpeedLimit(1, 0.2)]):
        dest = tmp_path / f"p{n}.ndjson"
        assert _bulk(base, low_speed=limit).download(f"{base}/f/{n}", dest, requires_token=False) == dest
        assert dest.read_bytes() == body


def test_a_files_headers_are_under_the_request_deadline(server: tuple[str, Scripted], tmp_path: Path) -> None:
    """Trickled headers (200 bytes at 0.05 s: 10 s) against a 1 s deadline: each attempt ends at ~1 s, a timeout
    the retry rules repeat, then the download fails; before, the file had no deadline at all and waited 10 s."""
    base, script = server
    script.actions = [_headers_a_byte_at_a_time(0.05) for _ in range(2)]
    bulk = BulkClient(f"{base}/fhir", None, retry=recording_policy([], max_attempts=2), bounds=BodyBounds(None, 1.0))
    started = time.monotonic()
    deadline = r"no complete answer within 1 s \(EHRSYNC_REQUEST_DEADLINE_S\) on 2 attempt"
    with pytest.raises(RequestDeadlineError, match=deadline):
        bulk.download(f"{base}/files/Patient.ndjson", tmp_path / "p.ndjson", requires_token=False)
    assert time.monotonic() - started < 2 * 1.0 + 6  # the trickled headers: 12.5 s an attempt
    assert len(script.seen) == 2


def test_a_file_streaming_past_the_request_deadline_is_not_cut_off(
    server: tuple[str, Scripted], tmp_path: Path
) -> None:
    """The deadline ends with the headers: a body that keeps its pace may take longer than it (2.4 s against 1; not
    0.5 s, which a busy CI machine may take to deliver the headers)."""
    base, script = server
    body = NDJSON * 4
    bursts = 12
    script.actions = [_body_in_bursts(body, -(-len(body) // bursts), 0.2)]
    bulk = _bulk(base, bounds=BodyBounds(None, 1.0), low_speed=LowSpeedLimit(10, 0.3))
    started = time.monotonic()
    dest = bulk.download(f"{base}/files/Patient.ndjson", tmp_path / "p.ndjson", requires_token=False)
    assert time.monotonic() - started > 1.0 and dest.read_bytes() == body


def test_a_pause_in_a_files_body_waits_its_read_timeout_not_the_rest_of_the_deadline(
    server: tuple[str, Scripted], tmp_path: Path
) -> None:
    """httpcore reads each body read's timeout from the request, which the attempt had cut to what was left of the
    deadline: a 1 s pause mid-body against a 0.3 s deadline failed the file although the read timeout is 30 s.
    Here 2.5 s against 1 s: both answers' headers have the deadline, which a busy CI machine may not meet in 0.3 s."""
    base, script = server
    body = NDJSON * 2

    def pause_in_the_middle(h: BaseHTTPRequestHandler) -> None:
        _body_in_bursts(body, len(body) // 2 + 1, 2.5)(h)

    script.actions = [send(503, b""), pause_in_the_middle]  # the retried request is the same object, sent again
    with httpx.Client(timeout=30) as http:
        bulk = BulkClient(
            f"{base}/fhir", None, http=http, retry=recording_policy([], max_attempts=2), bounds=BodyBounds(None, 1.0)
        )
        dest = bulk.download(f"{base}/f", tmp_path / "p.ndjson", requires_token=False)
    assert dest.read_bytes() == body and len(script.seen) == 2


def test_a_body_that_decodes_to_nothing_is_capped_on_the_wire(server: tuple[str, Scripted], tmp_path: Path) -> None:
    """8 MiB of empty gzip members before the file: the decoded size stays 0, so the decoded cap alone let a
    server feed an endless run of them (all CPU, no output); the wire cap ends it past ``wire_allowance``."""
    base, script = server
    empty = gzip.compress(b"")
    body = empty * (8 * 1024 * 1024 // len(empty)) + gzip.compress(NDJSON)
    script.actions = [send(200, body, {"Content-Encoding": "gzip"})]
    with pytest.raises(BulkFileTooLargeError, match=r"sent more than 2162688 bytes on the wire, .* decodes to almost"):
        _bulk(base).download(f"{base}/f", tmp_path / "p.ndjson", requires_token=False, max_bytes=1024 * 1024)
    assert list(tmp_path.iterdir()) == []


def test_the_wire_cap_admits_a_gzip_body_that_does_not_compress(server: tuple[str, Scripted], tmp_path: Path) -> None:
    """gzip stored blocks (level 0) make the wire larger than the file; a file exactly at its limit still lands."""
    base, script = server
    data = os.urandom(3 * 1024 * 1024 - 1) + b"\n"
    wire = gzip.compress(data, compresslevel=0)
    allowance = wire_allowance(len(data))
    assert allowance is not None and len(data) < len(wire) <= allowance
    script.actions = [send(200, wire, {"Content-Encoding": "gzip"})]
    dest = _bulk(base).download(f"{base}/f", tmp_path / "p.ndjson", requires_token=False, max_bytes=len(data))
    assert dest.read_bytes() == data


def _clocked(chunks: list[tuple[float, bytes]]) -> tuple[list[float], Iterator[bytes]]:
    """A body whose chunks arrive at the given times on a fake clock."""
    now = [0.0]

    def body() -> Iterator[bytes]:
        for at, chunk in chunks:
            now[0] = at
            yield chunk

    return now, body()


def _read(bounds_for: LowSpeedLimit, chunks: list[tuple[float, bytes]]) -> int:
    now, body = _clocked(chunks)
    bounds = BodyBounds(None, None, clock=lambda: now[0], body_deadline=False, low_speed=bounds_for)
    response = httpx.Response(200, content=body, request=httpx.Request("GET", "https://ehr.example/f"))
    bounds.wrap(response, "GET", 0.0)
    return sum(len(c) for c in response.iter_raw())


def test_the_low_speed_limit_averages_over_each_window() -> None:
    """100 B/s over 10 s: a stall inside a window the rest of it makes up for passes; a window averaging under the
    rate fails, whatever came before it; a body never checked before a window ends (short files) passes."""
    limit = LowSpeedLimit(100, 10)
    assert _read(limit, [(1.0, b"x" * 1000), (9.0, b"x"), (10.5, b"x" * 100)]) == 1101
    assert _read(limit, [(0.1, b"x"), (9.9, b"x")]) == 2
    with pytest.raises(TransferTooSlowError, match=r"sent 1 bytes in 10\.5 s, below the low-speed limit of 100"):
        _read(limit, [(1.0, b"x" * 1000), (10.0, b"x" * 10), (20.5, b"x")])  # 1,010 in the first 10 s, then 1


def test_the_low_speed_limit_reads_its_variables() -> None:
    assert low_speed_from_env({}) == DEFAULT_LOW_SPEED == LowSpeedLimit(1024.0, 120.0)
    assert low_speed_from_env({"EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S": "0"}) is None
    assert low_speed_from_env(
        {"EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S": "10", "EHRSYNC_BULK_LOW_SPEED_WINDOW_S": "30"}
    ) == LowSpeedLimit(10.0, 30.0)
    with pytest.raises(ConfigurationError, match="EHRSYNC_BULK_LOW_SPEED_WINDOW_S"):
        low_speed_from_env({"EHRSYNC_BULK_LOW_SPEED_WINDOW_S": "0"})
    for negative in ("-0.5", "-1", "-2000"):
        with pytest.raises(ConfigurationError, match=r"BYTES_PER_S must be 0 \(no limit\) or a finite positive number"):
            low_speed_from_env({"EHRSYNC_BULK_LOW_SPEED_BYTES_PER_S": negative})
    with pytest.raises(ConfigurationError, match="positive rate"):
        LowSpeedLimit(0, 10)


def test_a_library_caller_naming_no_file_limit_still_gets_one() -> None:
    """``BulkClient.download`` and ``download_items`` default to the engine's 10 GiB, not to no limit (disk and
    wire): a caller of the connectors alone is bounded too."""
    for function in (BulkClient.download, download_items):
        assert inspect.signature(function).parameters["max_bytes"].default == DEFAULT_MAX_FILE_BYTES == 10 * 1024**3


# The deadline of a whole file (EHRSYNC_BULK_FILE_DEADLINE_S). Before it, a body kept above the low-speed limit had
# no bound but the file's size limit: 10 GiB at just over 1 KiB/s is four months of a download worker.

DEADLINE_S = 1.5
ENDLESS_CAP = 64 * 1024  # the file's size limit here: what ended an endless body before the deadline (~15 s)


def _endless(lines: int, every_s: float) -> Action:
    """200 without a Content-Length, then ``lines`` NDJSON lines every ``every_s`` until the client hangs up (216
    bytes every 0.05 s: ~4 KB/s, steadily above any low-speed limit used here, and never done)."""
    line = orjson.dumps({"resourceType": "Patient", "id": "p"}) + b"\n"

    def act(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/fhir+ndjson")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        try:
            for _ in range(int(600 / every_s)):  # ten minutes at most; the client hangs up long before
                h.wfile.write(line * lines)
                h.wfile.flush()
                time.sleep(every_s)
        except OSError:  # the client hung up: the point
            pass

    return act


def _deadlined(base: str, **kwargs: object) -> BulkClient:
    """A client with a small file deadline and a low-speed limit the endless body keeps far above: one 216-byte
    piece keeps a 0.3 s window of 10 B/s for 21 s, so no pause of a loaded machine trips it."""
    return _bulk(base, low_speed=LowSpeedLimit(10, 0.3), file_deadline_s=DEADLINE_S, **kwargs)


def test_a_file_kept_above_the_low_speed_limit_fails_at_its_deadline_naming_it(
    server: tuple[str, Scripted], tmp_path: Path
) -> None:
    """An endless body at ~4 KB/s against 10 B/s: the low-speed limit never cuts it, so before the deadline only the
    size limit did (64 KiB here, ~15 s; 10 GiB by default). Now it fails at the deadline, on its one attempt (no
    attempt is left: the deadline is every attempt's together), naming the file, the limit and the variable."""
    base, script = server
    script.actions = [_endless(6, 0.05) for _ in range(3)]
    started = time.monotonic()
    with pytest.raises(BulkFileDeadlineError) as caught:
        _deadlined(base).download(f"{base}/files/Patient.ndjson", tmp_path / "p.ndjson", False, max_bytes=ENDLESS_CAP)
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert caught.value.code == "bulk_file_deadline_exceeded" and caught.value.url == f"{base}/files/Patient.ndjson"
    assert message.startswith(f"bulk file {base}/files/Patient.ndjson was not downloaded within its 1.5 s deadline")
    assert (
        "(EHRSYNC_BULK_FILE_DEADLINE_S): 1 attempt made in " in message and "bytes of this attempt received" in message
    )
    assert "raise EHRSYNC_BULK_FILE_DEADLINE_S" in message
    assert isinstance(caught.value.__cause__, TransferDeadlineError)
    assert len(script.seen) == 1
    assert DEADLINE_S <= elapsed < 12, elapsed  # the size limit would have ended it at ~15 s
    assert list(tmp_path.iterdir()) == []


def test_the_deadline_covers_every_attempt_of_a_file_together(server: tuple[str, Scripted], tmp_path: Path) -> None:
    """A body cut short is fetched again, as always; the endless second attempt ends where the file's deadline, set
    when the first began, ends, and no third attempt is sent."""
    base, script = server
    script.actions = [send(200, NDJSON[:-10]), _endless(6, 0.05), _endless(6, 0.05)]
    bulk = _bulk(base, low_speed=LowSpeedLimit(10, 0.3), file_deadline_s=3.0)  # the first attempt's time: loaded CI
    with pytest.raises(
        BulkFileDeadlineError, match=r"within its 3 s deadline \(EHRSYNC_BULK_FILE_DEADLINE_S\): 2 attempts made"
    ):
        bulk.download(f"{base}/f", tmp_path / "p.ndjson", False, max_bytes=ENDLESS_CAP)
    assert len(script.seen) == 2


def test_a_files_headers_are_under_its_deadline_too(server: tuple[str, Scripted], tmp_path: Path) -> None:
    """Headers a byte at a time (~12 s) under a 30 s request deadline: the file's 1.5 s deadline cuts the wait, and
    the retry of that timeout is never sent (its attempt would begin past the deadline)."""
    base, script = server
    script.actions = [_headers_a_byte_at_a_time(0.05) for _ in range(2)]
    bulk = _deadlined(base, bounds=BodyBounds(None, 30.0))
    started = time.monotonic()
    with pytest.raises(BulkFileDeadlineError, match=r"EHRSYNC_BULK_FILE_DEADLINE_S\): 1 attempt made"):
        bulk.download(f"{base}/files/Patient.ndjson", tmp_path / "p.ndjson", requires_token=False)
    assert time.monotonic() - started < 10  # the headers alone take ~12 s
    assert len(script.seen) == 1


def test_time_an_earlier_fetch_of_the_file_spent_counts_against_its_deadline(
    server: tuple[str, Scripted], tmp_path: Path
) -> None:
    """The engine fetches a file short of its manifest's count again with the file's deadline, begun by its first
    fetch: one whose deadline is spent is not asked for at all, and the error says exactly that (0 attempts made,
    the time spent, the limit, the variable; before, 'on 1 attempt(s)'); with time left, it lands."""
    base, script = server
    script.actions = [send(200, NDJSON)]
    spent = TransferDeadline(DEADLINE_S, started_at=time.monotonic() - 2 * DEADLINE_S)
    with pytest.raises(BulkFileDeadlineError) as caught:
        _deadlined(base).download(f"{base}/f", tmp_path / "p.ndjson", False, deadline=spent)
    message = str(caught.value)
    assert "within its 1.5 s deadline (EHRSYNC_BULK_FILE_DEADLINE_S): 0 attempts made in " in message, message
    assert float(message.split("0 attempts made in ")[1].split(" s")[0]) >= 2 * DEADLINE_S, message
    assert "the next run fetches it again (raise EHRSYNC_BULK_FILE_DEADLINE_S" in message, message
    assert script.seen == [] and spent.attempts == 0
    roomy = TransferDeadline(60.0, started_at=time.monotonic() - 30.0)  # time left however loaded the machine is
    dest = _bulk(base).download(f"{base}/f", tmp_path / "p.ndjson", False, deadline=roomy)
    assert dest.read_bytes() == NDJSON and roomy.attempts == 1


def test_the_deadline_error_counts_every_attempt_sent_retries_included(
    server: tuple[str, Scripted], tmp_path: Path
) -> None:
    """A 503 the transport waits out (its Retry-After, recorded here, well within the deadline), then an endless
    body: two requests reached the server, and the error says 2 attempts (before, 'on 1 attempt(s)': it counted
    the fetches of the file, not the retries within one)."""
    base, script = server
    script.actions = [send(503, b"", {"Retry-After": "2"}), _endless(6, 0.05)]
    sleeps: list[float] = []
    bulk = BulkClient(
        f"{base}/fhir", None, retry=recording_policy(sleeps), low_speed=LowSpeedLimit(10, 0.3), file_deadline_s=3.0
    )
    with pytest.raises(BulkFileDeadlineError, match=r"3 s deadline \(EHRSYNC_BULK_FILE_DEADLINE_S\): 2 attempts made"):
        bulk.download(f"{base}/f", tmp_path / "p.ndjson", False, max_bytes=ENDLESS_CAP)
    assert len(script.seen) == 2 and sleeps == [2.0]


def test_a_retry_after_longer_than_the_time_left_fails_the_file_at_once(
    server: tuple[str, Scripted], tmp_path: Path
) -> None:
    """A 503 asking to wait 120 s with 3 s left: before, the file slept the 120 s (15 min at most) and only then
    saw its deadline had passed; now it fails before sleeping, saying what the server asked and what was left."""
    base, script = server
    script.actions = [send(503, b"", {"Retry-After": "120"}), send(200, NDJSON)]
    sleeps: list[float] = []
    bulk = BulkClient(f"{base}/fhir", None, retry=recording_policy(sleeps), file_deadline_s=3.0)
    with pytest.raises(BulkFileDeadlineError) as caught:
        bulk.download(f"{base}/f", tmp_path / "p.ndjson", False)
    message = str(caught.value)
    assert "within its 3 s deadline (EHRSYNC_BULK_FILE_DEADLINE_S): 1 attempt made in " in message, message
    assert "the server asked to wait 120 s and only " in message and " s were left of its transfer deadline" in message
    assert isinstance(caught.value.__cause__, TransferDeadlineError)
    assert sleeps == [] and len(script.seen) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_wait_before_fetching_a_cut_file_again_that_would_outlive_the_deadline_fails_at_once(
    server: tuple[str, Scripted], tmp_path: Path
) -> None:
    """A body cut short is fetched again after a backoff; a backoff (10 s here) longer than what is left (3 s) is
    not slept: the file fails at once, naming the wait."""
    base, script = server
    script.actions = [send(200, NDJSON[:-10]), send(200, NDJSON)]
    sleeps: list[float] = []
    policy = recording_policy(sleeps, backoff_start_s=10.0, backoff_cap_s=10.0, jitter=0.0)
    bulk = BulkClient(f"{base}/fhir", None, retry=policy, file_deadline_s=3.0)
    pattern = r"1 attempt made in .*the next attempt was due after a wait of 10 s and only \d\.\d s were left"
    with pytest.raises(BulkFileDeadlineError, match=pattern):
        bulk.download(f"{base}/f", tmp_path / "p.ndjson", False)
    assert sleeps == [] and len(script.seen) == 1


def test_a_body_stalling_mid_file_ends_at_the_deadline_not_its_read_timeout(
    server: tuple[str, Scripted], tmp_path: Path
) -> None:
    """A body arriving for 4.5 s, then silent, under a 5 s file deadline and a 60 s read timeout: every read of the
    body waits only what is left of the deadline, so the file fails at ~5 s. Before, the read waited its 60 s
    (then a retry); a read timeout cut only when the attempt began would still end at ~9.5 s."""
    base, script = server

    def flows_then_stalls(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/fhir+ndjson")
        h.end_headers()
        try:
            for _ in range(45):
                h.wfile.write(NDJSON)
                h.wfile.flush()
                time.sleep(0.1)
            time.sleep(60)
        except OSError:
            pass
        h.close_connection = True

    script.actions = [flows_then_stalls, flows_then_stalls]
    bulk = _bulk(base, low_speed=None, file_deadline_s=5.0, timeout=httpx.Timeout(60.0))
    started = time.monotonic()
    with pytest.raises(BulkFileDeadlineError, match=r"5 s deadline \(EHRSYNC_BULK_FILE_DEADLINE_S\): 1 attempt made"):
        bulk.download(f"{base}/f", tmp_path / "p.ndjson", False)
    elapsed = time.monotonic() - started
    assert 5.0 <= elapsed < 8.0, elapsed
    assert len(script.seen) == 1


def test_the_file_deadline_is_one_clock_reading_per_piece_shared_with_the_low_speed_limit() -> None:
    """The check on the hot path: each piece of the body reads the clock once (as the low-speed limit alone did) and
    compares; the piece arriving past the deadline ends the body."""
    now, body = _clocked([(1.0, b"x" * 100), (5.0, b"x" * 100), (10.0, b"x" * 100), (10.5, b"x")])
    readings = [0]

    def clock() -> float:
        readings[0] += 1
        return now[0]

    limit = LowSpeedLimit(1, 2)
    transfer = TransferDeadline(10.0, clock=clock, started_at=0.0)
    bounds = BodyBounds(None, None, clock=clock, body_deadline=False, low_speed=limit, transfer=transfer)
    response = httpx.Response(200, content=body, request=httpx.Request("GET", "https://ehr.example/f"))
    bounds.wrap(response, "GET", 0.0)
    got = []
    with pytest.raises(TransferDeadlineError, match=r"was not done by its transfer deadline \(301 bytes"):
        for chunk in response.iter_raw():
            got.append(chunk)
    assert len(got) == 3  # the piece at 10.0 is still in time
    assert readings[0] == 1 + 4 + 1  # the window's start, one per piece, one more to name the deadline


def test_the_file_deadline_reads_its_variable() -> None:
    assert file_deadline_from_env({}) == DEFAULT_FILE_DEADLINE_S == 86400.0
    assert BulkClient("https://ehr.example/fhir", None).file_deadline_s == DEFAULT_FILE_DEADLINE_S
    assert file_deadline_from_env({"EHRSYNC_BULK_FILE_DEADLINE_S": "0"}) is None
    assert file_deadline_from_env({"EHRSYNC_BULK_FILE_DEADLINE_S": "90.5"}) == 90.5
    for bad in ("-1", "-0.5", "soon", "inf", "nan"):
        with pytest.raises(ConfigurationError, match="EHRSYNC_BULK_FILE_DEADLINE_S"):
            file_deadline_from_env({"EHRSYNC_BULK_FILE_DEADLINE_S": bad})
