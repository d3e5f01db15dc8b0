"""The command line: a thin layer over the library.

Each command lives in its own module (gallery_cmd, search_cmd, ...), parses its options, calls
into imgsync and renders the result. Errors become exit codes in exactly one place,
`_Group.invoke` below (borg's way), so CliRunner tests see the same codes as users do.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from imgsync import __version__
from imgsync.config import Config
from imgsync.errors import DISK_FULL_ERRNOS, EXIT_CODES, ImgsyncError, disk_full

if TYPE_CHECKING:
    from imgsync.api import Imgsync


# A command's module is imported when that command runs (or --help lists them all): `imgsync reconcile`
# does not pay for the other six.
_COMMANDS = {
    "doctor": "doctor_cmd",
    "gallery": "gallery_cmd",
    "reconcile": "reconcile_cmd",
    "search": "search_cmd",
    "service": "service_cmd",
    "status": "status_cmd",
    "ui": "ui_cmd",
    "watch": "watch_cmd",
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(_COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _COMMANDS:
            import importlib

            importlib.import_module(f"imgsync.cli.{_COMMANDS[cmd_name]}")  # its decorators register it on `cli`
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ImgsyncError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)
        except OSError as e:
            if e.errno not in DISK_FULL_ERRNOS:
                raise
            # A write the code did not expect to fail (each known one converts it itself): still one line.
            error = disk_full(os.path.dirname(e.filename) if e.filename else _state_dir_of(ctx))
            click.echo(f"Error: {error}", err=True)
            ctx.exit(error.exit_code)


def _state_dir_of(ctx: click.Context) -> str:
    app = ctx.find_object(App)
    try:
        return str(app.config.state_dir) if app is not None else "the state dir"
    except ImgsyncError:
        return "the state dir"


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()),
)
@click.version_option(__version__, prog_name="imgsync")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Config file (default: $IMGSYNC_CONFIG, else the user config dir's imgsync/config.toml).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Manifest, lock and embedded gallery data (default: $IMGSYNC_STATE_DIR, config, user state dir).",
)
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr (for scripts; the exit code tells the rest).")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, state_dir: Path | None, verbose: int, quiet: bool) -> None:
    """Mirror image folders into an image-search gallery."""
    # -v: imgsync's own INFO lines; -vv: DEBUG, and the libraries' INFO (alembic, faiss, ...) too.
    logging.basicConfig(
        level=logging.INFO if verbose >= 2 else logging.ERROR if quiet else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # faiss's loader says at INFO that it "could not load library with AVX2 support" (ModuleNotFoundError):
    # faiss-cpu ships one library that picks AVX2 itself at run time (get_compile_options: "DD AVX2"), so
    # that line only alarms whoever reads -vv.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if verbose:
        logging.getLogger("imgsync").setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    else:
        # The embedded gallery speaks through the client's errors (one line, the right exit code): its own
        # server-side warnings would say the same thing twice. `gallery serve` turns them back on.
        logging.getLogger("imgsync.localgallery").setLevel(logging.ERROR)
    ctx.obj = App(config_path, state_dir, quiet=quiet)


class App:
    """What every command needs, loaded on first use (so `--help` works with a broken config): the
    library API (imgsync.api.Imgsync) opened on the global options."""

    def __init__(self, config_path: Path | None, state_dir: Path | None, *, quiet: bool = False) -> None:
        self.config_path = config_path
        self.state_dir = state_dir
        self.quiet = quiet
        self._sync: Imgsync | None = None

    @property
    def sync(self) -> Imgsync:
        if self._sync is None:
            from imgsync.api import Imgsync

            self._sync = Imgsync.open(self.config_path, state_dir=self.state_dir)
        return self._sync

    @property
    def config(self) -> Config:
        return self.sync.config

    def say(self, message: str) -> None:
        """An informational line on stderr (not with -q)."""
        if not self.quiet:
            click.echo(message, err=True)


pass_app = click.make_pass_decorator(App)


def echo_json(value: Any) -> None:
    """Print `value` as JSON for scripts: valid UTF-8 always. A file name that is not valid UTF-8 (its
    bytes held as lone surrogates) is written as \\uDCxx escapes, which json.loads turns back into the
    same str, and os.fsencode into the file's exact bytes."""
    from imgsync.brief import escape_surrogates

    click.echo(escape_surrogates(json.dumps(value, ensure_ascii=False, indent=2)))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="imgsync")
