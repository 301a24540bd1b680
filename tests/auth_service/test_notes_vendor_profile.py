"""``POST /api/ehr/notes`` refuses at submission a note the connection's vendor will certainly refuse (DWB-70).

The vendor's write profile (``connectors/providers/profiles.py``) decides from the note and the connection alone:
Epic takes text/plain only and files a note only on a visit, Oracle Health takes no draft and, under a provider
token, only the signed-in user as author, each vendor has a size limit counted with the draft banner. Such a note
was stored ``pending`` and only its write-back run said ``blocked``; now it is 422 ``note_not_accepted`` with the
reason code and words the run stores, and nothing is stored. The run keeps its own check (engine tests).
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.providers.epic import EpicProvider
from connectors.writeback import DRAFT_BANNER
from store.models import Connection, NoteOutbox
from tests.auth_service.conftest import AppHandle

PATH = "/api/ehr/notes"
PDF = base64.b64encode(b"%PDF-1.4\n%%EOF").decode()


def _world(make_app: Any, provider: str, kind: str, fhir_user: str | None = None) -> tuple[AppHandle, str, str]:
    handle = make_app()
    key = handle.bootstrap("ta")
    with handle.app.state.ctx.db.session() as session, session.begin():
        conn = Connection(
            tenant_id="ta",
            provider_id=provider,
            kind=kind,
            fhir_base="https://ehr.example/fhir",
            client_id="a",
            patient_id="pat-1" if kind == "patient" else None,
            fhir_user=fhir_user,
        )
        session.add(conn)
        session.flush()
        conn_id = conn.id
    return handle, key, conn_id


def _post(handle: AppHandle, key: str, conn: str, **changes: Any) -> Any:
    body = {
        "connectionId": conn,
        "idempotencyKey": "host-note-0001",
        "title": "Follow-up",
        "text": "Assessment: stable.",
        "producedBy": "scribe-model v3",
        "patient": "pat-1",
        "encounter": "enc-9",
    } | changes
    return handle.client.post(PATH, json={k: v for k, v in body.items() if v is not None}, headers={"X-API-Key": key})


def _stored(handle: AppHandle) -> int:
    with handle.app.state.ctx.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(NoteOutbox)) or 0)


def _refused(answer: Any, reason: str, field: str) -> dict[str, Any]:
    assert answer.status_code == 422, answer.text
    body: dict[str, Any] = answer.json()
    assert body["error"] == "note_not_accepted" and body["reason"] == reason, body
    assert body["reasonCode"] == f"WRITE_NOT_SUPPORTED ({reason})" and body["field"] == field, body
    return body


@pytest.mark.parametrize(
    ("provider", "kind", "fhir_user", "changes", "reason", "field", "words"),
    [
        ("epic", "backend", None, {"text": None, "pdfBase64": PDF}, "mime_type_unsupported", "pdfBase64", "text/plain"),
        ("epic", "backend", None, {"encounter": None}, "encounter_required", "encounter", "`encounter` id"),
        ("epic", "patient", None, {}, "draft_status_unsupported", "docStatus", "no note under patient tokens"),
        ("cerner", "backend", None, {}, "draft_status_unsupported", "docStatus", "as `final` once a clinician"),
        (
            "cerner",
            "patient",
            "Practitioner/pract-1",
            {"docStatus": "final", "clinicianApproved": True, "author": "pract-2"},
            "author_not_signed_in_user",
            "author",
            "Practitioner/pract-2 is not the signed-in user",
        ),
        # no FHIR note write at all (draft-note §7): every note, whatever the server's CapabilityStatement says
        ("ecw", "backend", None, {}, "vendor_disabled", "connectionId", "writes no note to this EHR vendor"),
        ("athena", "patient", None, {}, "vendor_disabled", "connectionId", "whatever the server's Capability"),
        (
            "pcc",
            "backend",
            None,
            {"docStatus": "final", "clinicianApproved": True},
            "vendor_disabled",
            "connectionId",
            "",
        ),
    ],
)
def test_dwb70_a_note_the_vendor_refuses_is_422_at_submission_and_not_stored(
    make_app, provider, kind, fhir_user, changes, reason, field, words
) -> None:
    handle, key, conn = _world(make_app, provider, kind, fhir_user)
    body = _refused(_post(handle, key, conn, **changes), reason, field)
    assert words in body["message"] and body["vendor"] == provider, body
    assert _stored(handle) == 0


@pytest.mark.parametrize(
    ("provider", "kind", "fhir_user", "changes"),
    [
        ("epic", "backend", None, {}),  # text on a visit
        ("cerner", "backend", None, {"docStatus": "final", "clinicianApproved": True, "text": None, "pdfBase64": PDF}),
        ("cerner", "patient", "Practitioner/pract-1", {"docStatus": "final", "clinicianApproved": True}),
        (
            "cerner",
            "patient",
            "Practitioner/pract-1/_history/3",
            {"docStatus": "final", "clinicianApproved": True, "author": "pract-1"},
        ),
    ],
)
def test_dwb70_a_note_the_vendor_takes_is_stored_pending(make_app, provider, kind, fhir_user, changes) -> None:
    handle, key, conn = _world(make_app, provider, kind, fhir_user)
    answer = _post(handle, key, conn, **changes)
    assert answer.status_code == 201 and answer.json()["state"] == "pending", answer.text
    assert _stored(handle) == 1


def test_dwb70_the_size_limit_counts_the_draft_banner_at_submission(make_app, monkeypatch) -> None:
    """No shipped profile's limit is reachable by a text note (at most 100,000 characters; PDFs: the tests below),
    so Epic's is lowered here: a text that fits only without the banner is refused, one that fits with it is taken."""
    limit = 2_000
    monkeypatch.setattr(EpicProvider, "write_profile", dataclasses.replace(EpicProvider.write_profile, max_bytes=limit))
    handle, key, conn = _world(make_app, "epic", "backend")
    overhead = len(f"{DRAFT_BANNER}\n\n".encode())
    body = _refused(_post(handle, key, conn, text="x" * (limit - overhead + 1)), "too_large", "text")
    assert "draft banner" in body["message"] and "1 byte shorter" in body["message"], body
    assert _stored(handle) == 0
    fits = _post(handle, key, conn, text="x" * (limit - overhead))
    assert fits.status_code == 201, fits.text


