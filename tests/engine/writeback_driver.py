"""Child process for the write-back kill tests: reopen a test world and run one note's write-back.

``EHRSYNC_SYNC_CRASH_AT=writeback.<point>`` SIGKILLs it at that transition (engine/checkpoints.py).

    python -m tests.engine.writeback_driver ROOT CIPHER_KEY_HEX TENANT_ID NOTE_ID [INLINE_MAX_BYTES]

``INLINE_MAX_BYTES``: notes over it go through a Binary created first (DWB-18), polled for a short while when the
EHR accepts it for later.

``EHRSYNC_TEST_APP_DB_URL``: the app database of the parent's world when it is not the SQLite file under ROOT.

Prints the note's final state as one JSON line when it survives.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import orjson

from engine.writeback import write_note
from tests.engine.helpers import make_environment
from tests.engine.writeback_helpers import APP_DB_ENV, FAST


def main(argv: list[str]) -> int:
    root, key_hex, tenant_id, note_id = argv[:4]
    config = FAST if len(argv) < 5 else replace(FAST, inline_max_bytes=int(argv[4]), accepted_poll_s=0.2)
    logging.basicConfig(level=logging.WARNING)
    with httpx.Client(timeout=30.0) as http:
        key, url = bytes.fromhex(key_hex), os.environ.get(APP_DB_ENV)  # the parent's PostgreSQL, when it has one
        world = make_environment(Path(root), http=http, cipher_key=key, tenant_id=tenant_id, app_db_url=url)
        note = write_note(world.env, config, note_id)
    sys.stdout.write(orjson.dumps({"state": note.state}).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
