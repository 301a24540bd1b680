"""``ehrsync sandbox``: the local SMART on FHIR EHR, and changes to its records for incremental syncs."""

from __future__ import annotations

import json

import click

__all__ = ["sandbox"]


@click.group(invoke_without_command=True)
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
    from sandbox import SandboxError
    from sandbox.cli import run_server

    try:
        run_server(patients=patients, port=port, seed=seed, host=host, auto_approve=auto_approve)
    except SandboxError as exc:  # a host it may not bind, a busy port: the message names it
        raise click.ClickException(str(exc)) from None


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
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise click.ClickException(f"cannot reach the sandbox at {url}: {type(exc).__name__}") from exc
    except SandboxAdminError as exc:
        raise click.ClickException(f"the sandbox refused: {exc}") from exc
    click.echo(json.dumps(changed, indent=2))
