"""``ehrsync auth``, ``ehrsync keys`` and ``ehrsync db``: the auth service, the token vault and the app database."""

from __future__ import annotations

from pathlib import Path

import click

from ehrsync.commands.common import app_database, exit_on_configuration_error

__all__ = ["auth", "db", "keys"]


@click.group()
def auth() -> None:
    """The SMART auth service (configuration from environment variables: see README)."""


@auth.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
def auth_serve(host: str, port: int) -> None:
    """Serve the auth service: SMART launches, the token vault's API, patient pages."""
    from auth_service.server import serve

    exit_on_configuration_error(lambda: serve(host=host, port=port))


@auth.command("bootstrap")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id (created when missing).")
@click.option("--name", required=True, help="Display name of the tenant.")
def auth_bootstrap(tenant_id: str, name: str) -> None:
    """Create a tenant (if needed) and a new admin API key; the key is shown once."""
    from auth_service.bootstrap import bootstrap_admin

    result = exit_on_configuration_error(lambda: bootstrap_admin(tenant_id, name))
    click.echo(f"tenant: {result.tenant_id}\napi key (shown once): {result.api_key}")
    for problem in result.setting_problems:  # kept as stored; named (never the value) where the service uses it
        click.echo(f"warning: tenant {result.tenant_id}: {problem}; fix it with ehrsync auth seed", err=True)


@auth.command("seed")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def auth_seed(path: Path) -> None:
    """Create or update tenants from a seed JSON file (practice_settings format)."""
    from auth_service.bootstrap import load_tenants_file

    ids = exit_on_configuration_error(lambda: load_tenants_file(path))
    click.echo("\n".join(ids))


@auth.command("brands")
@click.option("--tenant", "tenant_id", required=True, help="Tenant whose connect page lists these brands.")
@click.option("--source", required=True, help="Name of this directory; loading the same name again replaces it.")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def auth_brands(tenant_id: str, source: str, path: Path) -> None:
    """Load a SMART User-access Brands bundle (JSON file) into a tenant's connect-page directory."""
    from auth_service.bootstrap import load_brands_file

    count = exit_on_configuration_error(lambda: load_brands_file(tenant_id, source, path))
    click.echo(f"loaded {count} brand(s) into directory {source!r} of tenant {tenant_id}")


@click.group()
def keys() -> None:
    """Encryption keys of the token vault."""


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every token and secret with the active INTEGRATIONS_TOKEN_ENC_KEY.

    Keep the previous key in INTEGRATIONS_TOKEN_ENC_KEYS_OLD (``kid:base64``) until this finishes.
    """
    from store import rotate_keys
    from store.crypto import ENV_OLD_KEYS, VaultKeys

    def _rotate() -> tuple[int, tuple[str, ...]]:
        vault_keys = VaultKeys.from_env()  # a bad key is named before any database work
        with app_database() as database:
            database.migrate()
            return rotate_keys(database, vault_keys.cipher()), vault_keys.placeholder_kids

    count, placeholders = exit_on_configuration_error(_rotate)
    click.echo(f"re-encrypted {count} value(s) with the active key")
    for kid in placeholders:  # the pipelines never warn of one, and the operator is here now (key id only)
        click.echo(
            f"reminder: {ENV_OLD_KEYS} still lists a placeholder key (every byte the same; key id {kid}), which "
            "anyone can seal with: this rotation re-sealed every stored value under the active key, so remove it "
            "once nothing is sealed under it (no process still runs with it as its active key), then restart",
            err=True,
        )


@click.group()
def db() -> None:
    """The app database (SQLite file by default, Postgres through DATABASE_URL)."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply every Alembic migration (idempotent)."""
    with app_database() as database:
        database.migrate()
    click.echo("app database is at the latest revision")
