"""One note through both vendor-profile checks (DWB-70): ``POST /api/ehr/notes``'s at submission (the auth service's
``submit_note``) and the write-back run's before sending (``write_note`` against the sandbox EHR over a real socket).
The host app is told at submission what the run would store on the note: the same ``reasonCode`` and words."""

from __future__ import annotations

from pathlib import Path

import pytest

from auth_service.core.config import load_settings
from auth_service.services.context import build_context
from auth_service.services.notes import NoteNotAcceptedError, NoteSubmission, submit_note
from engine.writeback import write_note
from tests.auth_service.keyutil import enc_key, service_rsa_pem
from tests.engine.helpers import SyncWorld, connect_backend
from tests.engine.writeback_helpers import FAST, enqueue, set_tenant

PDF = b"%PDF-1.4\n" + b"0" * 200 + b"\n%%EOF"
LARGE_PDF = b"%PDF-1.4\n" + b"0" * (5_000_001 - 9)  # one byte over ehrsync's limit and a generic server's
SCOPE = "system/*.rs system/DocumentReference.c system/Binary.c"


@pytest.mark.parametrize(
    ("provider", "note", "reason"),
    [
        ("epic", {}, "encounter_required"),  # Epic files a note only on a visit
        ("epic", {"pdf": PDF, "encounter": True}, "mime_type_unsupported"),  # and takes text/plain only
        ("cerner", {}, "draft_status_unsupported"),  # Oracle Health takes no draft
        ("generic", {"pdf": LARGE_PDF}, "too_large"),  # a generic server takes a PDF up to 5,000,000 bytes
    ],
)
def test_dwb70_submission_refuses_a_note_with_the_reason_its_run_stores(
    world: SyncWorld, sb, http, tmp_path: Path, provider: str, note: dict, reason: str
) -> None:
    set_tenant(world)
    conn = connect_backend(world, sb, http=http, scope=SCOPE, provider_id=provider)
    patient = sb.admin.patients()[0]
    encounter = "enc-1" if note.get("encounter") else None
    stored = enqueue(
        world, conn, patient_id=patient, encounter_id=encounter, **({"pdf": note["pdf"]} if "pdf" in note else {})
    )
    ran = write_note(world.env, FAST, stored.id)
    assert (ran.state, ran.reason_code) == ("blocked", f"WRITE_NOT_SUPPORTED ({reason})"), ran.reason

    sub = NoteSubmission(
        connection_id=conn,
        idempotency_key="parity-0001",
        title=stored.title,
        produced_by=stored.produced_by,
        patient=patient,
        encounter=encounter,
        text=None if "pdf" in note else stored.body,
        pdf_base64=stored.body if "pdf" in note else None,
    )
    refused = _refusal(world, sb, tmp_path, sub)
    assert refused.details["reasonCode"] == ran.reason_code
    assert str(refused) == ran.reason


@pytest.mark.parametrize(
    ("provider", "switches"),
    [("ecw", {}), ("athena", {}), ("pcc", {}), ("ecw", {"enableWrite": False})],
)
def test_dwb70_a_vendor_with_no_fhir_note_write_is_refused_at_submission_as_its_run_blocks_it(
    world: SyncWorld, sb, http, request_log, tmp_path: Path, provider: str, switches: dict
) -> None:
    """athenahealth, eClinicalWorks and PointClickCare declare no FHIR note write (draft-note §7, ``NOT_SUPPORTED``):
    the run blocks every note ``vendor_disabled`` before asking the server, here one whose CapabilityStatement
    declares DocumentReference create and whose token may create one, so the server can never change the answer.
    Such a note was stored ``pending`` (201) and only its run said no; now it is refused at submission in the run's
    words, which say the vendor (not a tenant switch: the run's answer when one is off too)."""
    set_tenant(world, **switches)
    conn = connect_backend(world, sb, http=http, scope=SCOPE, provider_id=provider)
    patient = sb.admin.patients()[0]
    stored = enqueue(world, conn, patient_id=patient)
    request_log.clear()
    ran = write_note(world.env, FAST, stored.id)
    assert (ran.state, ran.reason_code) == ("blocked", "WRITE_NOT_SUPPORTED (vendor_disabled)"), ran.reason
    assert not [u for u in request_log.urls if u.path.endswith("/metadata")]  # decided without the server

    sub = NoteSubmission(conn, "parity-0002", stored.title, stored.produced_by, patient=patient, text=stored.body)
    refused = _refusal(world, sb, tmp_path, sub)
    assert refused.details["reasonCode"] == ran.reason_code and str(refused) == ran.reason
    assert refused.details["field"] == "connectionId" and "vendor" in str(refused)


def _refusal(world: SyncWorld, sb, tmp_path: Path, sub: NoteSubmission) -> NoteNotAcceptedError:
    """``submit_note``'s refusal of ``sub`` by an auth service on the world's database."""
    settings = load_settings(
        INTEGRATIONS_TOKEN_ENC_KEY=enc_key(),
        DATABASE_URL=str(world.env.db.engine.url),
        EHRSYNC_STATE_DIR=str(tmp_path / "state"),
        APP_BASE_URL="http://testserver",
        SMART_ISSUER_ALLOWLIST=sb.fhir_base,
        EHR_JWT_PRIVATE_KEY=service_rsa_pem(),
        EHR_JWT_KEY_ID="kid-1",
    )
    ctx = build_context(settings, migrate=False)
    try:
        with pytest.raises(NoteNotAcceptedError) as refused:
            submit_note(ctx, world.tenant_id, sub, "test")
    finally:
        ctx.close()
    return refused.value
