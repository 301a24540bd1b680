"""DWB-82: an owed Provenance met by runs in a process without the key its connection's token is sealed under
(``TokenKeyMissingError``: a worker deployed without ``INTEGRATIONS_TOKEN_ENC_KEYS_OLD`` during a rotation), against
the sandbox over a real socket and a real SQLite app database shared with a process that has the key.

Before, each such run claimed a try (``provenance_tries`` + 1) and then could not open the token: after
``max_attempts`` runs the Provenance was given up for good, though the EHR was never asked. Now such a run gives the
try it claimed back and leaves the Provenance owed, put off as a note waiting for the key is (``wait_for_key``): no
run is asked for it meanwhile, and a process with the key sends it once, when due.
"""

from __future__ import annotations

import os
from typing import Any

from engine.writeback import write_note
from engine.writeback.waiting import HOLD_MIN_S
from store.models import utcnow
from tests.engine.helpers import SyncWorld, make_environment
from tests.engine.writeback_helpers import (
    FAST,
    WRITE_SCOPE,
    asked_for,
    enqueue,
    provenance_audits,
    provenance_due_now,
    read_note,
    writable_connection,
)

PROV_POSTS = "/fhir/Provenance"


def test_dwb82_runs_without_the_token_key_never_spend_the_provenance_tries(
    tmp_path: Any, world: SyncWorld, start_sandbox: Any, http: Any, request_log: Any
) -> None:
    ehr = start_sandbox(provenance_create=True)
    conn = writable_connection(world, ehr, http, scope=f"{WRITE_SCOPE} patient/Provenance.c")
    note = enqueue(world, conn, author_id="pract-1")
    ehr.admin.set_fault("drop", path=PROV_POSTS, method="POST", times=1)
    left = write_note(world.env, FAST, note.id)  # written; its Provenance POST never reached the EHR: owed
    assert (left.state, left.provenance_tries) == ("written", 0) and left.provenance_due_at is not None
    keyless = make_environment(
        tmp_path / "world", http=http, cipher_key=os.urandom(32), tenant_id=world.tenant_id, migrate=False
    )
    for _ in range(FAST.max_attempts + 1):  # each run the sensor asks for lands in the keyless process
        provenance_due_now(world, note.id)
        assert asked_for(world, note.id)
        held = write_note(keyless.env, FAST, note.id)
        assert (held.state, held.provenance_id, held.provenance_tries) == ("written", None, 0)
        assert held.provenance_due_at is not None
        assert (held.provenance_due_at - utcnow()).total_seconds() >= HOLD_MIN_S - 5  # put off, as wait_for_key
        assert not asked_for(world, note.id)  # no run beside it meanwhile
    assert len(request_log.paths(PROV_POSTS, "POST")) == 1  # the dropped one: the keyless runs asked nothing
    said = provenance_audits(world, "waiting_for_key")
    assert len(said) == FAST.max_attempts + 1 and all(d["error_code"] == "token_undecryptable" for d in said)

    provenance_due_now(world, note.id)
    done = write_note(world.env, FAST, note.id)  # a process with the key
    [prov] = [p for p in ehr.state.store.orphan_resources(["Provenance"])]
    assert (done.provenance_id, done.provenance_due_at, done.provenance_tries) == (prov["id"], None, 1)
    assert len(request_log.paths(PROV_POSTS, "POST")) == 2 and not asked_for(world, note.id)
    assert read_note(world, note.id).provenance_id == prov["id"]
