"""Bulk endpoints: ``$export`` kick-off at three levels, status polling, cancel, file download."""

from __future__ import annotations

import functools
import gzip
import logging
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from sandbox.bulk.jobs import Job, TooManyJobs, fatal_outcome_line
from sandbox.bulk.manifest import manifest_page_of
from sandbox.bulk.params import Level, pairs_from_parameters, parse_export
from sandbox.data.ids import ALL_TYPES, COMPARTMENT_TYPES
from sandbox.faults import Fault
from sandbox.fhir.access import bearer
from sandbox.fhir.permission import Permission, permission
from sandbox.fhir.responses import FhirFailure, fhir_response, outcome_body
from sandbox.oauth.scopes import Grant
from sandbox.oauth.state import TokenRecord
from sandbox.shape_fault import bare_deleted_entries
from sandbox.state import SandboxState, get_state

log = logging.getLogger(__name__)
router = APIRouter()
_DELETED_FAULT = frozenset({"bulk_deleted_shape"})  # only a ``deleted`` file takes it (sandbox.shape_fault)
_FILE_FAULTS = frozenset({"bulk_truncated", "bulk_short_body", "bulk_blank_line", "bulk_mixed_type", "bulk_gzip_cut"})
_FILE_FAULTS |= {"bulk_gzip_bomb"}
#: What ``bulk_gzip_bomb`` adds after a file's lines: 1 GiB of NUL bytes, as 1024 gzip members of 1 MiB each (RFC
#: 1952 §2.2 lets a file hold many), about 1 MB stored.
_BOMB_MEMBERS, _BOMB_MEMBER_BYTES = 1024, 1024 * 1024
_BOM = b"\xef\xbb\xbf"


def _prefer(request: Request) -> set[str]:
    return {p.strip().lower().replace(" ", "") for p in request.headers.get("prefer", "").replace(";", ",").split(",")}


def _permissions(rec: TokenRecord, types: list[str] | None, level: Level) -> tuple[list[str], dict[str, Permission]]:
    """Types to export and their permissions: explicit types must be allowed, defaults shrink to the scopes."""
    if not any(r.context == "system" for r in Grant.parse(rec.scope).resources):
        raise FhirFailure(403, "forbidden", "bulk export needs a system/ scoped backend token")
    candidates = types or list(ALL_TYPES if level == "system" else COMPARTMENT_TYPES)
    perms: dict[str, Permission] = {}
    for t in candidates:
        try:
            perms[t] = permission(rec, t, "r")
        except FhirFailure:
            if types:
                raise
    return [t for t in candidates if t in perms], perms


async def _kickoff(request: Request, level: Level, group_id: str | None) -> Response:
    st = get_state(request)
    rec = bearer(st, request)
    prefer = _prefer(request)
    if "respond-async" not in prefer and st.settings.strict_respond_async:
        raise FhirFailure(400, "invalid", "Prefer: respond-async is required")
    lenient = "handling=lenient" in prefer
    if request.method == "POST":
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise FhirFailure(400, "structure", "POST $export body is not JSON") from None
        pairs = pairs_from_parameters(body)
    else:
        pairs = [(k, v) for k, v in request.query_params.multi_items()]
    refused = [name for name, _ in pairs if name in st.settings.bulk_unsupported_params]
    if refused:
        raise FhirFailure(400, "not-supported", f"parameter {refused[0]!r} is not supported")
    req = parse_export(level, group_id, pairs, lenient, request.method == "POST")
    patients: list[int] | None = None
    if level == "group":
        members = st.store.group_members(group_id or "")
        if members is None:
            raise FhirFailure(404, "not-found", f"Group/{group_id} is not known")
        patients = members
        if req.patients is not None:
            outside = set(req.patients) - set(members)
            if outside:
                raise FhirFailure(400, "invalid", "some requested patients are not members of the group")
    if req.patients is not None:
        patients = sorted(set(req.patients))
    types, perms = _permissions(rec, req.types, level)
    failing = st.faults.take(request.url.path, frozenset({"bulk_error_file", "bulk_error_unreadable"}))
    expired = st.faults.take(request.url.path, frozenset({"bulk_expired_files"})) is not None
    try:
        job = st.bulk.start(
            st.settings,
            client_id=rec.client_id,
            request_url=str(request.url),
            request=req,
            types=types,
            permissions=perms,
            patients=patients,
            transaction_time=_instant(st),
            requires_token=st.settings.requires_access_token,
            failed_types=[failing.resource_type] if failing is not None else [],
            unreadable_error=_unreadable_line(failing),
            files_expired=expired,
        )
    except TooManyJobs:
        retry = _retry_after(st, max(1, st.settings.bulk_retry_after_s))
        headers = {"Retry-After": retry} if st.settings.bulk_busy_retry_after else {}
        raise FhirFailure(429, "throttled", "too many concurrent exports for this client", headers) from None
    location = f"{st.settings.bulk_status_base or st.base(request)}/bulk/status/{job.id}"
    body = outcome_body("informational", "export accepted", "information")
    return fhir_response(body, 202, {"Content-Location": location})


