"""`imgsync watch`: the background daemon (imgsync.api's watcher, run as a process by watch/process.py)."""

from __future__ import annotations

import click

from imgsync.cli import App, cli, pass_app
from imgsync.libraries import LIBRARIES


@cli.command()
@click.argument("targets", nargs=-1, metavar="[MIRROR|FOLDER]...")
@click.option("--library", type=click.Choice(sorted(LIBRARIES)), default=None,
              help="Library for a FOLDER no mirror has yet (default same_hq).")
@pass_app
def watch(app: App, targets: tuple[str, ...], library: str | None) -> None:
    """Keep each mirror (or the MIRRORs / FOLDERs named) in step as files change.

    Runs until SIGTERM / SIGINT (exit 0); SIGHUP reloads the config. A full reconcile runs at start,
    hourly and whenever the watcher may have missed events; in between only changed paths are looked
    at. One daemon per state dir (the same lock as reconcile). Under systemd (Type=notify) it reports
    READY / STATUS / WATCHDOG; `imgsync service install` writes the unit.
    """
    from imgsync.watch.notify import Notifier
    from imgsync.watch.process import configure_logging, serve

    sync = app.sync
    configure_logging()
    notifier = Notifier.from_environ()
    with sync.watcher(targets, library=library, notifier=notifier) as daemon:
        code = serve(daemon, notifier)
    notifier.close()
    raise click.exceptions.Exit(code)