def test_dwb70_a_replay_of_a_stored_note_answers_it_even_when_its_vendor_now_refuses_such_notes(
    make_app, monkeypatch
) -> None:
    """The idempotency key's promise: a replay answers the note it stored. A note stored before ehrsync checked the
    vendor at submission (or before a vendor's profile got stricter) is replayed by a host app whose first answer
    was lost; it was answered 422 ``note_not_accepted`` with "nothing was stored", so the host app could not learn
    its note's id or state. A new key with the same note is still refused, and another note under the key is 409."""
    lenient = dataclasses.replace(EpicProvider.write_profile, encounter_required=False)
    monkeypatch.setattr(EpicProvider, "write_profile", lenient)
    handle, key, conn = _world(make_app, "epic", "backend")
    first = _post(handle, key, conn, encounter=None)
    assert first.status_code == 201, first.text
    monkeypatch.undo()  # Epic's profile as shipped: a note without a visit is refused
    replay = _post(handle, key, conn, encounter=None)
    assert replay.status_code == 200, replay.text
    assert replay.json()["noteId"] == first.json()["noteId"] and _stored(handle) == 1
    _refused(
        _post(handle, key, conn, encounter=None, idempotencyKey="host-note-0002"), "encounter_required", "encounter"
    )
    other = _post(handle, key, conn, encounter=None, text="Another note.")
    assert other.status_code == 409 and other.json()["error"] == "idempotency_conflict", other.text
    assert _stored(handle) == 1


def _pdf_of(size: int) -> str:
    return base64.b64encode(b"%PDF-1.4\n" + b"0" * (size - 9)).decode()


