"""``ehrsync demo`` and ``ehrsync ui``: everything on one machine over a state folder."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from ehrsync.commands.common import is_verbose

__all__ = ["demo", "ui"]

STATE_OPTION = click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/demo"),
    show_default=True,
    help="Folder holding the app database, landing zone, warehouse and Dagster home.",
)


@click.command()
@STATE_OPTION
@click.option("--patients", type=click.IntRange(1, 10_000), default=25, show_default=True, help="Sandbox size.")
@click.option("--connect", type=click.IntRange(1, 25), default=3, show_default=True, help="Patients who authorize.")
@click.option("--keep", is_flag=True, help="Keep the previous demo state instead of starting clean.")
@click.option(
    "--sandbox-port",
    type=click.IntRange(0, 65535),
    default=0,
    envvar="EHRSYNC_DEMO_SANDBOX_PORT",
    show_envvar=True,
    help="Port of the sandbox EHR (0: a free one).",
)
@click.option(
    "--auth-port",
    type=click.IntRange(0, 65535),
    default=0,
    envvar="EHRSYNC_DEMO_AUTH_PORT",
    show_envvar=True,
    help="Port of the auth service (0: a free one).",
)
@click.pass_context
def demo(
    ctx: click.Context, state_dir: Path, patients: int, connect: int, keep: bool, sandbox_port: int, auth_port: int
) -> None:
    """Sandbox EHR -> authorize -> sync -> Parquet -> DuckDB, then change records and sync incrementally."""
    from ehrsync.demo_setup import DemoError, check_state_dir
    from sandbox import SandboxError

    if connect > patients:  # the demo would connect fewer patients than it says and check the wrong count
        raise click.BadOptionUsage("connect", f"--connect {connect} is more than --patients {patients}")
    if not is_verbose(ctx):
        logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own progress; -v shows every log
    try:
        # run_demo's first check, here before its imports (the sandbox's app, Dagster): a mistyped --state is named
        check_state_dir(state_dir, deleting=not keep)
        from ehrsync.demo import run_demo

        code = run_demo(
            state_dir, patients=patients, connect=connect, keep=keep, sandbox_port=sandbox_port, auth_port=auth_port
        )
    except (DemoError, SandboxError) as exc:  # SandboxError: e.g. --sandbox-port is busy
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


@click.command()
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder holding the app database, landing zone, warehouse and Dagster home."
    "  [default: EHRSYNC_STATE_DIR (else EHRSYNC_HOME) when set, else var/demo]",
)
@click.option("--port", type=click.IntRange(0, 65535), default=3000, show_default=True)
def ui(state_dir: Path | None, port: int) -> None:
    """Start the Dagster UI (dagster dev) over a state folder; Ctrl-C or SIGTERM stops every process it started.

    The folder keeps ehrsync.env (the vault key): it must be new, empty, or an earlier demo's or ui's state folder.
    """
    from ehrsync.demo_setup import DemoError, ui_state_dir
    from ehrsync.ui import run_ui

    try:
        folder, named_by = ui_state_dir(state_dir, os.environ)
        code = run_ui(folder, named_by=named_by, port=port)
    except DemoError as exc:  # a --state folder it will not write its vault key into
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)
