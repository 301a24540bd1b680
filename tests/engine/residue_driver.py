"""Child process for the residue and connection-lock tests.

python -m tests.engine.residue_driver hold LANDING_ROOT CONNECTION_ID RUN_ID
    take the connection's lock, print "held", then sleep until killed
python -m tests.engine.residue_driver die-writing LANDING_ROOT CONNECTION_ID RUN_ID
    write part of a landing file (row groups flushed to its temporary file), then SIGKILL itself
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import orjson

from engine.connection_lock import connection_lock
from warehouse import LandingZone


def _hold(root: Path, connection_id: str, run_id: str) -> None:
    with connection_lock(root, connection_id, run_id, wait_s=0):
        sys.stdout.write("held\n")
        sys.stdout.flush()
        while True:
            time.sleep(1)


def _die_writing(root: Path, connection_id: str, run_id: str) -> None:
    zone = LandingZone(root, batch_rows=2)
    writer = zone.writer(connection_id, "Observation", run_id, "https://ehr.example/Observation", seq=1)
    for i in range(5):
        writer.add_resource({"resourceType": "Observation", "id": f"o{i}"})
        writer.add_line(b"not json")  # a quarantine row too: both temporary files exist
    writer._flush_quarantine()
    sys.stdout.write(orjson.dumps(sorted(p.name for p in writer._final.parent.iterdir())).decode() + "\n")
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    mode, root, connection_id, run_id = argv
    if mode == "hold":
        _hold(Path(root), connection_id, run_id)
    elif mode == "die-writing":
        _die_writing(Path(root), connection_id, run_id)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