@pytest.mark.parametrize("size", [5_000_001, 5_000_002, 6_000_000, 6_000_001])  # no, one and two "=" pads
def test_dwb70_a_pdf_over_the_vendors_limit_is_refused_by_name_with_that_limit(make_app, size) -> None:
    """A generic server takes a PDF up to 5,000,000 bytes, ehrsync's own limit too. A PDF just over it was 400
    ``invalid_request`` in ehrsync's words, and a larger one a 422 ``validation_error`` counting base64 characters:
    never the vendor's limit, nor what the run would store (``too_large``). Now both are the run's refusal."""
    handle, key, conn = _world(make_app, "generic", "backend")
    answer = _post(handle, key, conn, text=None, pdfBase64=_pdf_of(size))
    body = _refused(answer, "too_large", "pdfBase64")
    assert f"is {size} bytes" in body["message"] and "this EHR's limit of 5000000" in body["message"], body
    assert body["vendor"] == "generic" and _stored(handle) == 0


def test_dwb70_a_pdf_the_vendor_refuses_anyway_is_told_so_whatever_its_size(make_app) -> None:
    """Epic takes no PDF: a PDF over ehrsync's limit is told that first, as the run would (not to make it smaller)."""
    handle, key, conn = _world(make_app, "epic", "backend")
    _refused(_post(handle, key, conn, text=None, pdfBase64=_pdf_of(6_000_000)), "mime_type_unsupported", "pdfBase64")


def test_dwb70_a_pdf_over_ehrsyncs_limit_for_a_vendor_with_none_names_ehrsyncs(make_app) -> None:
    """Oracle Health declares no size limit: ehrsync's own (5,000,000 bytes, what it stores) refuses it, by name."""
    handle, key, conn = _world(make_app, "cerner", "backend")
    final = {"docStatus": "final", "clinicianApproved": True, "text": None}
    answer = _post(handle, key, conn, pdfBase64=_pdf_of(6_000_000), **final)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert (body["error"], body["field"]) == ("invalid_request", "pdfBase64"), body
    assert "6000000 bytes" in body["message"] and "5000000" in body["message"], body
    assert _post(handle, key, conn, pdfBase64=_pdf_of(5_000_000), **final).status_code == 201


def _wrapped(b64: str) -> str:
    """MIME's base64: a line break every 76 characters (and at the end, to a whole number of 4 characters)."""
    lines = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76)) + "\n"
    return lines + "\n" * (-len(lines) % 4)


@pytest.mark.parametrize(
    ("encoded", "problem"),
    [
        # 4,990,000 bytes, under every limit, but its line breaks count as 5,055,6xx bytes by length alone
        (_wrapped(_pdf_of(4_990_000)), "a line break at character 77"),
        # url-safe base64 ('-', '_'): as long as the standard one, the size is right but it is not base64 at all
        (_pdf_of(6_000_000).replace("+", "-").replace("/", "_")[:-8] + "-_-_-_-_", "'-' at character"),
    ],
)
def test_dwb70_a_pdf_that_is_not_base64_is_told_so_whatever_its_length(make_app, encoded, problem) -> None:
    """A PDF over ehrsync's limit is measured from its base64 length, not decoded; a string that is no base64 (line
    breaks, a url-safe alphabet) was measured too: 422 ``too_large`` for a PDF under every limit, or "shorten it" for
    one the decoder refuses anyway, so the host app shortened it to learn only then that it was never base64. Now it
    is 400 ``invalid_request`` naming the first character that is not base64, as a short one is."""
    handle, key, conn = _world(make_app, "generic", "backend")
    answer = _post(handle, key, conn, text=None, pdfBase64=encoded)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert (body["error"], body["field"]) == ("invalid_request", "pdfBase64"), body
    assert "not valid base64" in body["message"] and problem in body["message"], body
    assert _stored(handle) == 0


def test_dwb70_a_large_pdf_beside_a_text_is_told_to_give_one_of_them(make_app) -> None:
    """A note with both ``text`` and ``pdfBase64`` is refused for that, whatever the PDF's size: the PDF's size
    (``too_large``, "submit it again shorter") named a problem that shortening does not fix."""
    handle, key, conn = _world(make_app, "generic", "backend")
    answer = _post(handle, key, conn, pdfBase64=_pdf_of(6_000_000))  # and the default text
    assert answer.status_code == 400, answer.text
    assert (answer.json()["field"], answer.json()["message"]) == ("text", "give exactly one of 'text' or 'pdfBase64'")
