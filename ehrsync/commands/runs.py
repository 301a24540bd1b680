"""``ehrsync sync``, ``ehrsync reconcile`` and ``ehrsync connections``: run the pipelines' jobs now, list what runs.

The jobs run in this process on the same Dagster instance the UI reads, so each run shows up there too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from ehrsync.commands.common import (
    app_database,
    check_signing_key,
    exit_on_configuration_error,
    is_verbose,
    one_line,
)

if TYPE_CHECKING:
    from engine.settings import PipelineSettings

__all__ = ["connections", "reconcile", "sync"]

VERBOSE_OPTION = click.option(
    "-v", "--verbose", "verbose_flag", is_flag=True, help="Also show Dagster's own log (every event, DEBUG)."
)


def _quiet_unless(verbose: bool) -> str | None:
    """The Dagster console level for a run: its own log only with ``--verbose``; this command prints the rest."""
    if verbose:
        return None
    logging.getLogger().setLevel(logging.WARNING)  # the engine's INFO lines too: the progress lines say it
    return "CRITICAL"


def _run_settings() -> PipelineSettings:
    """Configuration first: a bad vault key, signing key or WAREHOUSE_URL is named before any run starts. The
    settings are read once, for the signing key and the run."""
    from engine.settings import PipelineSettings
    from settings import load_app_settings
    from store import TokenCipher

    TokenCipher.from_env()
    app = load_app_settings()
    check_signing_key(app)
    return PipelineSettings.from_app(app, from_process=True)


def _refuse_before_dagster(settings: PipelineSettings, connection_id: str, *, reconcile: bool) -> None:
    """An unknown or unsyncable connection is named (the same ``Error:`` line the run would give) before Dagster
    and the pipelines are loaded: seconds of CPU for a typo otherwise. So is a Bulk connection whose tenant has not
    turned Bulk export on (the run would fail on it before any request, its reason lost in the table's note)."""
    from engine.bulk_switch import bulk_refusal
    from engine.connection_snapshots import reconcilable_connection, syncable_connection

    with app_database(existing=True, url=settings.database_url) as database:
        conn = exit_on_configuration_error(
            lambda: (reconcilable_connection if reconcile else syncable_connection)(database, connection_id)
        )
        if conn.is_bulk and (refusal := bulk_refusal(database, conn.id, conn.tenant_id or None)) is not None:
            raise click.ClickException(one_line(refusal))


@click.command()
@click.argument("connection_id")
@click.option("--full", is_flag=True, help="Full resync instead of incremental.")
@VERBOSE_OPTION
@click.pass_context
def sync(ctx: click.Context, connection_id: str, full: bool, verbose_flag: bool) -> None:
    """Sync one connection now (the same Dagster job the schedules run; visible in the UI).

    Prints a line per resource type as it finishes, then a table: fetched, created, updated, unchanged and
    quarantined per type, why a type was skipped or failed, the totals, and the run's id and status. Then the
    analyst views are refreshed (the ``analyst_views`` job; on DuckDB a new read-only snapshot for analysts).
    """
    settings = _run_settings()
    _refuse_before_dagster(settings, connection_id, reconcile=False)
    from ehrsync.progress import SyncProgress, summary_lines, type_rows
    from ehrsync.run_now import run_sync_now

    level = _quiet_unless(verbose_flag or is_verbose(ctx))
    progress = SyncProgress(click.echo)
    result = exit_on_configuration_error(
        lambda: run_sync_now(connection_id, full=full, settings=settings, console_log_level=level, on_event=progress)
    )
    rows = type_rows(result.materializations, result.step_errors)
    click.echo("")
    for line in summary_lines(
        rows, run_id=result.run_id, job_name=result.job_name, success=result.success, failed_steps=result.failed_steps
    ):
        click.echo(line)
    if not result.success:
        raise click.ClickException(f"run {result.run_id} failed steps: {', '.join(result.failed_steps)}")
    _refresh_analyst_views(settings, level)


def _refresh_analyst_views(settings: PipelineSettings, level: str | None) -> None:
    """After a sync, the analyst views (and on DuckDB their snapshot), by the ``analyst_views`` job in-process."""
    from ehrsync.run_analyst import run_analyst_views_now

    analyst = run_analyst_views_now(settings=settings, console_log_level=level)
    if not analyst.success:
        raise click.ClickException(f"analyst views not refreshed (run {analyst.run_id}): {analyst.error}")
    where = f"; snapshot {analyst.current}" if analyst.current else " (live in PostgreSQL)"
    click.echo(f"analyst views: {len(analyst.tables)} refreshed{where}")


@click.command()
@click.argument("connection_id")
@VERBOSE_OPTION
@click.pass_context
def reconcile(ctx: click.Context, connection_id: str, verbose_flag: bool) -> None:
    """Tombstone the rows of one patient connection whose resources the EHR no longer has (BDX-31).

    The same job the weekly schedule runs, now; Bulk connections learn deletions from their exports instead.
    """
    settings = _run_settings()
    _refuse_before_dagster(settings, connection_id, reconcile=True)
    from ehrsync.run_now import run_reconcile_now

    level = _quiet_unless(verbose_flag or is_verbose(ctx))
    result = exit_on_configuration_error(
        lambda: run_reconcile_now(connection_id, settings=settings, console_log_level=level)
    )
    click.echo(f"reconciled {connection_id}: {result.tombstoned} row(s) tombstoned")
    for resource_type, why in sorted(result.unconfirmable.items()):  # rows kept live, every run until it changes
        click.echo(f"  {resource_type}: deletions not confirmed, rows kept live: {why}")


@click.group()
def connections() -> None:
    """Connections in the app database."""


@connections.command("list")
def connections_list() -> None:
    """Every connection with its status and last sync (no tokens); one that never syncs by design says why."""
    from engine.connection_snapshots import NO_PATIENT, read_connections

    with app_database(existing=True) as database:
        rows = exit_on_configuration_error(lambda: read_connections(database))
    if not rows:  # said on stderr, so a script reading stdout still gets an empty list
        made_by = "the auth service makes them: a patient's sign-in, an admin's backend connection"
        click.echo(f"no connections yet ({made_by})", err=True)
    for row in rows:
        never = f"  sync=never ({NO_PATIENT}: notes only)" if row.patientless else ""
        click.echo(
            f"{row.id}  tenant={row.tenant_id}  provider={row.provider_id}  kind={row.kind}  "
            f"status={row.status}  last_sync={row.last_sync_at or '-'}{never}"
        )
