"""Declarative vendor facts (vendors.md §8, draft-note DWB-70) as small immutable values.

Pure data plus the checks that read it, so a UI, the pipelines and the write-back outbox all decide
from the same declaration instead of re-encoding vendor quirks.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from connectors.errors import WriteNotSupportedError
from connectors.fhir.references import reference_on
from connectors.http import RateLimiter

__all__ = [
    "NO_NOTE_WRITE",
    "AuthMethod",
    "BulkSupport",
    "FieldHint",
    "Persona",
    "RateLimit",
    "RefreshPolicy",
    "ScopeStyle",
    "WriteProfile",
]

Persona = Literal["patient", "user", "system"]

#: Why every note to a vendor whose write profile is not ``supported`` is refused (athenahealth, eClinicalWorks,
#: PointClickCare: no FHIR note write documented, draft-note §7): decided before the server is asked, so no
#: CapabilityStatement can change it. The write-back run stores it and ``POST /api/ehr/notes`` answers it.
NO_NOTE_WRITE = (
    "ehrsync writes no note to this EHR vendor: its write profile declares no FHIR note write (draft-note §7), so "
    "every note through this connection is refused before its server is asked, whatever the server's "
    "CapabilityStatement says; file the note in the EHR another way"
)


class RefreshPolicy(enum.Enum):
    """What a refresh response does to the refresh token."""

    NONE = "none"  # no refresh tokens: re-run the grant (backend services)
    REUSE_ORIGINAL = "reuse-original"  # response has no new refresh token: keep the original (Oracle Health)
    ROTATE = "rotate"  # may return a new one: persist it before use, keep the old if none came back


class ScopeStyle(enum.Enum):
    V1 = "v1"  # patient/Observation.read, .write
    V2 = "v2"  # patient/Observation.rs, .c


class BulkSupport(enum.Enum):
    """The export level ehrsync uses for the vendor (Group implies a vendor-defined population)."""

    NONE = "none"
    PATIENT = "patient"
    GROUP = "group"


@dataclass(frozen=True)
class AuthMethod:
    """A token endpoint auth method (``private_key_jwt``, ``client_secret_basic``, ``none``) and its algs."""

    method: str
    signing_algs: tuple[str, ...] = ()
    grant: str = "authorization_code"


@dataclass(frozen=True)
class RateLimit:
    """A call budget: ``capacity`` calls per ``window_s`` per ``scope``; ``source`` says who set the number."""

    capacity: int
    window_s: float
    scope: str
    shares_token_endpoint: bool
    source: str
    #: The vendor counts every caller (a 429 blocks the rest of the window): the engine keeps it in the app
    #: database for every process (``store.SharedRateBudget``), not in one process's memory.
    across_processes: bool = False

    def make_limiter(self) -> RateLimiter:
        return RateLimiter(self.capacity, self.window_s)


@dataclass(frozen=True)
class FieldHint:
    """How a UI should render one config field; ``secret`` fields are write-only and never echoed."""

    label: str
    help: str
    secret: bool = False
    placeholder: str = ""


@dataclass(frozen=True)
class WriteProfile:
    """DWB-70: what a DocumentReference (note) create may look like for one vendor.

    Checked before any EHR call by :meth:`check` (``engine.writeback.preflight``; a "no" blocks the note unsent):
    ``doc_status_by_persona``, ``mime_types`` (``mime_type_unsupported``), ``encounter_required``
    (``encounter_required``), ``author_is_token_user`` (``author_not_signed_in_user``: personas whose token's user
    must be the author, Oracle Health's provider tokens), ``max_bytes`` (``too_large``). Shaping the request:
    ``conditional_create`` (None: read it from the CapabilityStatement, generic servers); ``charset_required`` (every
    attachment contentType names a charset, a PDF's too, added where the note's has none: Oracle Health);
    ``inline_only`` (content goes as base64 ``data``, never as a ``Binary`` url: Oracle Health, Epic).
    Reconciling: ``drops_identifier`` (the vendor may store a created note without the ``identifier`` it was sent,
    DWB-33: an identifier search finding nothing proves nothing, so a lost note is also searched by patient, type
    and date, ``engine.writeback.fallback``).

    Declared facts no code reads, because ``connectors.writeback.note.build_document_reference`` meets them for every
    vendor: ``max_attachments`` (it always sends exactly one ``content`` entry, DWB-17) and ``period_end_required``
    (it always sends ``context.period`` with ``end``, the note's time, DWB-14). ``author_rule`` is prose for people
    (e.g. Epic's background user when no author is named): its checkable parts are the builder's (``author`` is only
    ever a ``Practitioner/{id}``, never the model) and ``author_is_token_user``'s. ``notes`` is prose too.
    """

    supported: bool
    doc_status_by_persona: Mapping[Persona, frozenset[str]] = field(default_factory=dict)
    mime_types: frozenset[str] = frozenset()
    encounter_required: bool = False
    conditional_create: bool | None = False
    author_rule: str = "optional"
    author_is_token_user: frozenset[Persona] = frozenset()
    max_bytes: int | None = None
    max_attachments: int = 1
    charset_required: bool = False
    period_end_required: bool = False
    inline_only: bool = False
    drops_identifier: bool = False
    unsupported_reason: str | None = None
    notes: str = ""

    def allowed_doc_status(self, persona: Persona) -> frozenset[str]:
        return self.doc_status_by_persona.get(persona, frozenset()) if self.supported else frozenset()

    def wire_content_type(self, content_type: str) -> str:
        """The attachment contentType as sent: the note's, with ``charset=utf-8`` added where the vendor wants a
        charset on every type and it names none (Oracle Health: ``application/pdf; charset=utf-8``)."""
        if self.charset_required and "charset=" not in content_type.lower():
            return f"{content_type.strip()}; charset=utf-8"
        return content_type

    def check(
        self,
        *,
        persona: Persona,
        doc_status: str,
        mime_type: str,
        size: int,
        has_encounter: bool,
        author_id: str | None = None,
        token_user: str | None = None,
        fhir_base: str | None = None,
    ) -> None:
        """Refuse a note before any EHR call (DWB-42) with the WRITE_NOT_SUPPORTED reason that applies.

        ``author_id``: the note's Practitioner id; ``token_user``: the token's ``fhirUser`` (``Practitioner/{id}``,
        or absolute on ``fhir_base``, the connection's server).
        """
        if not self.supported:
            raise WriteNotSupportedError(self.unsupported_reason or "vendor_disabled", NO_NOTE_WRITE)
        if doc_status not in self.allowed_doc_status(persona):
            reason = "draft_status_unsupported" if doc_status == "preliminary" else "doc_status_unsupported"
            raise WriteNotSupportedError(reason, self._status_problem(persona, doc_status))
        base_type = mime_type.split(";", 1)[0].strip().lower()
        if base_type not in self.mime_types:
            raise WriteNotSupportedError("mime_type_unsupported", self._mime_problem(base_type))
        self._check_author(persona, author_id, token_user, fhir_base)
        if self.encounter_required and not has_encounter:
            raise WriteNotSupportedError(
                "encounter_required",
                "this EHR files a note only on a visit (context.encounter): submit the note again with the "
                "`encounter` id of the visit it documents, an Encounter of the same patient (never an invented one)",
            )
        if self.max_bytes is not None and size > self.max_bytes:
            raise WriteNotSupportedError("too_large", self._size_problem(size, self.max_bytes))

    def _status_problem(self, persona: Persona, doc_status: str) -> str:
        """What to change for a docStatus the vendor refuses under this token: the statuses it takes, and for a draft
        the only way such an EHR files it (never made final by ehrsync, DWB-03)."""
        accepted = sorted(self.allowed_doc_status(persona))
        if not accepted:
            others = sorted(p for p in self.doc_status_by_persona if self.allowed_doc_status(p))
            return f"this EHR files no note under {persona} tokens: write through a connection whose token is " + (
                " or ".join(others) or "none"
            )
        said = f"docStatus {doc_status!r} is not accepted for {persona} tokens by this EHR, which takes " + ", ".join(
            repr(status) for status in accepted
        )
        if doc_status == "preliminary" and "final" in accepted:
            said += (
                ": it cannot hold a draft; submit the note again as `final` once a clinician approved it "
                "(`clinicianApproved`), with the tenant's `allowFinalNotes` on"
            )
        return said

    @staticmethod
    def _size_problem(size: int, max_bytes: int) -> str:
        """What to change for a note over the vendor's limit: ``size`` is its attachment as sent, which for a text
        note counts the draft banner (DWB-80) the submitter did not write, so the shortfall is said in bytes."""
        over = size - max_bytes
        return (
            f"the note's attachment as sent is {size} bytes (a text note's with the draft banner it is opened with), "
            f"over this EHR's limit of {max_bytes}: submit it again at least {over} byte{'s' if over > 1 else ''} "
            "shorter, or as several notes"
        )

    def _mime_problem(self, base_type: str) -> str:
        """What to change for a content type the vendor refuses: the types it takes, and text where it takes text
        (a note is text or a PDF)."""
        accepted = ", ".join(sorted(self.mime_types)) or "none"
        hint = " (submit the note as `text` instead of a PDF)" if "text/plain" in self.mime_types else ""
        return f"content type {base_type!r} is not accepted by this EHR, which takes {accepted}{hint}"

    def _check_author(
        self, persona: Persona, author_id: str | None, token_user: str | None, fhir_base: str | None
    ) -> None:
        """DWB-16: under these personas the EHR files a note only as the signed-in user (none named: the token's):
        the Practitioner the ``fhirUser`` names on this server, whatever its version."""
        if persona not in self.author_is_token_user or author_id is None:
            return
        if reference_on(token_user, fhir_base) != ("Practitioner", author_id):
            signed_in = token_user or "unknown"
            raise WriteNotSupportedError(
                "author_not_signed_in_user",
                f"author Practitioner/{author_id} is not the signed-in user ({signed_in}): this EHR accepts only the "
                "user the token was issued to as a note's author under a provider token",
            )


NOT_SUPPORTED = WriteProfile(supported=False, unsupported_reason="vendor_disabled")
