"""The sandbox EHR in its own process, so its memory and CPU bookkeeping never count as ehrsync's."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from sandbox import SandboxConfig, SandboxServer

_START_TIMEOUT_S = 60.0


def _serve(cfg: dict[str, Any], pipe: Connection) -> None:
    """Child entry point: run the sandbox, report its URL, serve until the parent says stop (or goes away)."""
    with SandboxServer(SandboxConfig(**cfg)) as sb:
        pipe.send(sb.base_url)
        with contextlib.suppress(EOFError):
            pipe.recv()


class SandboxProcess:
    """``with SandboxProcess(patients=10_000) as sb: sb.base_url, sb.fhir_base`` — a spawned sandbox server."""

    def __init__(self, **config: Any) -> None:
        SandboxConfig(**config)  # reject a bad knob here, not as a hang in the child
        self._config = config
        self._pipe: Connection | None = None
        self._proc: mp.process.BaseProcess | None = None
        self.base_url = ""

    @property
    def fhir_base(self) -> str:
        return self.base_url + "/fhir"

    def __enter__(self) -> SandboxProcess:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(self._config, child), name="bench-sandbox", daemon=True)
        self._proc.start()
        child.close()
        self._pipe = parent
        if not parent.poll(_START_TIMEOUT_S):
            self.__exit__(None, None, None)
            raise RuntimeError(f"sandbox process did not start within {_START_TIMEOUT_S:.0f}s")
        self.base_url = str(parent.recv())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.send("stop")
            self._pipe.close()
        if self._proc is not None:
            self._proc.join(15)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)
