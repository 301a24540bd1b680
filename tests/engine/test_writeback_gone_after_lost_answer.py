"""DWB-34: on a note's last try, a conditional create's POST is stored, its answer lost, and the transport's retry
finds the EHR gone (connection refused). The error says "unreachable" (this try reached nothing), yet the first try
may be stored: the note is searched for (the EHR still gone: ``unknown``, for a later search), never ``failed`` with
``retries_exhausted`` while the EHR holds it (a person would write it again). The sandbox over a real socket, reached
through a TCP relay that stops listening once the note's POST has passed it."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import replace

from sqlalchemy import update

from connectors.budgets import forget_unreachable
from engine.writeback import write_note
from store.models import Connection
from tests.engine.writeback_helpers import FAST, enqueue, server_notes, writable_connection

DOC_POSTS = "/fhir/DocumentReference"


def _close(*sockets: socket.socket) -> None:
    """Shut down, then close: a close alone leaves a socket another thread reads from open (no FIN sent)."""
    for s in sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()


class _Relay:
    """Forwards TCP connections to ``target``. Once a DocumentReference POST has passed it stops listening and closes
    every other connection (idle ones a client pool could reuse): the POST's own connection still carries it and
    its (lost) answer, and any later connection is refused."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.down = threading.Event()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.down.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.pairs.append((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, asks: bool) -> None:
        """Copy ``src`` to ``dst`` until either side closes (``asks``: the client's side, watched for the POST)."""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if asks and b"POST /fhir/DocumentReference" in data:
                    self.go_down(keep=src)
        except OSError:
            pass
        _close(src, dst)

    def go_down(self, keep: socket.socket | None = None) -> None:
        self.down.set()
        with contextlib.suppress(OSError):  # shutdown ends the blocked accept (a close alone leaves it listening)
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for pair in self.pairs:
            if keep not in pair:
                _close(*pair)


def test_dwb34_a_stored_post_whose_retry_finds_the_ehr_gone_on_the_last_try_is_unknown_never_failed(
    world, sb, http
) -> None:
    conn = writable_connection(world, sb, http)
    host, port = sb.fhir_base.split("//", 1)[1].split("/", 1)[0].split(":")
    relay = _Relay((host, int(port)))
    origin = f"http://127.0.0.1:{relay.port}"
    with world.env.db.session() as session:
        session.execute(update(Connection).where(Connection.id == conn).values(fhir_base=f"{origin}/fhir"))
        session.commit()
    note = enqueue(world, conn)
    sb.admin.set_fault("drop_response", path=DOC_POSTS, method="POST", times=1)  # stored, its answer lost
    try:
        done = write_note(world.env, replace(FAST, max_attempts=1), note.id)
    finally:
        relay.go_down()
        forget_unreachable(origin)
    assert relay.down.is_set()
    assert len(server_notes(world, conn, sb, note)) == 1  # the EHR holds it
    assert (done.state, done.reason_code) == ("unknown", "response_lost")  # never failed retries_exhausted
