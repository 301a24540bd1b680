"""A write-back run in a process without the key a connection's token is sealed under (``TokenKeyMissingError``: a
worker deployed without ``INTEGRATIONS_TOKEN_ENC_KEYS_OLD`` during a rotation), against the sandbox over a real socket
and a real SQLite app database shared with a process that has the key.

As for syncs, the connection's status is not changed (another process may well hold the key). The note is neither
failed nor lost: it waits ``pending`` with the reason code the syncs' error carries (``token_undecryptable``) and a
reason naming the key id and the setting, never a token; once a process has the key, it is sent (or, when an
earlier POST may be stored, found) once."""

from __future__ import annotations

import os
from datetime import timedelta

from engine.writeback import write_note
from engine.writeback.queue import due_runs
from engine.writeback.waiting import HOLD_MIN_S
from store.crypto import ENV_OLD_KEYS, derive_kid
from store.models import Connection, utcnow
from store.outbox import get_note
from tests.engine.helpers import make_environment
from tests.engine.writeback_helpers import FAST, due_now, enqueue, held_s, server_notes, writable_connection

DOC_POSTS = "/fhir/DocumentReference"


def _keyless(tmp_path, world, http):
    """The world's app database, opened by a process configured with another key only."""
    other = os.urandom(32)
    return make_environment(tmp_path / "world", http=http, cipher_key=other, tenant_id=world.tenant_id, migrate=False)


def _waits_for_the_key(world, keyless, conn: str, note_id: str, *, maybe_stored: bool) -> None:
    waiting = write_note(keyless.env, FAST, note_id)
    assert (waiting.state, waiting.maybe_stored, waiting.reason_code) == (
        "pending",
        maybe_stored,
        "token_undecryptable",
    )
    reason = waiting.reason or ""
    assert derive_kid(world.cipher_key) in reason and ENV_OLD_KEYS in reason, reason
    assert world.env.vault.get_access_token(conn) not in reason
    # put off HOLD_MIN_S at least though FAST's backoff_cap_s is 0 (before: due at once, a run every sensor tick)
    assert held_s(waiting) >= HOLD_MIN_S and write_note(keyless.env, FAST, note_id).version == waiting.version
    due_now(world, note_id)
    again = write_note(keyless.env, FAST, note_id)  # a run meeting it again: put off once more, nothing else
    assert again.next_attempt_at >= waiting.next_attempt_at
    assert (again.state, again.reason_code, again.reason, again.attempts, again.maybe_stored) == (
        "pending",
        waiting.reason_code,
        waiting.reason,
        waiting.attempts,
        maybe_stored,
    )
    with world.env.db.session() as session:
        assert session.get(Connection, conn).status == "active"  # as for syncs: the process, not the connection
    due_now(world, note_id)
    runs, _ = due_runs(world.env.db, utcnow(), after=None, stalled_after_s=600.0)
    assert note_id in {run.note_id for run in runs}  # the sensor asks for it: a process with the key sends it


