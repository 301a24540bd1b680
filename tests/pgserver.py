"""A throwaway PostgreSQL server for the test session (see shared/environment.md).

``EHRSYNC_TEST_DATABASE_URL`` (a ``postgresql://user@host:port/db`` admin URL) points the tests at an existing
server instead. When neither works the tests fail with a message saying why: PostgreSQL is never silently skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
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
    try:
        yield PgServer("127.0.0.1", port, "postgres")
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)


def create_database(server: PgServer, name: str) -> str:
    """Create an empty database and return its psycopg 3 SQLAlchemy URL."""
    import psycopg

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url(name)
