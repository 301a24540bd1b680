"""The ``ehrsync`` command: the composition root that wires the packages together."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="ehrsync")
def main() -> None:
    """ehrsync keeps patient records flowing between EHRs and the people who use them."""
