"""Everything one running sandbox holds, shared by the routers through ``app.state.sandbox``."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

from starlette.requests import Request

from sandbox.async_creates import AsyncCreates
from sandbox.bulk.jobs import JobManager
from sandbox.clock import Clock
from sandbox.config import SandboxConfig
from sandbox.data.generator import Generator
from sandbox.data.store import DataStore
from sandbox.faults import FaultRegistry
from sandbox.oauth.keys import SigningKey
from sandbox.oauth.state import AuthState
from sandbox.writer import BackgroundWriter


class SandboxState:
    def __init__(self, cfg: SandboxConfig) -> None:
        self.initial = cfg.model_copy(deep=True)
        self.settings = cfg.model_copy(deep=True)
        self.clock = Clock(cfg.clock_shift_s, cfg.clock_leap_second)
        self.store = DataStore(Generator(cfg.seed, cfg.patients), self.clock, lambda: self.settings.created_id_prefix)
        self.auth = AuthState()
        self.faults = FaultRegistry()
        self.keys = SigningKey()
        self.page_secret = secrets.token_bytes(32)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if cfg.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ehrsync-sandbox-")
            self.data_dir = Path(self._tmp.name)
        else:
            self.data_dir = cfg.data_dir
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.bulk = JobManager(self.store, self.data_dir)
        self.async_creates = AsyncCreates()  # DWB-50: creates answered 202
        self.writer = BackgroundWriter(self.store, lambda: self.settings.writer_interval_s)
        self.writer.poke()
        #: Set by SandboxServer/run_server once the socket is bound; else derived from each request.
        self.base_url: str | None = None

    def apply_settings(self, cfg: SandboxConfig) -> None:
        self.settings = cfg
        self.clock.shift_s = cfg.clock_shift_s
        self.clock.leap_second = cfg.clock_leap_second
        self.writer.poke()

    def base(self, request: Request) -> str:
        if self.base_url:
            return self.base_url
        return str(request.base_url).rstrip("/")

    def fhir_base(self, request: Request) -> str:
        return self.base(request) + "/fhir"

    def close(self) -> None:
        self.writer.stop()
        self.bulk.shutdown()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def get_state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state
