"""``make ui``: ``dagster dev`` (webserver + daemon + code server) over a state folder.

The folder holds ``ehrsync.env`` and so the vault key: ``--state`` must be new, empty, or an ehrsync state folder
already (``demo_setup.check_ui_state_dir``); any other folder is refused before anything is written or started.

It runs in its own process group; Ctrl-C, SIGTERM or SIGHUP (unless ignored, as ``nohup`` does) to us stops the whole
group (``process_group``), because killing only the parent leaves the webserver, daemon and code server running.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ehrsync.demo_setup import check_ui_state_dir, demo_environment, new_state_folder
from ehrsync.process_group import run_until_stopped


def run_ui(
    state_dir: Path,
    *,
    named_by: str = "--state",
    host: str = "127.0.0.1",
    port: int = 3000,
    stop_after_s: float | None = None,
) -> int:
    """Serve the UI until interrupted (or for ``stop_after_s`` seconds); returns the exit code. ``named_by``: the
    flag or variable that chose ``state_dir``, for a refusal to name it as the user did."""
    state_dir = state_dir.resolve()
    fresh = check_ui_state_dir(state_dir, named_by)  # its vault key goes only into a new, empty or ehrsync state folder
    _check_port(host, port)
    from ehrsync.dagster_instance import ui_command  # Dagster only once the folder and port are known good
    from engine.settings import PipelineSettings

    if fresh:
        new_state_folder(state_dir)
    env_values = demo_environment(state_dir)
    merged = {**env_values, **{k: v for k, v in os.environ.items() if k in env_values and v}}
    settings = PipelineSettings.from_env({**os.environ, **merged})  # DAGSTER_HOME, DATABASE_URL: the operator's
    if settings.database_url_variable is None and not (settings.state_dir / "app.db").exists():
        print(f"note: {state_dir} holds no demo state yet; run `make demo` first to see connections and runs")
    _migrate_app_database(settings.database_url)
    argv, env = ui_command(settings, host=host, port=port)
    env.update(merged)
    print(f"Dagster UI on http://{host}:{port} (state {state_dir}); Ctrl-C or SIGTERM stops it")
    return run_until_stopped(argv, env, stop_after_s=stop_after_s)


def _migrate_app_database(url: str) -> None:
    """Bring the app database to the latest revision before the daemon's sensors read it, as ``auth serve`` does:
    over a new folder they would otherwise fail every tick until someone ran ``ehrsync db migrate``."""
    from store import AppDatabase

    database = AppDatabase.from_url(url)
    try:
        database.migrate()
    finally:
        database.dispose()


def _check_port(host: str, port: int) -> None:
    """A busy port is one clear error before anything starts: ``dagster dev`` would log its webserver's bind
    failure and keep its daemon running, a UI nobody can open."""
    from connectors.errors import ConfigurationError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the webserver binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
