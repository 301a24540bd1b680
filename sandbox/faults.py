"""Switchable faults (``/admin/faults``): the failures real EHRs produce, on demand and per path."""

from __future__ import annotations

import asyncio
import logging
import threading
from email.utils import format_datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.body_faults import body_fault
from sandbox.clock import Clock
from sandbox.drop_fault import drop
from sandbox.echo_fault import echo_answer
from sandbox.gateway_fault import gateway_answer
from sandbox.oauth.broken import BROKEN_ANSWERS
from sandbox.oauth.keys import ID_TOKEN_FAULTS
from sandbox.quota_fault import QuotaHeaders, QuotaWindow, with_headers
from sandbox.shape_fault import SearchShape

log = logging.getLogger(__name__)

FaultKind = Literal[
    "403",  # this resource refused (Epic: an API not on the app), an OperationOutcome coded forbidden
    "422",  # a business-rule rejection with an OperationOutcome (a permanent answer: never retried)
    "429",
    "500",
    "503",
    "slow",
    "drop",
    "drop_response",  # the request is processed (a create is stored), then the connection closes unanswered
    "expired_token",
    "oauth_error",
    "id_token",
    "token_answer",  # the next granted token answer is 200 but broken as error says (the grant itself happened)
    "bulk_410",
    "bulk_truncated",
    "bulk_wrong_count",
    "bulk_blank_line",
    "bulk_mixed_type",
    "bulk_error_file",  # the next export lists a fatal OperationOutcome for resource_type and omits its output
    "bulk_error_unreadable",  # bulk_error_file, but the error line is not an OperationOutcome (default: cut short)
    "bulk_deleted_shape",  # the next deleted file downloaded writes each Bundle's one entry as a bare object
    "bulk_expired_files",  # the next export's files are past their expiry from the start (bulk_expired_status)
    "bulk_short_body",  # a bulk file announces its full Content-Length, sends half, and closes the connection
    "bulk_gzip_cut",  # a bulk file stored gzipped and cut short, served as stored (no Content-Encoding)
    "bulk_gzip_bomb",  # a bulk file stored gzipped, its lines then 1 GiB of NULs (~1 MB stored), served as stored
    "search_no_next",  # a searchset page that has a next link loses it (and says the true total)
    "search_repeat_next",  # a searchset page reached by a next link links to itself again
    "search_offset_shift",  # a page reached by a next link skips its first match and repeats the search's first
    "search_error_outcome",  # a searchset page drops its last match and carries an OperationOutcome entry
    # (code incomplete, the fault's severity: error unless told)
    "search_moved_match",  # search_offset_shift on a server that never says a total: only the repeat shows it
    "search_deleted_shift",  # offset paging after a match already read was deleted: the first page says the whole
    # total; a page reached by a next link skips its first match and says a total one smaller
    "search_silent_skip",  # offset paging without totals after a match already read was deleted: a page reached
    # by a next link skips its first match, and nothing on any page says so
    "search_overlap",  # a page reached by a next link first repeats the previous page's last (pages overlap by one)
    "search_empty_page",  # a searchset page comes back empty, its next link a fresh token for that same page (an
    # endless cursor when armed with times None; a few, as Epic/Cerner paging sometimes sends, with a small times)
    "search_shape",  # a searchset page written as ``shape`` says (sandbox.shape_fault): one-element arrays as bare
    # objects, link relations spelt with a capital, or what the matches refer to in entries without search.mode
    "trickle",  # the answer's body arrives chunk_bytes (default 1) bytes every delay_s seconds
    "huge_body",  # an answer (200 unless body_status says) streams an endless (256 MiB) JSON body, no Content-Length
    "quota",  # quota requests per window_s, reported on every answer, 429 once spent (sandbox.quota_fault)
    "echo",  # a body_status error answer repeating the request (headers, query, body, patient): sandbox.echo_fault
    "proxy_page",  # a gateway's HTML page answered body_status (200 unless told), the app never asked
    "body_cut",  # the app's own answer, its body cut to its first half (Content-Length to match): sandbox.gateway_fault
    "bom",  # the app's own answer (errors too), a UTF-8 byte order mark before its body: sandbox.gateway_fault
    "binary_gone",  # a DocumentReference create finds the Binaries it references deleted: sandbox.fhir.binary_refs
]
#: Kinds the HTTP middleware answers itself; the others are consumed by the code they affect.
_MIDDLEWARE_KINDS = frozenset(
    {"403", "422", "429", "500", "503", "slow", "drop", "drop_response", "expired_token", "bulk_410"}
)
_MIDDLEWARE_KINDS |= {
    "trickle",
    "huge_body",
    "echo",
    "proxy_page",
    "body_cut",
    "bom",
}  # body_faults, echo/gateway_fault