def _unreadable_line(fault: Fault | None) -> bytes | None:
    """Fault ``bulk_error_unreadable``: the line its error file carries instead of a readable OperationOutcome."""
    if fault is None or fault.kind != "bulk_error_unreadable":
        return None
    if fault.error_line is not None:
        return fault.error_line.encode()
    line = fatal_outcome_line(fault.resource_type)
    return line[: len(line) // 2]  # a writer that stopped mid-line


def _instant(st: SandboxState) -> str:
    return st.clock.stamp()


def _retry_after(st: SandboxState, seconds: int) -> str:
    """Delta-seconds by default; an HTTP-date when the BDX-10 flag asks for the other form."""
    if not st.settings.bulk_retry_after_http_date:
        return str(seconds)
    return format_datetime(st.clock.now() + timedelta(seconds=seconds), usegmt=True)


@router.api_route("/fhir/$export", methods=["GET", "POST"], response_model=None)
async def export_system(request: Request) -> Response:
    return await _kickoff(request, "system", None)


@router.api_route("/fhir/Patient/$export", methods=["GET", "POST"], response_model=None)
async def export_patients(request: Request) -> Response:
    return await _kickoff(request, "patient", None)


@router.api_route("/fhir/Group/{group_id}/$export", methods=["GET", "POST"], response_model=None)
async def export_group(group_id: str, request: Request) -> Response:
    return await _kickoff(request, "group", group_id)


def _job(st: SandboxState, request: Request, job_id: str) -> Job:
    rec = bearer(st, request)
    job = st.bulk.get(job_id)
    if job is None:
        raise FhirFailure(404, "not-found", "unknown or cancelled export job")
    if rec.client_id != job.client_id:
        raise FhirFailure(403, "forbidden", "this export belongs to another client")
    return job


def _expires(st: SandboxState, job: Job) -> float:
    return (job.finished_at or 0.0) + st.settings.bulk_file_ttl_s


@router.get("/bulk/status/{job_id}", response_model=None)
def status(job_id: str, request: Request) -> Response:
    st = get_state(request)
    job = _job(st, request, job_id)
    cfg = st.settings
    now = st.clock.timestamp()
    too_soon = cfg.bulk_min_poll_interval_s and now - job.last_poll < cfg.bulk_min_poll_interval_s
    job.last_poll = now
    if too_soon:
        headers = {"Retry-After": _retry_after(st, max(1, round(cfg.bulk_min_poll_interval_s)))}
        return fhir_response(outcome_body("throttled", "polling too fast"), 429, headers)
    if job.status == "running":
        headers = {"X-Progress": job.progress[:99], "Retry-After": _retry_after(st, cfg.bulk_retry_after_s)}
        if cfg.bulk_status_retry_after is not None:  # BDX-10 fault: "0", huge, past date, or "" for none
            headers["Retry-After"] = cfg.bulk_status_retry_after
            if not cfg.bulk_status_retry_after:
                del headers["Retry-After"]
        return Response(status_code=202, headers=headers)
    if job.status == "failed":
        return fhir_response(outcome_body("exception", f"export failed: {job.failure}"), 500)
    return _manifest_response(st, request, job, 1)


@router.get("/bulk/status/{job_id}/page/{page}", response_model=None)
def manifest_page(job_id: str, page: int, request: Request) -> Response:
    """A later page of a paged manifest (``bulk_manifest_page_size``): served like the status URL."""
    st = get_state(request)
    job = _job(st, request, job_id)
    if job.status != "done" or page < 2 or st.settings.bulk_manifest_page_size is None:
        raise FhirFailure(404, "not-found", "no such manifest page")
    return _manifest_response(st, request, job, page)


def _manifest_response(st: SandboxState, request: Request, job: Job, page: int) -> Response:
    expires = datetime.fromtimestamp(_expires(st, job), UTC)
    body = orjson.dumps(manifest_page_of(st, request, job, page))
    media_type = "application/json"
    if st.settings.bulk_manifest_bom:
        body, media_type = _BOM + body, "text/plain; charset=utf-8"
    return Response(body, media_type=media_type, headers={"Expires": format_datetime(expires, usegmt=True)})


@router.delete("/bulk/status/{job_id}", response_model=None)
def cancel(job_id: str, request: Request) -> Response:
    st = get_state(request)
    _job(st, request, job_id)
    st.bulk.cancel(job_id)
    return fhir_response(outcome_body("informational", "export cancelled", "information"), 202)


def _truncate(data: bytes) -> bytes:
    """Cut the file in the middle of its last line, like a transfer that stopped early."""
    body = data.rstrip(b"\n")
    start = body.rfind(b"\n") + 1
    return body[: start + max(1, (len(body) - start) // 2)]


def _chunks(path: Path, prefix: bytes, chunk: int = 1 << 20) -> Iterator[bytes]:
    """``prefix`` (a BOM, ``bulk_file_bom``), then the file a piece at a time: a large file never sits in memory."""
    if prefix:
        yield prefix
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            yield block


@functools.cache
def _zeros_member() -> bytes:
    """One gzip member holding ``_BOMB_MEMBER_BYTES`` NUL bytes (about 1 KB)."""
    return gzip.compress(bytes(_BOMB_MEMBER_BYTES), 9)


def _gzipped(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Compress while streaming so a large file never sits in memory."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    for block in pieces:
        out = packer.compress(block)
        if out:
            yield out
    yield packer.flush()


@router.get("/bulk/files/{job_id}/{name}.ndjson", response_model=None)
@router.get("/bulk/files/{job_id}/{name}.ndjson;{params}", response_model=None)  # bulk_file_url_params: ignored
def download(job_id: str, name: str, request: Request) -> Response:
    st = get_state(request)
    job = st.bulk.get(job_id)
    if job is None or job.status != "done":
        raise FhirFailure(404, "not-found", "unknown export file")
    if job.requires_token:
        _job(st, request, job_id)
    if job.files_expired or st.clock.timestamp() > _expires(st, job):
        raise FhirFailure(st.settings.bulk_expired_status, "expired", "export file expired: run the export again")
    path = job.folder / f"{name}.ndjson"
    known = {n for _, n, _ in job.files + job.error_files + job.deleted_files}
    if name not in known or not path.is_file():
        raise FhirFailure(404, "not-found", "unknown export file")
    if name in {n for _, n, _ in job.deleted_files} and st.faults.take(request.url.path, _DELETED_FAULT):
        return Response(bare_deleted_entries(path.read_bytes()), media_type="application/fhir+ndjson")
    fault = st.faults.take(request.url.path, _FILE_FAULTS)
    bom = _BOM if st.settings.bulk_file_bom else b""
    if fault is None:
        if st.settings.bulk_gzip and "gzip" in request.headers.get("accept-encoding", "").lower():
            return StreamingResponse(
                _gzipped(_chunks(path, bom)),
                media_type="application/fhir+ndjson",
                headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
            )
        if bom:
            return StreamingResponse(_chunks(path, bom), media_type="application/fhir+ndjson")
        return FileResponse(path, media_type="application/fhir+ndjson")
    data = bom + path.read_bytes()
    if fault.kind == "bulk_gzip_bomb":  # a stored .ndjson.gz inflating ~1000:1, served as stored
        return Response(gzip.compress(data) + _zeros_member() * _BOMB_MEMBERS, media_type="application/fhir+ndjson")
    if fault.kind == "bulk_gzip_cut":  # a stored .ndjson.gz cut short, served as stored: no Content-Encoding
        packed = gzip.compress(data)
        return Response(packed[: len(packed) // 2], media_type="application/fhir+ndjson")
    if fault.kind == "bulk_short_body":  # the server stops mid-body: fewer bytes than declared, then it hangs up
        headers = {"Content-Length": str(len(data))}
        return Response(data[: len(data) // 2], media_type="application/fhir+ndjson", headers=headers)
    if fault.kind == "bulk_truncated":
        data = _truncate(data)
    elif fault.kind == "bulk_blank_line":
        data += b"\n"
    else:
        data += orjson.dumps({"resourceType": "Basic", "id": "mixed-type-fault", "code": {"text": "fault"}}) + b"\n"
    return Response(data, media_type="application/fhir+ndjson")
