"""Draft-note write-back (issue 13, draft-note.md): the outbox's notes sent to the EHR exactly once.

``write_note`` runs one note's attempt (gates, payload, conditional create, reconciliation); the Dagster layer
(``pipelines/defs/writeback``) only decides when. Dagster-free, so it is tested and killed on its own.
"""

from engine.writeback.attempt import NoteNotFoundError, write_note
from engine.writeback.config import WritebackConfig
from engine.writeback.publish import publish_outbox

__all__ = ["NoteNotFoundError", "WritebackConfig", "publish_outbox", "write_note"]
