"""The ``ehrsync`` command: the composition root that wires the packages together.

Imports are local to each command so ``ehrsync --help`` stays fast and a command only loads what it uses.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

T = TypeVar("T")


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:  # library chatter (plugin set-up, per-request lines) only with -v
        for noisy in ("alembic", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


class _OneLineErrors(click.Group):
    """Every failure of every command ends with one ``Error: ...`` line naming the problem, never a traceback.

    ``-v`` keeps the traceback of unexpected errors for debugging.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, KeyboardInterrupt):
            raise
        except Exception as exc:
            if ctx.params.get("verbose"):
                raise
            raise click.ClickException(_one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    """A single line naming the problem: typed ehrsync errors by code, anything else by type and message."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from auth_service.core.redaction import redact
    from connectors.errors import EhrSyncError

    if isinstance(exc, EhrSyncError):
        text = f"{exc.code}: {exc.message}"
    elif isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    elif isinstance(exc, DBAPIError):  # never the statement or its parameters (they may hold ciphertext)
        first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        text = f"app database error ({type(exc.orig).__name__}: {first}): check DATABASE_URL"
    elif isinstance(exc, SQLAlchemyError):
        text = f"app database error ({type(exc).__name__}): check DATABASE_URL"
    else:
        detail = str(exc) or "no details"
        text = f"{type(exc).__name__}: {detail} (run with -v for details)"
    return redact(" ".join(text.split()))[:1000]


@click.group(cls=_OneLineErrors)
@click.version_option(package_name="ehrsync")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """ehrsync keeps patient records flowing between EHRs and the people who use them."""
    _configure_logging(verbose)


# --- sandbox -------------------------------------------------------------------------------------------------


@main.group(invoke_without_command=True)
@click.option("--patients", type=click.IntRange(1, 10_000), default=25, show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8081, show_default=True, help="0 picks a free port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Plain HTTP: loopback addresses only.")
@click.option("--seed", type=int, default=7, show_default=True, help="Same seed, same patients.")
@click.option("--auto-approve", is_flag=True, help="Skip the consent page (headless use).")
@click.pass_context
def sandbox(ctx: click.Context, patients: int, port: int, host: str, seed: int, auto_approve: bool) -> None:
    """Run the local SMART on FHIR sandbox EHR (synthetic patients, no EHR account needed)."""
    if ctx.invoked_subcommand is not None:
        return
    from sandbox.cli import run_server

    run_server(patients=patients, port=port, seed=seed, host=host, auto_approve=auto_approve)


@sandbox.command("mutate")
@click.option("--url", default="http://127.0.0.1:8081", show_default=True, help="Sandbox base (or FHIR base) URL.")
@click.option("--create", type=click.IntRange(0), default=0, show_default=True)
@click.option("--update", type=click.IntRange(0), default=0, show_default=True)
@click.option("--delete", type=click.IntRange(0), default=0, show_default=True)
@click.option("--seed", type=int, default=None, help="Pick the same resources again.")
def sandbox_mutate(url: str, create: int, update: int, delete: int, seed: int | None) -> None:
    """Create, update and delete resources now, so an incremental sync has something to find."""
    import httpx

    from sandbox import SandboxAdminError
    from sandbox.cli import mutate

    try:
        changed = mutate(url, create=create, update=update, delete=delete, seed=seed)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the sandbox at {url}: {type(exc).__name__}") from exc
    except SandboxAdminError as exc:
        raise click.ClickException(f"the sandbox refused: {exc}") from exc
    click.echo(json.dumps(changed, indent=2))


# --- demo and UI ----------------------------------------------------------------------------------------------

STATE_OPTION = click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/demo"),
    show_default=True,
    help="Folder holding the app database, landing zone, warehouse and Dagster home.",
)


@main.command()
@STATE_OPTION
@click.option("--patients", type=click.IntRange(1, 10_000), default=25, show_default=True, help="Sandbox size.")
@click.option("--connect", type=click.IntRange(1, 25), default=3, show_default=True, help="Patients who authorize.")
@click.option("--keep", is_flag=True, help="Keep the previous demo state instead of starting clean.")
@click.pass_context
def demo(ctx: click.Context, state_dir: Path, patients: int, connect: int, keep: bool) -> None:
    """Sandbox EHR -> authorize -> sync -> Parquet -> DuckDB, then change records and sync incrementally."""
    from ehrsync.demo import DemoError, run_demo

    if not ctx.find_root().params.get("verbose"):
        logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own progress; -v shows every log
    try:
        code = run_demo(state_dir, patients=patients, connect=connect, keep=keep)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


@main.command()
@STATE_OPTION
@click.option("--port", type=click.IntRange(0, 65535), default=3000, show_default=True)
def ui(state_dir: Path, port: int) -> None:
    """Start the Dagster UI (dagster dev) over a state folder; Ctrl-C stops every process it started."""
    from ehrsync.ui import run_ui

    sys.exit(run_ui(state_dir, port=port))


# --- auth service ---------------------------------------------------------------------------------------------


@main.group()
def auth() -> None:
    """The SMART auth service (configuration from environment variables: see README)."""


@auth.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
def auth_serve(host: str, port: int) -> None:
    """Serve the auth service: SMART launches, the token vault's API, patient pages."""
    from auth_service.server import serve

    _exit_on_configuration_error(lambda: serve(host=host, port=port))


@auth.command("bootstrap")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id (created when missing).")
@click.option("--name", required=True, help="Display name of the tenant.")
def auth_bootstrap(tenant_id: str, name: str) -> None:
    """Create a tenant (if needed) and a new admin API key; the key is shown once."""
    from auth_service.bootstrap import bootstrap_admin

    result = _exit_on_configuration_error(lambda: bootstrap_admin(tenant_id, name))
    click.echo(f"tenant: {result.tenant_id}\napi key (shown once): {result.api_key}")


@auth.command("seed")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def auth_seed(path: Path) -> None:
    """Create or update tenants from a seed JSON file (practice_settings format)."""
    from auth_service.bootstrap import load_tenants_file

    ids = _exit_on_configuration_error(lambda: load_tenants_file(path))
    click.echo("\n".join(ids))


@main.group()
def keys() -> None:
    """Encryption keys of the token vault."""


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every token and secret with the active INTEGRATIONS_TOKEN_ENC_KEY.

    Keep the previous key in INTEGRATIONS_TOKEN_ENC_KEYS_OLD (``kid:base64``) until this finishes.
    """
    from store import AppDatabase, TokenCipher, rotate_keys

    def _rotate() -> int:
        cipher = TokenCipher.from_env()  # a bad key is named before any database work
        db = AppDatabase.from_url(_database_url())
        try:
            db.migrate()
            return rotate_keys(db, cipher)
        finally:
            db.dispose()

    count = _exit_on_configuration_error(_rotate)
    click.echo(f"re-encrypted {count} value(s) with the active key")


@main.group()
def db() -> None:
    """The app database (SQLite file by default, Postgres through DATABASE_URL)."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply every Alembic migration (idempotent)."""
    from store import AppDatabase

    database = AppDatabase.from_url(_database_url())
    try:
        database.migrate()
    finally:
        database.dispose()
    click.echo("app database is at the latest revision")


# --- pipelines ------------------------------------------------------------------------------------------------


@main.command()
@click.argument("connection_id")
@click.option("--full", is_flag=True, help="Full resync instead of incremental.")
def sync(connection_id: str, full: bool) -> None:
    """Sync one connection now (the same Dagster job the schedules run; visible in the UI)."""
    from engine.settings import PipelineSettings
    from store import TokenCipher

    # configuration first: a bad key or WAREHOUSE_URL is named before any run starts
    TokenCipher.from_env()
    _check_signing_key()
    settings = PipelineSettings.from_env()

    from ehrsync.run_now import run_sync_now

    result = _exit_on_configuration_error(lambda: run_sync_now(connection_id, full=full, settings=settings))
    for asset, metadata in sorted(result.materializations.items()):
        fetched = metadata.get("fetched", metadata.get("resources_fetched", ""))
        click.echo(f"{asset:<40} {fetched}")
    if not result.success:
        raise click.ClickException(f"run {result.run_id} failed steps: {', '.join(result.failed_steps)}")
    click.echo(f"run {result.run_id} succeeded")


@main.group()
def connections() -> None:
    """Connections in the app database."""


@connections.command("list")
def connections_list() -> None:
    """Every connection with its status and last sync (no tokens)."""
    from engine.connection_snapshots import read_connections
    from store import AppDatabase

    database = AppDatabase.from_url(_database_url())
    try:
        rows = _exit_on_configuration_error(lambda: read_connections(database))
    finally:
        database.dispose()
    for row in rows:
        click.echo(
            f"{row.id}  tenant={row.tenant_id}  provider={row.provider_id}  kind={row.kind}  "
            f"status={row.status}  last_sync={row.last_sync_at or '-'}"
        )


def _check_signing_key() -> None:
    """``EHR_JWT_PRIVATE_KEY`` (PEM text or a path), when set, must load before a run signs with it."""
    import os

    from auth_service.core.keys import load_private_key
    from connectors.errors import ConfigurationError

    value = os.environ.get("EHR_JWT_PRIVATE_KEY", "").strip()
    if not value:
        return
    try:
        load_private_key(value)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _database_url() -> str:
    import os

    return os.environ.get("DATABASE_URL") or os.environ.get("EHRSYNC_DATABASE_URL") or "sqlite:///var/demo/app.db"


def _exit_on_configuration_error(action: Callable[[], T]) -> T:
    """Run ``action``; a configuration problem ends the command with its message, never a traceback."""
    from connectors.errors import EhrSyncError

    try:
        return action()
    except EhrSyncError as exc:
        raise click.ClickException(_one_line(exc)) from None


if __name__ == "__main__":
    main()
