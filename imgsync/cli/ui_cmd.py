"""`imgsync ui`: the web console (imgsync.console), served until Ctrl-C."""

from __future__ import annotations

import click

from imgsync.cli import App, cli, pass_app


@cli.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port to listen on (default: 8809, or the next free one of the nine after it; 0: any free port).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback serves your pictures to the network (a warning says so).",
)
@click.option("--no-browser", is_flag=True, help="Only print the URL; do not open a browser.")
@pass_app
def ui(app: App, port: int | None, host: str, no_browser: bool) -> None:
    """Serve the web console: the mirrors, their pending and rejected files, search by image, the gallery's
    entries, and "Sync now". Prints its URL with an access token (needed once per browser).

    The console reads what `imgsync status` reads and runs the same reconcile, under the same lock: while
    `imgsync watch` runs, "Sync now" is refused with why (`imgsync watch --ui` serves a console that asks
    the daemon instead).
    """
    from imgsync.api import Imgsync
    from imgsync.console.server import serve_forever

    sync = app.sync  # a config that does not load is exit 2 here, before anything is served

    def opener() -> Imgsync:
        return Imgsync.open(app.config_path, state_dir=app.state_dir)

    serve_forever(
        opener,
        sync.state_dir,
        host=host,
        port=port,
        browser=not no_browser,
        echo=lambda line: click.echo(line),
        warn=lambda line: click.echo(line, err=True),
    )
