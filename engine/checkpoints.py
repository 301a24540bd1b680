"""Named crash points: the documented test hook that proves every sync step is safe to kill.

Set ``EHRSYNC_SYNC_CRASH_AT=<name>`` (or ``<name>:<n>`` for the n-th time the point is reached, 1-based) and the
process SIGKILLs itself when it gets there, exactly as an OOM kill or a pulled plug would: no ``finally`` blocks,
no rollback handlers, no buffered writes flushed. Unset (the normal case) it costs one dict lookup.
The crash tests in ``tests/engine`` rerun the sync afterwards and compare the warehouse with a clean run.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter

CRASH_ENV = "EHRSYNC_SYNC_CRASH_AT"

# Every point the engine passes, in the order one type's sync reaches them.
POINTS = (
    "rest.page_landed",  # a search page was written to the Parquet writer
    "rest.landed",  # a type's landing file is complete and recorded as pending
    "rest.upserted",  # the warehouse upsert committed, the cursor not yet advanced
    "rest.cursor_saved",  # the mark and completion committed
    "bulk.kicked_off",  # $export accepted, status URL saved, not yet polled
    "bulk.manifest_saved",  # manifest and file rows saved
    "bulk.file_landed",  # one file landed to Parquet, not yet upserted
    "bulk.file_upserted",  # one file upserted into the warehouse
    "bulk.completed",  # cursor advanced, status URL not yet deleted
    "purge.files_removed",  # a purge removed the landing and attachment files, the warehouse rows not yet
    "purge.warehouse_purged",  # a purge deleted the warehouse rows, the sync state and completion not yet
    "writeback.sending",  # a note's pending -> sending committed, its POST not yet made
    "writeback.binary_job",  # an accepted Binary's status URL committed, its job about to be polled
    "writeback.posting",  # the note's DocumentReference POST recorded (doc_posted), not yet sent
    "writeback.sent",  # the EHR answered the POST, written not yet committed
    "writeback.written",  # sending -> written committed
    "writeback.provenance",  # the run's last move committed (written: a Provenance owed), the Provenance not yet sent
    "writeback.unknown",  # -> unknown committed (answer lost; or a spent pending note), not yet reconciled
    "writeback.pending",  # a transient failure sent the note back to pending (later attempt)
)

_log = logging.getLogger(__name__)
_hits: Counter[str] = Counter()


def checkpoint(name: str) -> None:
    """Die here with SIGKILL when ``EHRSYNC_SYNC_CRASH_AT`` names this point (and hit count)."""
    target = os.environ.get(CRASH_ENV)
    if not target:
        return
    point, _, nth = target.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] >= (int(nth) if nth else 1):
        _log.warning("crash hook %s reached: killing process %d", name, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)
