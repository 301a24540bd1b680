"""The Binary a large note references (DWB-18): created once, resumed rather than created again, and bounded.

A Binary holds the note's text (PHI). One the note does not reference is left in the EHR for good: ehrsync cannot
find it again. So:

- its id, once known, is stored with the note (``binary_id``): a resumed attempt references the same one;
- a Binary POST answered 202 (FHIR async) has its status URL stored (``binary_status_url``), committed before the
  first poll: a later try, or a run resumed after a kill (the note itself never POSTed, ``doc_posted`` unset, so with
  or without conditional create), asks that same job again (``poll_job``) instead of
  POSTing another Binary while the first may still be filed. Only once that job is known failed (refused: the
  note goes as any refusal does) or its status URL is gone (404/410: the job is not known there any more; a new
  Binary on the next try) is the URL forgotten;
- every Binary POST is counted before it is sent (``binary_posts``, committed first, so a killed run's counts
  too), and uncounted when its answer proves none was created (``outcome_unknown``: 429, a refusal, the EHR not
  reached, a request ehrsync withheld): after ``binary_posts_max`` none is sent again and the note is ``failed``
  (``binary_not_created``), the note itself never having been POSTed.

A status URL off the FHIR base is never asked (the token stays on the base, SAL-40): the note fails at once
(``binary_status_off_base``). So does a Binary the EHR created and named by an id that is not a FHIR id
(``connectors.fhir.ids``: it cannot be stored nor referenced), ``binary_id_not_fhir``: POSTing another would leave one
more unreferenced Binary each time, the EHR naming each the same way. And so does a Binary whose 2xx named no id at
all (no ``Location`` naming one, though FHIR's create SHALL return it, and no id in the body), ``binary_id_unknown``:
a Binary has no identifier to search it by, so none can be referenced, and the EHR would answer each POST so.

What can still be left behind, at most ``binary_posts_max`` Binaries a note (as many again for each person's retry,
DWB-63, which counts its Binary POSTs from 0 again, plus the one such a retry forgets when no POST of the note may be
stored, ``store.outbox_retry``: it may be gone from the EHR): one whose answer was lost, one a status URL gone for
good was filing, one still being filed when the note's attempts run out, one an off-base status URL names, the one
named by an id that is not a FHIR id or by none.
"""

from __future__ import annotations

import base64

from connectors import errors as ce
from connectors.fhir import CreateResult, FhirClient
from connectors.http import redact_url
from connectors.writeback import text_attachment
from engine.checkpoints import checkpoint
from engine.environment import SyncEnvironment
from engine.writeback.accepted import ends_the_create, poll_job
from engine.writeback.config import WritebackConfig
from engine.writeback.outcomes import outcome_unknown
from engine.writeback.preflight import note_bytes
from store.outbox import NoteRecord, transition

__all__ = [
    "BINARY_ID_NOT_FHIR",
    "BINARY_ID_UNKNOWN",
    "BINARY_NOT_CREATED",
    "BINARY_STATUS_OFF_BASE",
    "BinaryIdNotFhirError",
    "BinaryIdUnknownError",
    "BinaryLimitError",
    "BinaryPendingError",
    "BinaryStatusOffBaseError",
    "binary_url",
]

#: Reason code of a note failed because its Binaries may not be POSTed again (``binary_posts_max``).
BINARY_NOT_CREATED = "binary_not_created"
#: Reason code of a note failed because its accepted Binary's status endpoint is off the FHIR base.
BINARY_STATUS_OFF_BASE = "binary_status_off_base"
#: Reason code of a note failed because the EHR named its Binary by an id that is not a FHIR id.
BINARY_ID_NOT_FHIR = "binary_id_not_fhir"
#: Reason code of a note failed because the EHR created its Binary (a 2xx) and named no id for it.
BINARY_ID_UNKNOWN = "binary_id_unknown"
#: Status endpoint answers saying the job is not known there: the URL is forgotten, a new Binary may follow.
_GONE = frozenset({404, 410})


class BinaryPendingError(ce.TransportError):
    """The EHR accepted the Binary for later and has not said yet how it ended: the note tries again later."""

    code = "binary_pending"


class BinaryStatusOffBaseError(ce.EhrSyncError):
    """An accepted Binary's status endpoint is off the FHIR base: never asked (the token stays on the base), so
    the note fails at once rather than trying, attempt after attempt, a job it can never hear the end of."""

    code = BINARY_STATUS_OFF_BASE


