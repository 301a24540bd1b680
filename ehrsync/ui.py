"""``make ui``: ``dagster dev`` (webserver + daemon + code server) over a state folder.

It runs in its own process group; Ctrl-C (or SIGTERM to us) sends SIGINT to the whole group and waits, because
killing only the parent leaves the webserver, daemon and code server running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from ehrsync.demo import demo_environment


def run_ui(state_dir: Path, *, host: str = "127.0.0.1", port: int = 3000, stop_after_s: float | None = None) -> int:
    """Serve the UI until interrupted (or for ``stop_after_s`` seconds); returns the exit code."""
    from ehrsync.dagster_instance import ui_command
    from engine.settings import PipelineSettings

    state_dir = state_dir.resolve()
    env_values = demo_environment(state_dir)
    merged = {**env_values, **{k: v for k, v in os.environ.items() if k in env_values and v}}
    settings = PipelineSettings.from_env({**os.environ, **merged})  # DAGSTER_HOME, DATABASE_URL: the operator's
    if settings.database_url_variable is None and not (settings.state_dir / "app.db").exists():
        print(f"note: {state_dir} holds no demo state yet; run `make demo` first to see connections and runs")
    argv, env = ui_command(settings, host=host, port=port)
    env.update(merged)
    print(f"Dagster UI on http://{host}:{port} (state {state_dir}); Ctrl-C stops it")
    proc = subprocess.Popen(argv, env=env, start_new_session=True)

    def _forward(signum: int, _frame: object) -> None:
        os.killpg(proc.pid, signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, _forward)
    try:
        proc.wait(timeout=stop_after_s)
    except subprocess.TimeoutExpired:
        pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_process_group(proc)
    return 0


def stop_process_group(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGINT the group and wait; escalate to SIGKILL only if it does not stop in time."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + timeout_s
    while _group_alive(proc.pid):  # children (webserver, daemon, code server) finish shutting down
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
