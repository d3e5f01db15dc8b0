"""`imgsync doctor`: the preflight. The checks are imgsync.doctor's; this renders them and sets the exit code."""

from __future__ import annotations

import click

from imgsync.cli import App, cli, echo_json, pass_app


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@pass_app
def doctor(app: App, as_json: bool) -> None:
    """Check the setup before a first sync, or when something is wrong.

    Config, mirrors, folders, state dir, manifest schema, the gallery, the token and its scope, each
    library, clock skew and inotify limits: one line per finding, with what to do. Exit 0 when nothing
    blocks a sync (warnings included); otherwise the exit code the sync would end with, from the first
    blocking finding: 2 config or state dir, 3 gallery unreachable, 4 key refused or library not
    enabled, 5 quota, 6 a folder a sync would withhold deletes for, 8 manifest.
    """
    from imgsync.api import diagnose

    # Not through app.sync: a config that does not load is a finding, not an early exit.
    report = diagnose(app.config_path, state_dir=app.state_dir)
    if as_json:
        echo_json(report.as_json())
    else:
        for finding in report.findings:
            click.echo(finding.line())
        click.echo(report.summary())
    raise click.exceptions.Exit(report.exit_code)
