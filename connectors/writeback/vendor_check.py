"""A note against its vendor's write profile (DWB-70), decided from the note and its connection alone.

One composition for both callers, so they refuse the same notes with the same reason and words: the engine's
check before sending (``engine.writeback.preflight``, the source of truth) and the auth service's at submission
(``POST /api/ehr/notes``, so a host app learns at once of a note the EHR will never take).
"""

from __future__ import annotations

from connectors.errors import WriteNotSupportedError
from connectors.fhir.references import reference_on
from connectors.providers.profiles import NO_NOTE_WRITE, Persona, WriteProfile
from connectors.writeback.note import text_attachment

__all__ = ["PDF", "attachment_size", "check_against_profile", "check_vendor_writes_notes", "persona_of"]

#: The stored content type of a PDF note (a text note's is ``text/plain; charset=utf-8``).
PDF = "application/pdf"


def check_vendor_writes_notes(vendor_allows_notes: bool) -> None:
    """``WriteNotSupportedError`` (``vendor_disabled``, ``NO_NOTE_WRITE``) for a vendor whose write profile declares no
    FHIR note write: checked first, before any switch and before the CapabilityStatement is read (DWB-43), so this
    one answer, the same whatever the tenant or the server says, is both the run's and the submission's."""
    if not vendor_allows_notes:
        raise WriteNotSupportedError("vendor_disabled", NO_NOTE_WRITE)


def persona_of(kind: str, fhir_user: str | None) -> Persona:
    """Whose token a connection holds: backend and group connections ``system``; a ``fhirUser`` naming a
    Practitioner (a ``/_history/n`` version the same one) ``user``; anything else ``patient``."""
    if kind in ("backend", "group"):
        return "system"
    user = reference_on(fhir_user, None)
    return "user" if user is not None and user[0] == "Practitioner" else "patient"


def attachment_size(content_type: str, body: str, body_bytes: int) -> int:
    """The attachment's bytes as sent: a text note's include the banner the builder opens it with (DWB-80), which
    the size the note was submitted with does not count; a PDF's are its own (``body_bytes``, decoded)."""
    if content_type == PDF:
        return body_bytes
    return len(text_attachment(body))


def check_against_profile(
    profile: WriteProfile,
    *,
    persona: Persona,
    content_type: str,
    body: str,
    body_bytes: int,
    doc_status: str,
    encounter_id: str | None,
    author_id: str | None,
    token_user: str | None,
    fhir_base: str | None,
) -> tuple[str, int]:
    """``WriteNotSupportedError`` when ``profile`` refuses the note (``WriteProfile.check``); else the attachment's
    contentType as the vendor takes it and its size as sent. ``body``: the text, or a PDF's base64 as stored."""
    wire_type = profile.wire_content_type(content_type)
    size = attachment_size(content_type, body, body_bytes)
    profile.check(
        persona=persona,
        doc_status=doc_status,
        mime_type=wire_type,
        size=size,
        has_encounter=encounter_id is not None,
        author_id=author_id,
        token_user=token_user,
        fhir_base=fhir_base,
    )
    return wire_type, size
