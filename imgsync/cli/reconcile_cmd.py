"""`imgsync reconcile`: bring each mirror's gallery library in step with its folder, once."""

from __future__ import annotations

import sys
from typing import Any

import click

from imgsync.cli import App, cli, echo_json, pass_app
from imgsync.libraries import LIBRARIES


@cli.command()
@click.argument("targets", nargs=-1, metavar="[MIRROR|FOLDER]...")
@click.option("--dry-run", is_flag=True, help="Print the plan (+ add, ~ update, - delete, ! rejected); change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--force", is_flag=True, help="Let the deletes a safety guard withheld go ahead (once).")
@click.option(
    "--rebind",
    is_flag=True,
    help="The config points at another gallery than the manifest's entries live in: forget those "
    "entries and add every image to the configured gallery.",
)
@click.option(
    "--library",
    type=click.Choice(sorted(LIBRARIES)),
    default=None,
    help="Library for a FOLDER no mirror has yet (default same_hq), or a new one for a remembered mirror.",
)
@pass_app
def reconcile(
    app: App, targets: tuple[str, ...], dry_run: bool, as_json: bool, force: bool, rebind: bool, library: str | None
) -> None:
    """Mirror each mirror (or the MIRRORs / FOLDERs named) into its gallery library.

    A FOLDER no mirror has yet is mirrored with the defaults and remembered in the state dir, so later
    `reconcile`, `watch` and `status` include it. Only what changed since the last run costs API calls;
    nothing changed means no call at all.
    """
    from imgsync.render import dry_run_lines, render_report, result_json

    output = _Output(app, quiet=as_json)
    try:
        result = app.sync.reconcile(
            targets, dry_run=dry_run, force=force, rebind=rebind, library=library, events=output.event
        )
    finally:
        output.close()
    if as_json:
        echo_json(result_json(result))
    elif not app.quiet:
        for run in result.runs:
            click.echo("\n".join(dry_run_lines(run)) if dry_run else render_report(run.report))
    raise click.exceptions.Exit(result.exit_code)


class _Output:
    """The run's events as lines on stderr and a progress bar (on a terminal, not with --json or -q)."""

    def __init__(self, app: App, *, quiet: bool) -> None:
        self.app = app
        self.bar_allowed = not (quiet or app.quiet) and sys.stderr.isatty()
        self.bar: Any = None
        self.bar_of: str | None = None

    def event(self, event: object) -> None:
        from imgsync.api import Dropped, Forgot, Planned, Progress, Remembered, Started, Waiting

        if isinstance(event, Remembered):
            m = event.mirror
            self._say(
                f"{m.name}: mirroring {m.folder} into {m.library}; remembered as mirror {m.name!r} in "
                f"{event.where} (`imgsync reconcile`, `watch`, `status` and `service install` include it)"
            )
        elif isinstance(event, Dropped):
            self._say(f"{event.mirror.name}: no longer remembered (its folder is gone; removed from {event.where})")
        elif isinstance(event, Waiting):
            self._say(
                f"{event.mirror}: waiting up to {event.limit_s:g} s for {event.files} file(s) still being written"
            )
        elif isinstance(event, Forgot):
            if event.dry_run:
                self._say(
                    f"--rebind would forget {event.entries} entries of the previous gallery and add every image "
                    "to the configured one"
                )
            else:
                self._say(
                    f"forgot {event.entries} entries of the previous gallery; adding every image to the configured one"
                )
        elif isinstance(event, Started):
            # Adds sent while the scan still runs: the bar grows with them until the plan gives the rest.
            if self.bar is not None and self.bar_of == event.mirror:
                self.bar.length = event.adds
            else:
                self._open(event.mirror, event.adds)
        elif isinstance(event, Planned):
            total = event.early + event.plan.calls
            if self.bar is not None and self.bar_of == event.mirror and event.early:
                self.bar.length = total
            else:
                self._open(event.mirror, total)
        elif isinstance(event, Progress) and self.bar is not None:
            self.bar.update(event.done)

    def _say(self, line: str) -> None:
        """A line of its own, also while a bar is drawn (early adds open it before the settle wait's
        line): the bar's line is ended first, and the bar drawn again below."""
        if self.bar is None:
            self.app.say(line)
            return
        click.echo(err=True)
        self.app.say(line)
        self.bar.render_progress()

    def _open(self, mirror: str, length: int) -> None:
        self.close()
        if self.bar_allowed and length:
            self.bar = click.progressbar(length=length, label=mirror, file=sys.stderr)
            self.bar.__enter__()
            self.bar_of = mirror

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
