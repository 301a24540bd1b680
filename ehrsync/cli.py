"""The ``ehrsync`` command: the composition root that wires the packages together.

Each area's commands live in ``ehrsync.commands``; their imports are local to each command so ``ehrsync --help``
stays fast and a command only loads what it uses.
"""

from __future__ import annotations

import logging
import sys
import warnings

import click

from ehrsync.commands.common import one_line
from ehrsync.commands.local import demo, ui
from ehrsync.commands.purge import purge
from ehrsync.commands.runs import connections, reconcile, sync
from ehrsync.commands.sandbox import sandbox
from ehrsync.commands.service import auth, db, keys


def _configure_logging(verbose: bool) -> None:
    """This command's levels, set both ways: an earlier command in the same process (tests run several) may have
    left them quiet, and ``basicConfig`` only acts once (it adds the one stderr handler)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.INFO)
    # httpcore's DEBUG trace prints every answer's headers (a redirect's signed Location, a Set-Cookie): never shown
    logging.getLogger("httpcore").setLevel(logging.INFO)
    for noisy in ("alembic", "httpx"):  # library chatter (plugin set-up, per-request lines) only with -v
        logging.getLogger(noisy).setLevel(logging.NOTSET if verbose else logging.WARNING)
    if verbose:  # also for clients ehrsync did not build (an EhrClient installs it itself)
        from connectors.transport.request_lines import install_queryless_request_lines

        install_queryless_request_lines()


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
            raise click.ClickException(one_line(exc)) from None


@click.group(cls=_OneLineErrors)
@click.version_option(package_name="ehrsync")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """ehrsync keeps patient records flowing between EHRs and the people who use them."""
    _configure_logging(verbose)
    if not verbose:  # Dagster's notices about its own beta/preview APIs are for us, not for the person at the terminal
        warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")  # without importing Dagster


for _command in (sandbox, demo, ui, auth, keys, db, sync, reconcile, connections, purge):
    main.add_command(_command)


if __name__ == "__main__":
    main()
