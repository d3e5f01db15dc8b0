"""`imgsync watch`: the background daemon (imgsync.api's watcher, run as a process by watch/process.py),
with the web console beside it on request."""

from __future__ import annotations

import logging
from typing import Any

import click

from imgsync.cli import App, cli, pass_app
from imgsync.libraries import LIBRARIES

log = logging.getLogger("imgsync.watch")


@cli.command()
@click.argument("targets", nargs=-1, metavar="[MIRROR|FOLDER]...")
@click.option(
    "--library",
    type=click.Choice(sorted(LIBRARIES)),
    default=None,
    help="Library for a FOLDER no mirror has yet (default same_hq).",
)
@click.option(
    "--ui",
    "ui",
    is_flag=True,
    help="Also serve the web console (as `imgsync ui`; its URL with the token goes to the log); its "
    '"Sync now" asks this daemon for a full sync.',
)
@click.option(
    "--ui-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="The console's port (default: 8809 or the next free one; 0: any free port).",
)
@click.option("--ui-host", default="127.0.0.1", show_default=True, help="The console's address.")
@pass_app
def watch(app: App, targets: tuple[str, ...], library: str | None, ui: bool, ui_port: int | None, ui_host: str) -> None:
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
        console = _start_console(app, daemon, ui_host, ui_port) if ui else None
        try:
            code = serve(daemon, notifier)
        finally:
            if console is not None:
                console.stop()
    notifier.close()
    raise click.exceptions.Exit(code)


def _start_console(app: App, daemon: Any, host: str, port: int | None) -> Any:
    """The web console beside the daemon (imgsync.console): same state dir, "Sync now" asks the daemon."""
    from imgsync.api import Imgsync
    from imgsync.console.server import exposure_warning, start_console

    def opener() -> Imgsync:
        return Imgsync.open(app.config_path, state_dir=app.state_dir)

    running = start_console(
        opener, app.sync.state_dir, host=host, port=port, request_full_scan=daemon.request_full_scan
    )
    note = exposure_warning(host)
    if note:
        log.warning("%s", note)
    log.info("web console: %s", running.login_url)
    return running
