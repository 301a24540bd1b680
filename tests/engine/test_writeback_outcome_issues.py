"""A refused note keeps the EHR's OperationOutcome issues, diagnostics included, in its own outbox row (draft-note §5:
"400 / 422 + OperationOutcome → store ``issue[].code/diagnostics/expression``"), without the request's token; its
``reason`` (and every log, audit event and the analysts' table) still never holds the diagnostics. Against the
sandbox's ``echo`` fault: a 422 OperationOutcome whose diagnostics repeat the request (its ``Authorization``, the
note's text) and name the patient."""

from __future__ import annotations

import base64
import json

import httpx
import orjson
from sqlalchemy import select

from connectors.transport.answers import operation_outcome_of
from connectors.transport.issue_record import MAX_ISSUES, MAX_VALUE, issue_record
from engine.writeback import write_note
from store.models import AuditEvent
from store.outbox import get_note, transition
from store.outbox_reads import outbox_metadata_rows
from tests.engine.writeback_helpers import FAST, NOTE_TEXT, enqueue, writable_connection

DOC_POSTS = "/fhir/DocumentReference"


def _access_tokens(sb) -> list[str]:
    return [token for token, rec in sb.state.auth.tokens.items() if rec.kind == "access"]


def test_dwb51_a_422_keeps_its_diagnostics_in_the_note_row_without_the_token(world, sb, http, request_log) -> None:
    """DWB-51: the 422's issue (severity, code, diagnostics naming the patient and quoting the note) is stored in
    ``outcome_issues``; the bearer token the diagnostics echo is ``[REDACTED]``; ``reason``, the audit trail and
    the analysts' metadata rows hold none of it."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault(
        "echo", path=DOC_POSTS, method="POST", times=None, body_status=422, echo_as="outcome", error="business-rule"
    )
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.last_http_status, done.reason_code) == ("failed", 422, "fhir_unprocessable")
    assert done.reason == "error business-rule", done.reason
    stored = get_note(world.env.db, note.id)
    assert stored is not None and stored.outcome_issues is not None
    [issue] = stored.outcome_issues["issues"]
    assert stored.outcome_issues["omitted"] == 0
    assert (issue["severity"], issue["code"], issue["expression"], issue["codings"]) == (
        "error", "business-rule", [], []
    )  # fmt: skip
    said = issue["diagnostics"]
    family = sb.state.store.read("Patient", note.patient_id)["name"][0]["family"]
    assert said.startswith("POST /fhir/DocumentReference") and family in said and NOTE_TEXT in said, said
    assert "authorization: Bearer [REDACTED]" in said, said
    tokens = _access_tokens(sb)
    assert tokens and not any(token in said for token in tokens)
    assert all(ord(c) >= 0x20 for c in said) and len(said) <= MAX_VALUE
    with world.env.db.session() as session:
        audit = [json.dumps(e.detail) for e in session.scalars(select(AuditEvent))]
    rows = json.dumps(outbox_metadata_rows(world.env.db), default=str)
    assert not any(family in text or "diagnostics" in text for text in [*audit, rows, done.reason])


def test_dwb51_the_kept_issues_go_when_the_note_moves_on(world, sb, http) -> None:
    """DWB-51: the issues describe the refusal that ended the note; a person sending it again (any later step)
    clears them, so a note never shows an old refusal as its current one."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("422", path=DOC_POSTS, method="POST", times=None)
    failed = write_note(world.env, FAST, note.id)
    assert failed.state == "failed" and failed.outcome_issues is not None
    again = transition(world.env.db, failed, "pending", actor="admin", reason_code=None, reason=None)
    assert again.outcome_issues is None
    sb.admin.clear_faults()
    assert write_note(world.env, FAST, note.id).state == "written"


def _answer(outcome: dict[str, object], authorization: str) -> httpx.Response:
    request = httpx.Request(
        "POST", "https://ehr.example/fhir/DocumentReference", headers={"Authorization": authorization}
    )
    return httpx.Response(422, content=orjson.dumps(outcome), request=request)


def test_dwb51_issue_record_bounds_what_it_keeps() -> None:
    """DWB-51: at most MAX_ISSUES issues (the rest counted), values capped and free of control characters; the
    request's Basic credential redacted whole and as its decoded secret, also percent-encoded; expression else
    location."""
    secret = "s3cr3t/client+pass"
    basic = base64.b64encode(f"client:{secret}".encode()).decode()
    quoted = f"bad\x1b[31m {secret} {basic} s3cr3t%2Fclient%2Bpass "
    issues = [
        {"severity": "error", "code": "invalid", "location": ["Line 1"], "diagnostics": quoted + "x" * 2000},
        {"severity": "error", "code": "required", "expression": ["DocumentReference.subject"], "location": ["L"],
         "details": {"coding": [{"system": "urn:oid:1.2.3", "code": "59008", "display": "Missing"}]}},
        *({"severity": "warning", "code": f"c{i}"} for i in range(30)),
    ]  # fmt: skip
    outcome = operation_outcome_of(_answer({"resourceType": "OperationOutcome", "issue": issues}, f"Basic {basic}"))
    record = issue_record(outcome)
    assert record is not None and len(record["issues"]) == MAX_ISSUES and record["omitted"] == 32 - MAX_ISSUES
    first, second = record["issues"][:2]
    assert first["expression"] == ["Line 1"] and first["diagnostics"].startswith(
        "bad [31m [REDACTED] [REDACTED] [REDACTED] x"
    )
    assert len(first["diagnostics"]) == MAX_VALUE and first["diagnostics"].endswith("…")
    assert second["expression"] == ["DocumentReference.subject"] and second["codings"] == ["urn:oid:1.2.3|59008"]
    assert issue_record({"resourceType": "OperationOutcome", "issue": []}) is None and issue_record(None) is None


def test_dwb51_an_outcome_nested_past_pythons_recursion_limit_still_fails_the_note_with_its_words(
    world, sb, http
) -> None:
    """DWB-51: a 422 whose OperationOutcome nests an ``extension`` 1,000 arrays deep (orjson reads it; Python
    recursion stops at about 1,000 frames) is the note's refusal, its token removed, not a RecursionError that
    leaves the note ``sending`` for a later run to search for."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault(
        "echo", path=DOC_POSTS, method="POST", times=None, body_status=422, echo_as="outcome_deep", error="invalid"
    )
    done = write_note(world.env, FAST, note.id)
    assert (done.state, done.last_http_status, done.reason_code) == ("failed", 422, "fhir_unprocessable")
    assert done.outcome_issues is not None
    [issue] = done.outcome_issues["issues"]
    assert issue["code"] == "invalid" and "authorization: Bearer [REDACTED]" in issue["diagnostics"], issue
    assert not any(token in issue["diagnostics"] for token in _access_tokens(sb))
