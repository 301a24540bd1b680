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
SCOPE = "system/*.rs system/DocumentReference.c system/Binary.c"


@pytest.mark.parametrize(
    ("provider", "note", "reason"),
    [
        ("epic", {}, "encounter_required"),  # Epic files a note only on a visit
        ("epic", {"pdf": PDF, "encounter": True}, "mime_type_unsupported"),  # and takes text/plain only
        ("cerner", {}, "draft_status_unsupported"),  # Oracle Health takes no draft
    ],
)
def test_dwb70_submission_refuses_a_note_with_the_reason_its_run_stores(
    world: SyncWorld, sb, http, tmp_path: Path, provider: str, note: dict, reason: str
) -> None:
    set_tenant(world)
    conn = connect_backend(world, sb, http=http, scope=SCOPE, provider_id=provider)
    patient = sb.admin.patients()[0]
    encounter = "enc-1" if note.get("encounter") else None
    stored = enqueue(world, conn, patient_id=patient, encounter_id=encounter, **({"pdf": PDF} if "pdf" in note else {}))
    ran = write_note(world.env, FAST, stored.id)
    assert (ran.state, ran.reason_code) == ("blocked", f"WRITE_NOT_SUPPORTED ({reason})"), ran.reason

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
        with pytest.raises(NoteNotAcceptedError) as refused:
            submit_note(ctx, world.tenant_id, sub, "test")
    finally:
        ctx.close()
    assert refused.value.details["reasonCode"] == ran.reason_code
    assert str(refused.value) == ran.reason
