"""Copy the outbox's metadata into the warehouse table ``draft_note_outbox`` for analysts (no note text).

Best effort: the note's own state is already committed in the app database; a warehouse that is busy or down
costs only a stale analyst table, refreshed by the next write-back run.
"""

from __future__ import annotations

import logging

from engine.environment import SyncEnvironment
from store.outbox_reads import outbox_metadata_rows
from warehouse.errors import WarehouseError
from warehouse.note_outbox import replace_note_outbox

__all__ = ["publish_outbox"]

_log = logging.getLogger(__name__)


def publish_outbox(env: SyncEnvironment) -> int | None:
    """The number of rows copied, or None when the warehouse could not be written now."""
    rows = outbox_metadata_rows(env.db)
    try:
        with env.warehouse() as wh:
            return replace_note_outbox(wh, rows)
    except WarehouseError as exc:
        _log.warning("draft_note_outbox not refreshed now (%s); the next write-back run tries again", exc)
        return None