def test_a_note_never_sent_waits_for_the_missing_key_then_is_written_once(tmp_path, world, sb, http, request_log):
    """Before, the note was ``failed`` (``token_undecryptable``, no reason) by a process lacking the key: ended for a
    person to send again, while its connection looked healthy. Now it waits, named, and is written once."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    _waits_for_the_key(world, _keyless(tmp_path, world, http), conn, note.id, maybe_stored=False)
    assert request_log.paths(DOC_POSTS, "POST") == []
    done = write_note(world.env, FAST, note.id)  # a process with the key
    [doc] = server_notes(world, conn, sb, note)
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"]), done.reason


def test_a_note_that_may_be_stored_waits_for_the_missing_key_then_is_found(tmp_path, world, sb, http) -> None:
    """An earlier POST stored with its answer lost. Before, the keyless run made it wait for its connection to be
    ``active`` again (``connection_token_undecryptable``, "it is token_undecryptable") while the connection was
    ``active``, naming neither the key nor the setting. Now the reason names them; then one run finds the note."""
    conn = writable_connection(world, sb, http)
    note = enqueue(world, conn)
    sb.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=None)  # stored, the answer lost
    assert write_note(world.env, FAST, note.id).maybe_stored
    sb.admin.clear_faults()
    _waits_for_the_key(world, _keyless(tmp_path, world, http), conn, note.id, maybe_stored=True)
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, sb, get_note(world.env.db, note.id))
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"]), done.reason


def test_notes_waiting_for_the_key_do_not_hide_later_notes_from_the_sensor(tmp_path, world, sb, http) -> None:
    """The sensor reads at most ``limit`` due notes, the longest due first. Two notes wait for the key (``limit`` 2
    stands for 100); their runs keep landing in the keyless process. Before, such a run left the note as it was: due
    since the first wait, it stayed first in every read, so a note enqueued later was never asked for (however long
    the sensor ticked) while the key was missing, though a process able to open its token could have sent it. Now each
    such run puts the note off ``backoff_cap_s`` again, behind it."""
    conn = writable_connection(world, sb, http)
    keyless = _keyless(tmp_path, world, http)
    waiting = [enqueue(world, conn) for _ in range(2)]
    for note in waiting:
        write_note(keyless.env, FAST, note.id)
        due_now(world, note.id)  # their hold has passed: due before the note enqueued now
    later = enqueue(world, conn)
    cursor, asked = None, []
    for _ in range(3):  # the sensor's ticks; each run it requests lands in the keyless process
        runs, cursor = due_runs(world.env.db, utcnow(), after=cursor, stalled_after_s=600.0, limit=2)
        asked.append({run.note_id for run in runs})
        if later.id in asked[-1]:
            break
        for run in runs:
            assert write_note(keyless.env, FAST, run.note_id).state == "pending"
    assert asked[0] == {n.id for n in waiting} and len(asked) == 2 and later.id in asked[1], asked  # the 2nd tick
    overdue = utcnow() + timedelta(hours=1)  # the stalled-period reads too: still not hidden
    assert later.id in {
        run.note_id for run in due_runs(world.env.db, overdue, after=cursor, stalled_after_s=600.0, limit=2)[0]
    }


def test_an_accepted_note_is_not_given_up_by_a_process_without_the_key(tmp_path, world, start_sandbox, http) -> None:
    """A bare 202 (the EHR files the note later): the note is ``unknown`` (``accepted``), due for identifier searches,
    each one of its ``max_attempts`` checks. Before, a run in a process lacking the token's key counted a check it
    could not make, so a few such runs left the note ``accepted_unconfirmed``, for a person, never searched again,
    though the EHR held it. Now such a run counts nothing and says why in the reason (the key id and the setting); a
    process with the key checks it as before, the reason its own again, and finds it once filed."""
    ehr = start_sandbox(create_answer="accepted", create_async_delay_s=100.0)
    conn = writable_connection(world, ehr, http)
    note = enqueue(world, conn)
    first = write_note(world.env, FAST, note.id)
    assert (first.state, first.reason_code) == ("unknown", "accepted")
    keyless = _keyless(tmp_path, world, http)
    for _ in range(FAST.max_attempts + 1):
        waiting = write_note(keyless.env, FAST, note.id)
    assert (waiting.state, waiting.reason_code, waiting.attempts) == ("unknown", "accepted", first.attempts)
    assert held_s(waiting) >= HOLD_MIN_S  # FAST's backoff_cap_s is 0: before, due again at once
    reason = waiting.reason or ""
    assert derive_kid(world.cipher_key) in reason and ENV_OLD_KEYS in reason, reason
    assert world.env.vault.get_access_token(conn) not in reason
    due_now(world, note.id)
    runs, _ = due_runs(world.env.db, utcnow(), after=None, stalled_after_s=600.0)
    assert note.id in {run.note_id for run in runs}
    checked = write_note(world.env, FAST, note.id)  # not filed yet: a check, counted
    assert (checked.state, checked.reason, checked.attempts) == ("unknown", first.reason, first.attempts + 1)
    ehr.admin.settings(clock_shift_s=200.0)  # the EHR's job has run meanwhile
    done = write_note(world.env, FAST, note.id)
    [doc] = server_notes(world, conn, ehr, get_note(world.env.db, note.id))
    assert (done.state, done.ehr_resource_id) == ("written", doc["id"]), done.reason
