"""`imgsync service install`: write the systemd unit that runs `imgsync watch`, say how to enable it."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import click

from imgsync.cli import App, cli, pass_app


@cli.group()
def service() -> None:
    """Run `imgsync watch` as a systemd service."""


@service.command("install")
@click.argument("mirrors", nargs=-1, metavar="[MIRROR]...")
@click.option("--user/--system", "user", default=True, show_default=True,
              help="A user unit (~/.config/systemd/user) or a system unit (/etc/systemd/system, needs root).")
@click.option("--force", is_flag=True, help="Replace an existing unit with other content.")
@click.option("--print", "print_only", is_flag=True, help="Print the unit instead of writing it.")
@click.option("--environment-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A file of KEY=value lines for the service (e.g. IMGSYNC_SECRET_KEY; keep it chmod 600).")
@pass_app
def install(app: App, mirrors: tuple[str, ...], user: bool, force: bool, print_only: bool,
            environment_file: Path | None) -> None:
    """Write imgsync.service (watching every configured mirror, or the MIRRORs named) and print the
    commands that enable it. The unit runs this same imgsync with the same --config / --state-dir."""
    from imgsync.watch.service import render_unit, unit_path, write_unit

    for name in mirrors:
        app.config.mirror(name)  # an unknown name is a config error now, not a failing service later
    run_as = None if user else (os.environ.get("SUDO_USER") or getpass.getuser())
    text = render_unit(config=app.config_path or app.config.source, state_dir=app.state_dir, mirrors=mirrors,
                       environment_file=environment_file, run_as=run_as)
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
    click.echo("enable and start it with:")
    for line in target.commands():
        click.echo(f"  {line}")
