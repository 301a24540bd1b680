"""``ehrsync purge CONNECTION``: remove a disconnected connection's synced data (``engine.purge``), audited."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ehrsync.commands.common import app_database, exit_on_configuration_error, one_line

if TYPE_CHECKING:
    from connectors.transport import BodyBounds
    from engine.purge import PurgeReport, PurgeSubject
    from store import AppDatabase

__all__ = ["purge"]

#: How long ``--disconnect`` waits for a free call of a vendor's shared call budget (eCW) before deleting the tokens
#: without revoking them (and saying so): an operator at a terminal, not a browser, but not a background job either.
#: ``--budget-wait`` sets another (a script that would rather not wait, or an operator who would rather wait longer).
DISCONNECT_BUDGET_WAIT_S = 60.0


_UNSET = (click.core.ParameterSource.DEFAULT, None)


class _Seconds(click.FloatRange):
    """0-3600 s; "nan" too is refused here (every comparison with NaN is false, so ``FloatRange`` let it through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if math.isnan(seconds):
            self.fail(f"{value!r} is not a number of seconds.", param, ctx)
        return seconds


@click.command()
@click.argument("connection_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--disconnect",
    is_flag=True,
    help="Disconnect the connection first if it is not (revokes its tokens at the EHR), then purge.",
)
@click.option(
    "--budget-wait",
    type=_Seconds(0.0, 3600.0),
    default=DISCONNECT_BUDGET_WAIT_S,
    show_default=True,
    metavar="SECONDS",
    help="With --disconnect: how long to wait for a free call of a vendor's call budget shared with the syncs "
    "(eClinicalWorks) before deleting the tokens without revoking them at the EHR (and saying so).",
)
def purge(connection_id: str, yes: bool, disconnect: bool, budget_wait: float) -> None:
    """Remove everything synced for CONNECTION_ID: landing files, warehouse rows (the analyst views follow at once),
    attachments only it references, and its sync state. The connection row, its run history and the audit trail
    stay. Only a disconnected connection is purged (an active one would be filled again by its next sync): pass
    --disconnect to disconnect it first. Safe to run again after an interruption. See docs/RETENTION.md.
    """
    if not disconnect and click.get_current_context().get_parameter_source("budget_wait") not in _UNSET:
        raise click.UsageError("--budget-wait applies only with --disconnect (the wait before revoking at the EHR)")
    from engine.purge import PurgeTargets, purge_connection
    from engine.settings import PipelineSettings
    from store.models import ConnectionStatus

    settings = exit_on_configuration_error(PipelineSettings.from_env)
    with app_database(existing=True, url=settings.database_url) as db:  # the settings read once
        subject = exit_on_configuration_error(lambda: _subject(db, connection_id))
        active = subject.status != ConnectionStatus.DISCONNECTED
        if active and not disconnect:
            raise click.ClickException(
                f"connection {connection_id} is {subject.status}: only a disconnected connection is purged (its next "
                "sync would fill it again); pass --disconnect to disconnect it first"
            )
        if not yes:
            click.confirm(
                f"Purge all synced data of connection {subject.id} (tenant {subject.tenant_id}, {subject.provider_id}"
                f" {subject.kind}, {subject.status}{', disconnecting it first' if active else ''})? "
                "This cannot be undone",
                abort=True,
            )
        if active:
            bounds = settings.limits.request_bounds()
            exit_on_configuration_error(lambda: _disconnect(db, connection_id, bounds, budget_wait))
        wait = settings.limits.lock_wait_s
        duckdb = settings.limits.duckdb
        targets = PurgeTargets.at(db, settings.state_dir, settings.warehouse_url, lock_wait_s=wait, duckdb=duckdb)
        report = _purge_after(active, connection_id, lambda: purge_connection(targets, connection_id, actor="cli"))
    counts = report.counts()
    click.echo(f"purged connection {connection_id}:")
    for name, value in counts.items():
        click.echo(f"  {name:<18} {value}")
    click.echo("The analyst views already reflect it, and so does the analyst snapshot (older generations deleted).")


def _purge_after(disconnected: bool, connection_id: str, action: Callable[[], PurgeReport]) -> PurgeReport:
    """Run the purge; when this run disconnected the connection first, a failure says so (the line printed before
    says what became of its tokens) and that a plain purge now finishes it."""
    if not disconnected:
        return exit_on_configuration_error(action)
    from connectors.errors import EhrSyncError

    try:
        return action()
    except EhrSyncError as exc:
        raise click.ClickException(
            f"{one_line(exc)}; connection {connection_id} was disconnected first and stays disconnected (see the "
            f"line above): run 'ehrsync purge {connection_id}' again to purge it, no --disconnect needed"
        ) from None


def _disconnect(db: AppDatabase, connection_id: str, bounds: BodyBounds, budget_wait_s: float) -> None:
    """Revoke at the EHR where it offers revocation (SAL-34), delete the tokens, mark the connection disconnected.
    The discovery and revocation calls keep to the request bounds the settings read and spend the vendor's shared
    call budget (eCW) like every other caller; the line printed says whether the tokens were revoked, and why not."""
    import httpx

    from connectors.transport import BoundedClient
    from store import TokenCipher, TokenVault
    from store.models import Connection
    from store.rate_windows import vendor_call_budget

    with db.session() as session:
        conn = session.get(Connection, connection_id)
        provider_id, fhir_base = (conn.provider_id, conn.fhir_base) if conn is not None else ("", "")
    with BoundedClient(bounds=bounds, timeout=httpx.Timeout(30.0, connect=10.0)) as http:
        vault = TokenVault(db, TokenCipher.from_env(), http)
        try:
            with vendor_call_budget(db, provider_id, fhir_base, max_wait_s=budget_wait_s):
                revocation = vault.disconnect(connection_id)
        finally:
            vault.close()
    click.echo(f"disconnected {connection_id}: {revocation.describe()}")


def _subject(db: AppDatabase, connection_id: str) -> PurgeSubject:
    """The connection to purge; a database that cannot be read says why as ``connections list`` does (never
    migrated: run ``ehrsync db migrate`` first) instead of "no such table: connections"."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from engine.connection_snapshots import unreadable_database_error
    from engine.purge import purge_subject

    try:
        return purge_subject(db, connection_id)
    except (OperationalError, ProgrammingError) as exc:
        raise unreadable_database_error(db, exc) from exc
