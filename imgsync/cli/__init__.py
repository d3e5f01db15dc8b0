"""The command line: a thin layer over the library.

Each command lives in its own module (gallery_cmd, search_cmd, ...), parses its options, calls
into imgsync and renders the result. Errors become exit codes in exactly one place,
`_Group.invoke` below (borg's way), so CliRunner tests see the same codes as users do.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from imgsync import __version__
from imgsync.errors import EXIT_CODES, ImgsyncError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ImgsyncError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()),
)
@click.version_option(__version__, prog_name="imgsync")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """Mirror image folders into an image-search gallery."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="imgsync")


# Importing a command module adds its commands to `cli`.
from imgsync.cli import gallery_cmd  # noqa: E402,F401
