"""Dagster's production processes started as an operator would: each in its own process group, its output in a
log file, stopped with SIGINT to the group (escalating to SIGTERM and SIGKILL only if it does not go), so no
webserver, daemon or code-server child outlives a test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

from ehrsync.process_group import stop_process_tree
from tests.pgserver import PgServer

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def dagster_environment(pg: PgServer, database: str, home: Path) -> dict[str, str]:
    """What deploy/dagster.yaml reads: DAGSTER_HOME and the storage database's connection details."""
    shutil.copyfile(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    return {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_USERNAME": pg.user,
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_HOST": pg.host,
        "DAGSTER_PG_PORT": str(pg.port),
        "DAGSTER_PG_DB": database,
    }


def tool(name: str) -> str:
    """A console script of this environment (``dagster``, ``dagster-webserver``, ``dagster-daemon``)."""
    return str(Path(sys.executable).parent / name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Processes:
    """Started processes by name, with their log files; ``logs()`` gives the tail of each for a failure message."""

    log_dir: Path
    started: dict[str, tuple[subprocess.Popen[bytes], Path]] = field(default_factory=dict)

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [tool(argv[0]), *argv[1:]],
                env=dict(env),
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started[name] = (proc, log)
        return proc

    def check_alive(self) -> None:
        for name, (proc, _) in self.started.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}\n{self.logs()}")

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(
            f"----- {name} (pid {proc.pid}) -----\n{log.read_text(errors='replace')[-tail:]}"
            for name, (proc, log) in self.started.items()
        )

    def stop_all(self) -> None:
        """SIGINT to each group, last started first (the code server last: the others talk to it); a group that
        does not go gets SIGTERM, then SIGKILL (``ehrsync.process_group``'s bounded escalation)."""
        for proc, _ in reversed(list(self.started.values())):
            stop_process_tree(proc)


@contextmanager
def running(log_dir: Path) -> Iterator[Processes]:
    procs = Processes(log_dir)
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_for(
    what: str, probe: Callable[[], T | None], procs: Processes, *, timeout_s: float, every_s: float = 1.0
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with every process's log after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        procs.check_alive()
        found: T | None = None
        with suppress(httpx.HTTPError, OSError):
            found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{procs.logs()}")
        time.sleep(every_s)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