class BinaryAnsweredError(ce.EhrSyncError):
    """The EHR created the Binary (``status``: its 2xx, which the failed note keeps as its last HTTP status, as it
    keeps a refusal's) but named it in a way no note can reference."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class BinaryIdNotFhirError(BinaryAnsweredError):
    """The EHR created the Binary and named it by an id that is not a FHIR id: no note can reference it, and another
    POST would be named the same way, so none is sent and the note fails, saying why (the id's length or type only)."""

    code = BINARY_ID_NOT_FHIR


class BinaryIdUnknownError(BinaryAnsweredError):
    """The EHR created the Binary (a 2xx) and named no id: no note can reference it, nothing can find it (a Binary
    carries no identifier), and another POST would be answered the same way, so none is sent and the note fails."""

    code = BINARY_ID_UNKNOWN


class BinaryLimitError(ce.EhrSyncError):
    """The note POSTed as many Binaries as it may (``binary_posts_max``): none is sent again."""

    code = BINARY_NOT_CREATED


def binary_url(
    env: SyncEnvironment, config: WritebackConfig, note: NoteRecord, client: FhirClient
) -> tuple[NoteRecord, str | ce.EhrSyncError]:
    """The note as it now is (each step below is committed), and ``Binary/{id}`` or the error to handle as a create's
    (``BinaryPendingError`` while an accepted Binary is not settled, ``BinaryLimitError`` past the bound)."""
    if note.binary_id:
        return note, f"Binary/{note.binary_id}"
    if note.binary_status_url is None:
        if note.binary_posts >= config.binary_posts_max:
            return note, BinaryLimitError(
                f"{note.binary_posts} Binaries were POSTed for this note and none was confirmed (answers lost, or "
                "jobs the EHR accepted for later gone or refused); no more is sent, as each may be left in the EHR"
            )
        posts = note.binary_posts + 1  # counted, and committed, before it is sent: a killed run's POST counts too
        note = transition(env.db, note, note.state, binary_posts=posts, detail={"binary_post": posts})
        try:
            created = client.create(_binary(note))
        except ce.EhrSyncError as exc:
            if not outcome_unknown(exc):  # refused, throttled, withheld, unreached: no Binary was created
                note = transition(env.db, note, note.state, binary_posts=posts - 1, detail={"binary_post": "none"})
            return note, exc
        if not created.accepted:
            return _created(env, note, created)
        if created.status_url is None:
            return note, BinaryPendingError("the server accepted the Binary for later and named no status endpoint")
        try:
            client.check_async_status_url(created.status_url)
        except ce.SecurityPolicyError:
            return note, BinaryStatusOffBaseError(
                f"the EHR accepted the Binary for later at a status endpoint off its FHIR base "
                f"({redact_url(created.status_url)}), which is not asked with the token (SAL-40): how it ends cannot "
                "be known, so the note is not sent; the Binary may still be filed in the EHR, unreferenced"
            )
        note = transition(env.db, note, note.state, binary_status_url=created.status_url, detail={"binary_job": 202})
    return _settle_job(env, config, note, client)


def _binary(note: NoteRecord) -> dict[str, str]:
    """The Binary holding the attachment as the DocumentReference describes it (its ``size`` and ``hash``): the PDF,
    or the text opened by the AI-draft banner (DWB-80, ``text_attachment``), never the text alone."""
    pdf = note_bytes(note)
    raw = pdf if pdf is not None else text_attachment(note.body)
    content_type = "application/pdf" if pdf is not None else "text/plain; charset=utf-8"
    return {"resourceType": "Binary", "contentType": content_type, "data": base64.b64encode(raw).decode("ascii")}


def _settle_job(
    env: SyncEnvironment, config: WritebackConfig, note: NoteRecord, client: FhirClient
) -> tuple[NoteRecord, str | ce.EhrSyncError]:
    """Ask the accepted Binary's status endpoint how it ended: created, refused, gone, or not known yet."""
    assert note.binary_status_url is not None
    checkpoint("writeback.binary_job")
    outcome = poll_job(client, note.binary_status_url, config, "Binary")
    if isinstance(outcome, CreateResult):
        return _created(env, note, outcome)
    gone = isinstance(outcome, ce.FhirError) and outcome.status in _GONE
    if isinstance(outcome, ce.FhirError) and (gone or ends_the_create(outcome)):
        detail = {"binary_job": "gone" if gone else "refused", "status_code": outcome.status}
        note = transition(env.db, note, note.state, binary_status_url=None, detail=detail)
        if not gone:
            return note, outcome  # refused: the note itself was never POSTed
        return note, BinaryPendingError(f"the Binary's status endpoint no longer knows its job (HTTP {outcome.status})")
    return note, BinaryPendingError("the server accepted the Binary for later and has not said yet how it ended")


def _created(env: SyncEnvironment, note: NoteRecord, created: CreateResult) -> tuple[NoteRecord, str | ce.EhrSyncError]:
    if not created.id:
        if note.binary_status_url is not None:
            note = transition(env.db, note, note.state, binary_status_url=None, detail={"binary_job": "no_id"})
        if created.id_not_fhir is not None:
            return note, BinaryIdNotFhirError(
                f"the EHR created the Binary but named it by an id that is not a FHIR id ({created.id_not_fhir}): no "
                "note can reference it, so the note is not sent and no other Binary is POSTed (the EHR would name it "
                "the same way, each left there unreferenced, holding the note's text); that Binary stays in the EHR",
                created.status,
            )
        return note, BinaryIdUnknownError(
            f"the EHR created the Binary (HTTP {created.status}) but named no id: no Location naming one (FHIR's "
            "create SHALL return it) and no id in the body; no note can reference it and nothing can find it, so the "
            "note is not sent and no other Binary is POSTed (the EHR would answer the same way, each left there "
            "unreferenced, holding the note's text); that Binary stays in the EHR",
            created.status,
        )
    note = transition(
        env.db, note, note.state, binary_id=created.id, binary_status_url=None, detail={"binary_created": True}
    )
    return note, f"Binary/{created.id}"
