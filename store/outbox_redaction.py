"""What a purge leaves of a connection's draft notes: the metadata, never the text (issue 12 retention, issue 13).

A purged connection is disconnected, so its notes can no longer be written: the ones still waiting end
``failed`` with ``connection_purged`` (a version step, as every transition), and every note loses its body, its
title, the server's free-text reason and the OperationOutcome issues kept of a refusal (``outcome_issues``). What
stays (states, counts, EHR ids, times) is what the audit trail and the analysts' ``draft_note_outbox`` table
describe.
"""

from __future__ import annotations

from sqlalchemy import Update, update

from store.models import NoteOutbox

__all__ = ["PURGED_REASON", "note_redactions"]

PURGED_REASON = "connection_purged"
_OPEN_STATES = ("pending", "sending", "unknown")


def note_redactions(connection_id: str) -> dict[str, Update]:
    """The statements (run in the purge's completing transaction): close open notes, then blank every body."""
    of_connection = NoteOutbox.connection_id == connection_id
    return {
        "notes_closed": update(NoteOutbox)
        .where(of_connection, NoteOutbox.state.in_(_OPEN_STATES))
        .values(state="failed", reason_code=PURGED_REASON, version=NoteOutbox.version + 1),
        "notes_redacted": update(NoteOutbox)
        .where(
            of_connection,
            (NoteOutbox.body != "")
            | (NoteOutbox.title != "")
            | NoteOutbox.reason.is_not(None)
            | NoteOutbox.outcome_issues.is_not(None),
        )
        .values(body="", title="", reason=None, outcome_issues=None),
    }
