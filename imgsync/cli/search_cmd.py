"""`imgsync search IMAGE_OR_URL`: ask the gallery which entries look like an image."""

from __future__ import annotations

import click

from imgsync.cli import App, cli, echo_json, pass_app
from imgsync.libraries import LIBRARIES, MAX_RESULTS
from imgsync.query import parse_tags


@cli.command()
@click.argument("target", metavar="IMAGE_OR_URL")
@click.option(
    "--library",
    type=click.Choice(list(LIBRARIES)),
    default=None,
    help="Library to search (default: the one all mirrors use, else same_hq).",
)
@click.option("--tags", default=None, metavar="T1[,T2]", help="Only entries with these tags (1..65535, at most 2).")
@click.option(
    "--tag-logic",
    type=click.Choice(["and", "or"]),
    default="and",
    show_default=True,
    help="With two tags: entries having both (and) or either (or).",
)
@click.option(
    "--top", type=click.IntRange(1, MAX_RESULTS), default=10, show_default=True, help="How many results to show."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {score, cont_sign, brief, paths}.")
@pass_app
def search(
    app: App, target: str, library: str | None, tags: str | None, tag_logic: str, top: int, as_json: bool
) -> None:
    """Find the gallery's entries most like IMAGE_OR_URL (a file, or an http(s) URL the gallery fetches).
    A query in a format the gallery does not take (WebP, GIF, TIFF) or too large is converted first."""
    from imgsync.render import hits_json, hits_table

    hits = app.sync.search(
        target,
        library=library,
        tags=parse_tags(tags),
        tag_logic=tag_logic,
        top=top,
        on_note=lambda note: click.echo(f"note: {target}: {note}", err=True),
    )
    if as_json:
        echo_json(hits_json(hits))
    elif hits:
        click.echo("\n".join(hits_table(hits)))
    else:
        click.echo(f"no matches in {library or app.sync.default_library()}", err=True)
