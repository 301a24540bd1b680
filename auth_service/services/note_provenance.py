"""The notes API's ``ehrProvenance``: where a note's Provenance in the EHR stands (DWB-82), for an operator.

A ``written`` note's Provenance is sent by the run that wrote it or, owed, by later runs (at most the write-back's
``max_attempts`` of them), or never (a gate closed, refused for good, nothing to point at). Without this the answer
showed only ``provenance.ehrProvenanceId``: null alike for one owed and about to be tried again, one given up after
its tries and one never allowed. Ids, counts and times only: never PHI (no text, no EHR diagnostics).
"""

from __future__ import annotations

from typing import Any

from store.outbox import NoteRecord

__all__ = ["STATUSES", "ehr_provenance"]

#: ``status`` values: the five outcomes the write-back records (``engine.writeback.provenance.OUTCOMES``), ``owed``,
#: ``not_written`` (the note is not ``written``: nothing decided) and ``unrecorded`` (written before revision 0022
#: with no Provenance id stored: ehrsync did not record why).
STATUSES = ("not_written", "owed", "sent", "given_up", "not_allowed", "refused", "not_sent", "unrecorded")


def ehr_provenance(record: NoteRecord) -> dict[str, Any]:
    """``{"status", "id", "tries", "nextTryAt"}``: ``id`` the EHR's Provenance id when stored (``sent`` may have none:
    the EHR took it without naming one); ``tries`` the tries later runs made of it (the writing run's own not
    counted; given up once the write-back's ``max_attempts`` are spent); ``nextTryAt`` when an owed one falls due (a
    run may be sending it then; a run in a process lacking the token's key, or meeting a tenant switch it hangs on
    stored neither true nor false, puts it off without a try)."""
    status = _status(record)
    due = record.provenance_due_at if status == "owed" else None
    return {
        "status": status,
        "id": record.provenance_id,
        "tries": record.provenance_tries,
        "nextTryAt": due.isoformat() if due is not None else None,
    }


def _status(record: NoteRecord) -> str:
    if record.state != "written":
        return "not_written"
    if record.provenance_due_at is not None:
        return "owed"
    if record.provenance_id:
        return "sent"
    return record.provenance_outcome or "unrecorded"
