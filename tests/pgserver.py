"""A throwaway PostgreSQL server for the test session (see shared/environment.md).

``EHRSYNC_TEST_DATABASE_URL`` (a ``postgresql://user@host:port/db`` admin URL) points the tests at an existing
server instead. When neither works the tests fail with a message saying why: PostgreSQL is never silently skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailableError(RuntimeError):
    pass


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    #: the data folder of a server these tests started (None: an existing server, EHRSYNC_TEST_DATABASE_URL)
    data: Path | None = None

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        """SQLAlchemy URL naming its driver explicitly (psycopg 3 by default)."""
        return f"postgresql+{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindir() -> Path:
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    for guess in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (guess / "initdb").exists():
            return guess
    raise PostgresUnavailableError(
        "PostgreSQL server programs (initdb, pg_ctl) not found: install the 'postgresql' package "
        "or set EHRSYNC_TEST_DATABASE_URL to an existing server"
    )


# Stops the server once the process that started it is gone without stopping it (killed by a CI timeout, a
# SIGTERM to pytest, an OOM kill: no ``finally`` runs then), so no server outlives its test run. It leaves on its
# own when the data folder goes (the normal stop removes it). Its own session: a signal to the test run's process
# group does not reach it.
_WATCHDOG = """
import json, os, shutil, subprocess, sys, time
parent, stop, data, tmp = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
while os.path.exists(data):
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        break
    time.sleep(0.5)
"""


def _watch(stop: list[str], data: Path, tmp: Path) -> None:
    subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), json.dumps(stop), str(data), str(tmp)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[PgServer]:
    """Start a private PostgreSQL on a free loopback port; always stop and remove it afterwards."""
    external = os.environ.get("EHRSYNC_TEST_DATABASE_URL")
    if external:
        from urllib.parse import urlparse

        u = urlparse(external)
        yield PgServer(u.hostname or "127.0.0.1", u.port or 5432, u.username or "postgres")
        return
    bindir = _bindir()
    tmp = Path(tempfile.mkdtemp(prefix="ehrsync-pg-"))
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
    data = tmp / "data"
    port = _free_port()
    try:
        subprocess.run(
            _as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            _as_postgres(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    f"-p {port} -k {tmp} -c fsync=off -c listen_addresses=127.0.0.1 -c max_connections=200",
                    "-l",
                    str(tmp / "server.log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PostgresUnavailableError(
            f"could not start a throwaway PostgreSQL: {exc.stderr.decode(errors='replace')[-500:]}"
        ) from exc
    _watch(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]), data, tmp)
    try:
        yield PgServer("127.0.0.1", port, "postgres", data)
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)


def create_database(server: PgServer, name: str, template: str | None = None) -> str:
    """Create an empty database (or a copy of database ``template``, none connected to it: any session left on it
    is ended first) and return its psycopg 3 SQLAlchemy URL."""
    import psycopg

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if template is None:
            conn.execute(f'CREATE DATABASE "{name}"')
            return server.url(name)
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (template,),
        )
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return server.url(name)


@contextlib.contextmanager
def given_or_throwaway_database(url: str | None, name: str) -> Iterator[str]:
    """``url`` when one is given (a benchmark's ``--postgres-url``), else database ``name`` on a throwaway server
    that lives as long as the block."""
    if url:
        yield url
        return
    with throwaway_postgres() as server:
        yield create_database(server, name)


def drop_database(server: PgServer, name: str) -> None:
    """Drop a test's database, ending any connection still open to it (a pooled engine's). Each database copies
    the template (~8 MB); dropped when its test ends, its files are mostly gone before the kernel writes them back,
    and the server's folder stays small instead of growing by every test's database until the session ends."""
    import psycopg

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
