"""`imgsync service install`: write the systemd unit that runs `imgsync watch`, say how to enable it."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import click

from imgsync.cli import App, cli, pass_app
from imgsync.errors import UsageError


@cli.group()
def service() -> None:
    """Run `imgsync watch` as a systemd service."""


@service.command("install")
@click.argument("mirrors", nargs=-1, metavar="[MIRROR]...")
@click.option(
    "--user/--system",
    "user",
    default=True,
    show_default=True,
    help="A user unit (~/.config/systemd/user) or a system unit (/etc/systemd/system, needs root).",
)
@click.option("--force", is_flag=True, help="Replace an existing unit with other content.")
@click.option("--print", "print_only", is_flag=True, help="Print the unit instead of writing it.")
@click.option(
    "--environment-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A file of KEY=value lines for the service (e.g. IMGSYNC_SECRET_KEY; keep it chmod 600).",
)
@pass_app
def install(
    app: App, mirrors: tuple[str, ...], user: bool, force: bool, print_only: bool, environment_file: Path | None
) -> None:
    """Write imgsync.service (watching every configured mirror, or the MIRRORs named) and print the
    commands that enable it. The unit runs this same imgsync with the same --config / --state-dir."""
    from imgsync.watch.service import render_unit, unit_path, write_unit

    sync = app.sync
    for name in mirrors:
        sync.config.mirror(name)  # an unknown name is a config error now, not a failing service later
    if not sync.mirrors:
        raise UsageError(
            "no mirror to watch: run `imgsync reconcile FOLDER` once (the folder is remembered) or "
            "add a [[mirror]] to the config, then install the service"
        )
    run_as = None if user else (os.environ.get("SUDO_USER") or getpass.getuser())
    # The state dir goes into the unit whenever it did not come from the config file (the option, or
    # IMGSYNC_STATE_DIR, which the service's environment would not have).
    text = render_unit(
        config=sync.config_path,
        state_dir=sync.state_dir if sync.state_dir_given else None,
        mirrors=mirrors,
        environment_file=environment_file,
        run_as=run_as,
    )
    if print_only:
        click.echo(text, nl=False)
        return
    target = unit_path(user)
    try:
        written = write_unit(target, text, force=force)
    except OSError as e:
        hint = " (a system unit needs root: sudo, or use --user)" if not user else ""
        raise click.ClickException(f"cannot write {target.path}: {e.strerror}{hint}") from None
    if not written:
        raise click.ClickException(f"{target.path} exists with other content; --force replaces it")
    click.echo(f"wrote {target.path}")
    watched = [m for m in sync.mirrors if not mirrors or m.name in mirrors]
    click.echo(
        "it watches: "
        + ", ".join(f"{m.name} ({m.folder})" for m in watched)
        + ("; a mirror added later is watched after `systemctl --user reload imgsync`" if user else "")
    )
    click.echo("enable and start it with:")
    for line in target.commands():
        click.echo(f"  {line}")
