"""Child process for the crash tests: reopen a test world and run one sync (``EHRSYNC_SYNC_CRASH_AT`` may kill it).

``incremental`` runs production's Dagster job in-process (``run_sync``), so a kill lands inside a real step;
``bulk`` calls the Bulk export entry point its asset calls.

    python -m tests.engine.crash_driver ROOT CIPHER_KEY_HEX TENANT_ID CONNECTION_ID incremental [TYPE,TYPE...]
    python -m tests.engine.crash_driver ROOT CIPHER_KEY_HEX TENANT_ID CONNECTION_ID bulk RUN_ID

Prints the run's status and counts as one JSON line when it survives.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
from dagster import DagsterInstance

from engine import run_bulk_export
from tests.engine.helpers import make_environment
from tests.engine.job_runs import run_sync


def main(argv: list[str]) -> int:
    root, key_hex, tenant_id, connection_id, mode = argv[:5]
    logging.basicConfig(level=logging.WARNING)
    out: dict[str, Any]
    with httpx.Client(timeout=30.0) as http:
        world = make_environment(Path(root), http=http, cipher_key=bytes.fromhex(key_hex), tenant_id=tenant_id)
        if mode == "incremental":
            types = argv[5].split(",") if len(argv) > 5 else None
            # The run's Dagster storage stays in the world (a kill leaves it behind, not in the system temp dir).
            with DagsterInstance.ephemeral(tempdir=str(Path(root) / "dagster")) as instance:
                run = run_sync(world, connection_id, types=types, instance=instance)
            counts = run.record.counts if run.record is not None else {}
            out = {"status": run.status, "counts": counts, "error": run.error}
        elif mode == "bulk":
            bulk = run_bulk_export(world.env, connection_id, argv[5])
            out = {"status": bulk.status, "counts": bulk.counts(), "error": bulk.error, "resumed": bulk.resumed}
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