class Fault(BaseModel):
    """Body of ``POST /admin/faults``. ``times`` None keeps the fault until ``DELETE /admin/faults``."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    path: str | None = None
    #: a part the path must also contain, where its prefix is not known in advance: ``/page/`` is a later page of a
    #: paged Bulk manifest (``/bulk/status/{job}/page/{n}``), whatever the job's id
    path_contains: str | None = None
    method: Literal["GET", "POST", "PUT", "DELETE"] | None = None  # None: any; e.g. POST alone, not its searches
    times: int | None = Field(default=1, ge=1)
    retry_after: str | None = None  # seconds or an HTTP-date; "" sends no Retry-After header
    delay_s: float = Field(default=1.0, ge=0, le=60)
    #: oauth_error: the OAuth error code to force (SAL-36); id_token: one of sandbox.oauth.keys.ID_TOKEN_FAULTS;
    #: token_answer: one of sandbox.oauth.grants.BROKEN_ANSWERS
    error: str = "temporarily_unavailable"
    #: oauth_error: sent as `error_description` when given; at /oauth/token "{code}" is the code the client sent;
    #: search_error_outcome: the outcome's diagnostics when given (a server quoting the patient, say); echo: a line
    #: the echo adds after the request line (the server's own words, e.g. naming a patient the request did not)
    error_description: str | None = None
    resource_type: str = "Observation"  # bulk_error_file, bulk_error_unreadable: the type whose export fails
    error_line: str | None = None  # bulk_error_unreadable: the error line; None: the fatal outcome cut mid-line
    #: search_error_outcome: the outcome's severity (a server may say "incomplete" with a warning only)
    severity: Literal["fatal", "error", "warning"] = "error"
    #: trickle: bytes sent every delay_s (a steady pace above a low-speed limit, or the classic byte at a time)
    chunk_bytes: int = Field(default=1, ge=1, le=1024 * 1024)
    #: huge_body, echo, proxy_page: the answer's status (a 3xx without Location: neither data nor a redirect)
    body_status: int = Field(default=200, ge=200, le=599)
    shape: SearchShape = "single_objects"  # search_shape: how the page is written (sandbox.shape_fault)
    #: echo: the answer's shape (its code: ``error``; sandbox.echo_fault names where each puts the echo)
    echo_as: Literal["html", "outcome", "outcome_deep", "oauth", "oauth_error", "oauth_uri", "oauth_list"] = "html"
    #: quota: requests allowed per window_s (a window of up to two days: a daily quota), and how the answers say so
    quota: int = Field(default=10, ge=0, le=1_000_000)
    window_s: float = Field(default=60.0, gt=0, le=172_800)
    quota_headers: QuotaHeaders = "ietf"
    #: status kinds (422, 429, 500, 503): the app handles the request first (a create is stored), then this answer
    #: replaces its own, as a gateway that gave up waiting on the EHR does
    processed: bool = False

    @model_validator(mode="after")
    def _id_token_variant(self) -> Fault:
        for kind, variants in (("id_token", ID_TOKEN_FAULTS), ("token_answer", BROKEN_ANSWERS)):
            if self.kind == kind and self.error not in variants:
                raise ValueError(f"{kind} faults need error = {' or '.join(variants)}")
        return self


class FaultRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._quotas: list[QuotaWindow] = []
        self._releases = 0  # held ``slow`` requests go on when this changes (``release``)

    def add(self, fault: Fault) -> None:
        with self._lock:
            if fault.kind == "quota":  # stays armed (``times`` ignored) until DELETE /admin/faults
                window = QuotaWindow(fault.path, fault.method, fault.quota, fault.window_s, fault.quota_headers)
                self._quotas.append(window)
                return
            self._faults.append(fault.model_copy())

    def clear(self) -> None:
        """Disarm every fault, and release the requests a ``slow`` fault is holding."""
        with self._lock:
            self._faults, self._quotas = [], []
            self._releases += 1

    def release(self) -> None:
        """The requests ``slow`` faults hold go on now (``POST /admin/faults/release``); the faults stay armed."""
        with self._lock:
            self._releases += 1

    async def hold(self, delay_s: float) -> None:
        """A ``slow`` fault's wait: ``delay_s``, or less when released (a test holds a request while it acts)."""
        clock = asyncio.get_running_loop().time
        released, ends = self._releases, clock() + delay_s
        while (left := ends - clock()) > 0 and self._releases == released:  # an int's read is atomic
            await asyncio.sleep(min(left, 0.05))

    def quota(self, path: str, method: str | None) -> QuotaWindow | None:
        """The first armed quota fault that counts a request to ``path``."""
        with self._lock:
            return next((q for q in self._quotas if q.matches(path, method)), None)

    def quota_reports(self) -> list[dict[str, Any]]:
        with self._lock:
            quotas = list(self._quotas)
        return [q.report() for q in quotas]

    def list(self) -> list[Fault]:
        with self._lock:
            return [f.model_copy() for f in self._faults]

    def take(self, path: str, kinds: frozenset[str] | None = None, method: str | None = None) -> Fault | None:
        """Consume one firing of the first matching fault (kind filter, path prefix, method when both name one)."""
        with self._lock:
            for fault in self._faults:
                if kinds is not None and fault.kind not in kinds:
                    continue
                if fault.path and not path.startswith(fault.path):
                    continue
                if fault.path_contains and fault.path_contains not in path:
                    continue
                if fault.method and method and fault.method != method:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                return fault.model_copy()
        return None


