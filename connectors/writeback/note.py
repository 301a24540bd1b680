"""Build a US Core DocumentReference for an AI-drafted note (draft-note §1, §2, §3, §8).

The note is a draft for clinician review: ``status=current``, ``docStatus=preliminary``, a LOINC type, the
clinical-note category, the AI banner and label, a business identifier for idempotent retries. The result
is validated against the FHIR R4 model before it leaves this module.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from connectors.errors import ConfigurationError

__all__ = [
    "DRAFT_BANNER",
    "DRAFT_LABEL",
    "NOTE_TYPES",
    "NoteDraft",
    "build_document_reference",
    "note_content",
    "text_attachment",
]

DRAFT_BANNER = "DRAFT - AI generated; requires clinician review"
DRAFT_LABEL = "DRAFT - AI Generated Note"
NOTE_TYPES: dict[str, str] = {
    "11506-3": "Progress note",
    "34109-9": "Note",
    "11488-4": "Consult note",
    "34117-2": "History and physical note",
    "18842-5": "Discharge summary",
    "28570-0": "Procedure note",
    "57133-1": "Referral note",
}
_CATEGORY_SYSTEM = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"


@dataclass(frozen=True)
class NoteDraft:
    """One note to file; ``draft_id`` is generated once per draft and reused on every retry (DWB-30)."""

    tenant_id: str
    draft_id: str
    patient_id: str
    text: str
    loinc_code: str = "11506-3"
    encounter_id: str | None = None
    author_practitioner_id: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: the host app's title, shown after the DRAFT label (DWB-19); None: the note type's name
    title: str | None = None
    #: a PDF instead of text (``text`` is then ignored); the label is in ``description`` and the title
    pdf: bytes | None = None
    #: ``preliminary`` unless the caller checked the tenant opt-in and clinician approval (DWB-02/03)
    doc_status: str = "preliminary"
    #: a ``Binary/{id}`` created first, referenced instead of inline data (DWB-18)
    attachment_url: str | None = None
    #: the attachment contentType as the vendor wants it spelled (Oracle Health: a charset even on a PDF); None:
    #: ``application/pdf`` or ``text/plain; charset=utf-8``. Its media type must be the content's.
    content_type: str | None = None

    def __repr__(self) -> str:  # the note text is PHI
        return f"NoteDraft(tenant_id={self.tenant_id!r}, draft_id={self.draft_id!r})"


def identifier_system(tenant_id: str) -> str:
    return f"urn:ehrsync:note-draft:{tenant_id}"


def _instant(value: datetime) -> str:
    if value.tzinfo is None:
        raise ConfigurationError("note times must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def note_content(draft: NoteDraft) -> tuple[bytes, str]:
    """The attachment's bytes and content type: the PDF as given, or the text opened by the banner (DWB-80)."""
    if draft.pdf is not None:
        if not draft.pdf.startswith(b"%PDF-"):
            raise ConfigurationError("the PDF content does not start with %PDF-")
        return draft.pdf, _spelled(draft, "application/pdf")
    if not draft.text.strip():
        raise ConfigurationError("note text is empty")
    return text_attachment(draft.text), _spelled(draft, "text/plain; charset=utf-8")


def text_attachment(text: str) -> bytes:
    """A text note's attachment as sent: opened by the banner (DWB-80) unless it already is; its size is what a
    vendor's size limit counts, not the submitted text's."""
    body = text if text.startswith(DRAFT_BANNER) else f"{DRAFT_BANNER}\n\n{text}"
    return body.encode("utf-8")


def _spelled(draft: NoteDraft, default: str) -> str:
    """``draft.content_type`` when it names the content's media type, else ``default``: a spelling never changes what
    the bytes are (a ConfigurationError for a type that does)."""
    if draft.content_type is None:
        return default
    if draft.content_type.split(";", 1)[0].strip().lower() != default.split(";", 1)[0]:
        raise ConfigurationError(f"content type {draft.content_type!r} is not the note's ({default})")
    return draft.content_type


def _located(draft: NoteDraft, raw: bytes) -> dict[str, str]:
    if draft.attachment_url:
        return {"url": draft.attachment_url}
    return {"data": base64.b64encode(raw).decode("ascii")}


def build_document_reference(draft: NoteDraft) -> dict[str, Any]:
    """The DocumentReference JSON for ``draft``; raises ``ConfigurationError`` for input FHIR would reject."""
    if draft.loinc_code not in NOTE_TYPES:
        raise ConfigurationError(
            f"unknown note type LOINC code {draft.loinc_code!r}; expected one of {list(NOTE_TYPES)}"
        )
    if draft.doc_status not in ("preliminary", "final"):
        raise ConfigurationError(f"docStatus {draft.doc_status!r} is not one a new note may have")
    raw, content_type = note_content(draft)
    created = _instant(draft.created_at)
    title = f"{DRAFT_LABEL}: {(draft.title or NOTE_TYPES[draft.loinc_code]).strip()}"
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "meta": {"tag": [{"system": "urn:ehrsync:tags", "code": "ai-generated"}]},
        "identifier": [{"system": identifier_system(draft.tenant_id), "value": draft.draft_id}],
        "status": "current",
        "docStatus": draft.doc_status,
        "type": {
            "coding": [
                {"system": "http://loinc.org", "code": draft.loinc_code, "display": NOTE_TYPES[draft.loinc_code]}
            ],
            "text": NOTE_TYPES[draft.loinc_code],
        },
        "category": [{"coding": [{"system": _CATEGORY_SYSTEM, "code": "clinical-note", "display": "Clinical Note"}]}],
        "subject": {"reference": f"Patient/{draft.patient_id}"},
        "date": created,
        "description": title,
        "content": [
            {
                "attachment": {
                    "contentType": content_type,
                    **_located(draft, raw),
                    "title": title,
                    "creation": created,
                    "size": len(raw),
                    "hash": base64.b64encode(hashlib.sha1(raw, usedforsecurity=False).digest()).decode("ascii"),
                }
            }
        ],
    }
    context: dict[str, Any] = {"period": {"start": created, "end": created}}
    if draft.encounter_id:
        context["encounter"] = [{"reference": f"Encounter/{draft.encounter_id}"}]
    resource["context"] = context
    if draft.author_practitioner_id:
        resource["author"] = [{"reference": f"Practitioner/{draft.author_practitioner_id}"}]
    # imported here, not at the top: the code location and every run worker import this module, and the R4B
    # models cost ~0.3 s of CPU to load, which only a note's build needs
    from fhir.resources.R4B.documentreference import DocumentReference

    try:
        DocumentReference.model_validate(resource)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
        raise ConfigurationError(f"DocumentReference failed FHIR R4 validation at {fields}") from None
    return resource
