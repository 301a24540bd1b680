"""Child process for the crash tests: reopen a test world and run one sync (``EHRSYNC_SYNC_CRASH_AT`` may kill it).

    python -m tests.engine.crash_driver ROOT CIPHER_KEY_HEX TENANT_ID CONNECTION_ID incremental|bulk [RUN_ID]

Prints the report's status and counts as one JSON line when it survives.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from engine import run_bulk_export, sync_connection
from tests.engine.helpers import make_environment


def main(argv: list[str]) -> int:
    root, key_hex, tenant_id, connection_id, mode = argv[:5]
    logging.basicConfig(level=logging.WARNING)
    out: dict[str, Any]
    with httpx.Client(timeout=30.0) as http:
        world = make_environment(Path(root), http=http, cipher_key=bytes.fromhex(key_hex), tenant_id=tenant_id)
        if mode == "incremental":
            report = sync_connection(world.env, connection_id)
            out = {"status": report.status, "counts": report.counts(), "error": report.error}
        elif mode == "bulk":
            bulk = run_bulk_export(world.env, connection_id, argv[5])
            out = {"status": bulk.status, "counts": bulk.counts(), "error": bulk.error, "resumed": bulk.resumed}
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