def outcome(code: str, diagnostics: str, severity: str = "error") -> bytes:
    issue = {"severity": severity, "code": code, "diagnostics": diagnostics}
    return orjson.dumps({"resourceType": "OperationOutcome", "issue": [issue]})


class FaultMiddleware:
    """Outermost ASGI layer: fires HTTP-level faults before the app sees the request (admin paths exempt)."""

    def __init__(self, app: ASGIApp, registry: FaultRegistry, clock: Clock) -> None:
        self.app = app
        self.registry = registry
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, raw_send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, raw_send)
            return
        path = str(scope.get("path", ""))
        window = None if path.startswith("/admin") else self.registry.quota(path, str(scope.get("method", "")) or None)
        admitted, extra = (True, []) if window is None else window.admit(self.clock.timestamp())
        if extra and admitted:  # the quota's headers on the answer, whatever else fires
            raw_send = with_headers(raw_send, extra)

        async def send(message: Message) -> None:
            # Every response carries a Date from the (shiftable) server clock, unless the app set one.
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"date" for k, _ in headers):
                    headers.append((b"date", format_datetime(self.clock.now(), usegmt=True).encode()))
                message = {**message, "headers": headers}
            await raw_send(message)

        if path.startswith("/admin"):
            await self.app(scope, receive, send)
            return
        if not admitted:
            await _respond(send, 429, outcome("throttled", "quota exceeded"), extra)
            return
        headers = dict(scope.get("headers") or [])
        kinds = set(_MIDDLEWARE_KINDS if path.startswith("/bulk/files/") else _MIDDLEWARE_KINDS - {"bulk_410"})
        if not headers.get(b"authorization", b"").lower().startswith(b"bearer "):
            kinds.discard("expired_token")
        fault = self.registry.take(path, frozenset(kinds), str(scope.get("method", "")) or None)
        if fault is None:
            await self.app(scope, receive, send)
            return
        log.info("fault %s fired on %s", fault.kind, path)
        if fault.kind == "slow":
            await self.registry.hold(fault.delay_s)
            await self.app(scope, receive, send)
        elif fault.kind == "drop":
            await drop(raw_send)
        elif fault.kind == "drop_response":
            await self.app(scope, receive, _swallow)
            await drop(raw_send)
        elif fault.kind == "expired_token":
            extra = [(b"www-authenticate", b'Bearer error="invalid_token", error_description="token expired"')]
            await _respond(send, 401, outcome("expired", "access token expired"), extra)
        elif fault.kind == "bulk_410":
            await _respond(send, 410, outcome("expired", "bulk file expired"), [])
        elif fault.kind == "echo":
            shape, said = fault.echo_as, fault.error_description
            await echo_answer(scope, receive, send, status=fault.body_status, shape=shape, code=fault.error, said=said)
        elif fault.kind in ("proxy_page", "body_cut", "bom"):
            await gateway_answer(fault.kind, fault.body_status, self.app, scope, receive, send)
        elif fault.kind in ("trickle", "huge_body"):
            pace = (fault.delay_s, fault.chunk_bytes)
            await body_fault(fault.kind, pace, self.app, scope, receive, send, status=fault.body_status)
        else:
            if fault.processed:  # the work is done; the client hears only the gateway's answer
                await self.app(scope, receive, _swallow)
            await _status_answer(send, fault)


async def _status_answer(send: Send, fault: Fault) -> None:
    """A status fault's answer: its OperationOutcome, and Retry-After as the fault says (1 s for 429/503)."""
    status = int(fault.kind)
    extra = []
    retry_after = fault.retry_after if fault.retry_after is not None else ("1" if status in (429, 503) else "")
    if retry_after:
        extra.append((b"retry-after", retry_after.encode()))
    code = {429: "throttled", 422: "business-rule", 403: "forbidden"}.get(status, "transient")
    await _respond(send, status, outcome(code, f"simulated {status}"), extra)


async def _swallow(message: Message) -> None:
    """Discard the app's answer: the work is done, the client never hears about it (a lost response)."""


async def _respond(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/fhir+json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
