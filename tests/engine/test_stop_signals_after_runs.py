"""After an in-process run, ``kill`` (SIGTERM) still does what it did before the run (``ehrsync/stop_signals.py``).

Dagster's ``execute_in_process`` leaves SIGTERM with SIGINT's handler when a run ends. A sync started in the
background (``ehrsync sync CONN &``: SIGINT ignored) then ignored SIGTERM for the rest of its life; in the
foreground SIGTERM raised ``KeyboardInterrupt``. Both through the production entry points, against the sandbox.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from dagster import DagsterInstance

from ehrsync.run_now import run_batch_now, run_sync_now
from tests.engine.helpers import SyncWorld, connect_patient
from tests.engine.job_runs import world_resources, world_settings


@contextmanager
def _dispositions(sigint: Any, sigterm: Any) -> Iterator[None]:
    """This process's SIGINT and SIGTERM as a shell would have started it; the test runner's own come back after."""
    before = signal.signal(signal.SIGINT, sigint), signal.signal(signal.SIGTERM, sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


@pytest.mark.parametrize(
    ("started", "sigint"),
    [("in the background (SIGINT ignored)", signal.SIG_IGN), ("in the foreground", signal.default_int_handler)],
)
def test_sigterm_is_left_as_it_was_after_a_sync_and_a_batch_run(
    start_sandbox: Callable[..., Any], world: SyncWorld, http: Any, started: str, sigint: Any
) -> None:
    sb = start_sandbox(patients=1)
    cid = connect_patient(world, sb, http=http)
    settings, resources = world_settings(world), world_resources(world)
    with _dispositions(sigint, signal.SIG_DFL), DagsterInstance.ephemeral() as instance:
        single = run_sync_now(cid, settings=settings, instance=instance, resources=resources)
        assert single.success
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, f"started {started}: SIGTERM changed by the run"
        batch = run_batch_now([cid], "generic", settings=settings, instance=instance, resources=resources)
        assert batch.success
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, f"started {started}: SIGTERM changed by the batch"
        assert signal.getsignal(signal.SIGINT) == sigint  # Dagster restores SIGINT itself
