"""Note write-back: the pre-flight write gate (draft-note §4) and the DocumentReference builder (§2, §8)."""

from connectors.writeback.gate import (
    WriteCapability,
    WriteFlags,
    check_note_write,
    check_switches,
    scopes_allow_binary_create,
    scopes_allow_note_create,
    scopes_allow_provenance_create,
)
from connectors.writeback.note import DRAFT_BANNER, DRAFT_LABEL, NoteDraft, build_document_reference, text_attachment
from connectors.writeback.vendor_check import attachment_size, check_against_profile, persona_of

__all__ = [
    "DRAFT_BANNER",
    "DRAFT_LABEL",
    "NoteDraft",
    "WriteCapability",
    "WriteFlags",
    "attachment_size",
    "build_document_reference",
    "check_against_profile",
    "check_note_write",
    "check_switches",
    "persona_of",
    "scopes_allow_binary_create",
    "scopes_allow_note_create",
    "scopes_allow_provenance_create",
    "text_attachment",
]
