"""Everything that may say "no" before a note leaves: switches, server, scopes, vendor profile (DWB-02/03, 40..43).

Any "no" is a ``WriteNotSupportedError`` with its reason; the caller marks the note ``blocked`` and sends nothing.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from connectors.errors import ConfigurationError, WriteNotSupportedError
from connectors.fhir import FhirClient
from connectors.writeback import (
    NoteDraft,
    WriteCapability,
    build_document_reference,
    check_against_profile,
    check_note_write,
)
from engine.writeback.config import WritebackConfig
from engine.writeback.target import NoteTarget
from store.outbox import NoteRecord

__all__ = ["SendPlan", "build_payload", "plan_send"]


@dataclass(frozen=True)
class SendPlan:
    """How this note is sent: with ``If-None-Exist`` or not, its docStatus, inline or through a Binary, and the
    attachment's contentType as the vendor takes it. ``rewritten``: the fields the vendor's write profile changed
    from what the host app gave (DWB-20), by name only, for the audit event of the POST. ``unconditional``: sent
    without If-None-Exist the server offers, as a person's confirmed retry asked (``NoteRecord.send_unconditional``)."""

    capability: WriteCapability
    conditional: bool
    doc_status: str
    via_binary: bool
    content_type: str
    rewritten: tuple[str, ...] = ()
    unconditional: bool = False

    def post_detail(self, attempt: int) -> dict[str, Any]:
        """The audit detail recorded as the DocumentReference POST leaves: its attempt, any rewritten fields, and
        ``unconditional`` when If-None-Exist was left out at a person's confirmed retry."""
        rewritten = {"rewritten": list(self.rewritten)} if self.rewritten else {}
        return {"doc_post": attempt} | rewritten | ({"unconditional": True} if self.unconditional else {})


def _doc_status(note: NoteRecord, target: NoteTarget) -> str:
    """``final`` needs the tenant's opt-in and a clinician's approval; nothing is ever changed to it (DWB-03)."""
    if note.doc_status == "final" and not (target.final_opt_in and note.clinician_approved):
        raise WriteNotSupportedError("final_not_allowed", "final notes need the tenant opt-in and clinician approval")
    return note.doc_status


def note_bytes(note: NoteRecord) -> bytes | None:
    """The PDF's bytes for a PDF note (stored base64), else None (a text note)."""
    if note.content_type != "application/pdf":
        return None
    try:
        return base64.b64decode(note.body, validate=True)
    except binascii.Error:
        raise ConfigurationError("the stored PDF is not valid base64") from None


def build_payload(
    note: NoteRecord, doc_status: str, attachment_url: str | None = None, content_type: str | None = None
) -> dict[str, Any]:
    """The DocumentReference for ``note``, validated with fhir.resources R4B (ConfigurationError if not);
    ``content_type``: the attachment's as the vendor wants it spelled (``WriteProfile.wire_content_type``)."""
    draft = NoteDraft(
        tenant_id=note.tenant_id,
        draft_id=note.draft_id,
        patient_id=note.patient_id,
        text=note.body if note.content_type != "application/pdf" else "",
        loinc_code=note.loinc_code,
        encounter_id=note.encounter_id,
        author_practitioner_id=note.author_id,
        created_at=note.created_at,
        title=note.title,
        pdf=note_bytes(note),
        doc_status=doc_status,
        attachment_url=attachment_url,
        content_type=content_type,
    )
    return build_document_reference(draft)


def plan_send(note: NoteRecord, target: NoteTarget, client: FhirClient, config: WritebackConfig) -> SendPlan:
    """Check every gate in order; the CapabilityStatement is read only once the switches are all on (DWB-43)."""
    flags = target.flags
    switches_on = flags.service_enabled and flags.tenant_enabled and flags.note_create_enabled
    statement = client.capabilities() if switches_on and flags.vendor_allows_notes else {}
    capability = check_note_write(statement, target.connection.granted_scopes or "", flags)
    doc_status = _doc_status(note, target)
    content_type, size = check_against_profile(  # the auth service runs the same check at submission
        target.profile,
        persona=target.persona,
        content_type=note.content_type,
        body=note.body,
        body_bytes=note.body_bytes,
        doc_status=doc_status,
        encounter_id=note.encounter_id,
        author_id=note.author_id,
        token_user=target.token_user,
        fhir_base=target.connection.fhir_base,
    )
    via_binary = size > config.inline_max_bytes and not target.profile.inline_only
    if via_binary and not capability.binary_create:
        raise WriteNotSupportedError(
            "no_binary_create",
            "the note is too large to inline and Binary create is not allowed: the server's CapabilityStatement"
            " does not offer it or the granted scopes do not cover it",
        )
    offered = capability.conditional_create and target.profile.conditional_create is not False
    # a person confirmed the note absent where If-None-Exist ignores its identifier (store.outbox_retry): without it
    unconditional = offered and note.send_unconditional
    rewritten = ("content.attachment.contentType",) if content_type != note.content_type else ()  # a charset added
    return SendPlan(
        capability, offered and not unconditional, doc_status, via_binary, content_type, rewritten, unconditional
    )
