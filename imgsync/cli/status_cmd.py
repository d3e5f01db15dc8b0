"""`imgsync status`: what each mirror holds, what is pending or rejected, and how the last run ended."""

from __future__ import annotations

import click

from imgsync.cli import App, cli, echo_json, pass_app


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON (every pending and rejected file).")
@click.option("--all", "show_all", is_flag=True, help="List every pending and rejected file (default: the first 20).")
@pass_app
def status(app: App, as_json: bool, show_all: bool) -> None:
    """Per mirror: synced / pending / rejected counts (rejected files with reasons) and the last run;
    whether `imgsync watch` is running on this state dir, since when, its queue and its last error."""
    from imgsync.render import status_json, status_lines

    limit = None if as_json or show_all else 20
    result = app.sync.status(limit=limit)
    if as_json:
        echo_json(status_json(result))
    else:
        click.echo("\n".join(status_lines(result, limit=limit)))
