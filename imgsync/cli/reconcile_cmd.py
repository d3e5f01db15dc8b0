"""`imgsync reconcile`: bring each mirror's gallery library in step with its folder, once."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import click

from imgsync.cli import App, cli, echo_json, pass_app
from imgsync.config import Config, MirrorConfig, adhoc_mirror
from imgsync.errors import DeletesRefusedError, ImgsyncError
from imgsync.libraries import LIBRARIES

# The pipeline (scan, Pillow, SQLAlchemy) is imported inside the commands: `imgsync --help` stays light.
if TYPE_CHECKING:
    from imgsync.execute import Report
    from imgsync.pipeline import MirrorRun
    from imgsync.plan import Plan


@cli.command()
@click.argument("targets", nargs=-1, metavar="[MIRROR|FOLDER]...")
@click.option("--dry-run", is_flag=True, help="Print the plan (+ add, ~ update, - delete, ! rejected); change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--force", is_flag=True, help="Allow deletes that the max_delete or empty/moved-folder guards refuse.")
@click.option("--rebind", is_flag=True,
              help="The config points at another gallery than the manifest's entries live in: forget those "
                   "entries and add every image to the configured gallery.")
@click.option("--library", type=click.Choice(sorted(LIBRARIES)), default="same_hq", show_default=True,
              help="Library for a FOLDER given on the command line (configured mirrors name their own).")
@pass_app
def reconcile(app: App, targets: tuple[str, ...], dry_run: bool, as_json: bool, force: bool, rebind: bool,
              library: str) -> None:
    """Mirror each configured mirror (or the MIRRORs / FOLDERs named) into its gallery library.

    A FOLDER that no mirror names is mirrored with defaults into LIBRARY (zero config). Only what
    changed since the last run costs API calls; nothing changed means no call at all.
    """
    config = app.config
    mirrors = _targets(config, targets, library)
    if not mirrors:
        raise click.UsageError("no mirror configured: name a FOLDER, or add a [[mirror]] to the config")
    runs = _dry_run(app, mirrors, force) if dry_run else _run(app, mirrors, force, as_json, rebind)
    if as_json:
        echo_json([_json_run(r, dry_run) for r in runs])
    elif not dry_run:
        from imgsync.render import render_report

        for run in runs:
            click.echo(render_report(run.report))
    raise click.exceptions.Exit(_exit_code(runs, dry_run))


def _targets(config: Config, targets: tuple[str, ...], library: str) -> list[MirrorConfig]:
    from imgsync.pipeline import select_mirrors

    names = {m.name for m in config.mirrors}
    chosen: list[MirrorConfig] = []
    mirror_names = []
    for t in targets:
        if t in names:
            mirror_names.append(t)
            continue
        path = Path(t).expanduser()
        by_folder = [m for m in config.mirrors if m.folder.expanduser().resolve() == path.resolve()]
        if not by_folder and not path.is_dir():
            # A typo must not become a mirror that `status` shows forever: nothing is recorded.
            what = "not a directory" if path.exists() else "neither a configured mirror nor an existing folder"
            raise click.UsageError(f"{t!r} is {what}")
        chosen += by_folder or [adhoc_mirror(path, library=library)]
    chosen += select_mirrors(config.mirrors, mirror_names) if mirror_names else []
    return chosen if targets else list(config.mirrors)


def _dry_run(app: App, mirrors: list[MirrorConfig], force: bool) -> list[MirrorRun]:
    """Plan only: no lock, no gallery, and no manifest is created or written."""
    from imgsync.execute import Report
    from imgsync.manifest import Store
    from imgsync.pipeline import MirrorRun, plan_mirror
    from imgsync.render import describe_plan, plan_lines

    runs = []
    path = app.manifest_path()
    with ExitStack() as stack:
        store = stack.enter_context(Store.open(path)) if path.exists() else None
        for mirror in mirrors:
            report = Report(mirror.name)
            planned = plan_mirror(mirror, store, force=force, report=report)
            runs.append(MirrorRun(mirror, planned.plan, report))
            if report.folder_problem:
                click.echo(f"{mirror.name}: {report.folder_problem}", err=True)
            for line in plan_lines(planned.plan, report):
                click.echo(line)
            click.echo(f"{mirror.name}: {describe_plan(planned.plan)} (dry run: nothing changed)", err=True)
    return runs


def _run(app: App, mirrors: list[MirrorConfig], force: bool, quiet: bool, rebind: bool = False) -> list[MirrorRun]:
    from imgsync.gallery.embedded import check_gallery, gallery_identity, open_gallery
    from imgsync.manifest import StateLock, Store
    from imgsync.pipeline import bind_gallery, sweep_unreferenced_spool

    config = app.config
    check_gallery(config)  # a gallery that cannot be opened is refused before the state dir is written
    runs: list[MirrorRun] = []
    with ExitStack() as stack:
        stack.enter_context(StateLock(config.state_dir))
        store = stack.enter_context(Store.open(app.manifest_path()))
        gallery = stack.enter_context(open_gallery(config))
        forgot = bind_gallery(store, gallery_identity(config), rebind=rebind)
        if forgot and not quiet:
            click.echo(f"forgot {forgot} entries of the previous gallery; adding every image to the configured one",
                       err=True)
        spool_dir = config.state_dir / "spool"
        for mirror in mirrors:
            run = _run_one(mirror, store, gallery, spool_dir, force, quiet)
            runs.append(run)
            if run.report.stopped is not None:
                break  # quota, auth or an unreachable gallery would fail the other mirrors too
        sweep_unreferenced_spool(store, spool_dir)
    return runs


def _run_one(mirror: MirrorConfig, store, gallery, spool_dir: Path, force: bool, quiet: bool) -> MirrorRun:
    from imgsync.pipeline import SettleWait, reconcile_mirror

    def waiting(n: int, limit_s: float) -> None:
        if not quiet:
            click.echo(f"{mirror.name}: waiting up to {limit_s:g} s for {n} file(s) still being written", err=True)

    bar = None
    show_bar = not quiet and sys.stderr.isatty()

    def planned(plan: Plan) -> None:
        nonlocal bar
        if show_bar and plan.calls:
            bar = click.progressbar(length=plan.calls, label=mirror.name, file=sys.stderr)
            bar.__enter__()

    def progress(n: int) -> None:
        if bar is not None:
            bar.update(n)

    try:
        return reconcile_mirror(mirror, store, gallery, spool_dir=spool_dir, force=force,
                                on_planned=planned, on_progress=progress, settle=SettleWait(on_wait=waiting))
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def _exit_code(runs: list[MirrorRun], dry_run: bool) -> int:
    for run in runs:
        if run.report.stopped is not None:
            return run.report.stopped.exit_code
    if any(r.report.folder_problem or r.report.withheld_reason or (r.plan and r.plan.withheld_reason)
           for r in runs):
        return DeletesRefusedError.exit_code
    # A file still being written (pending) means the library is not yet the folder: not 0. A dry run
    # does not wait for such files, so only its rejections count.
    if any(r.report.failed or r.report.rejected or (r.report.pending and not dry_run) or (r.plan and r.plan.rejects)
           for r in runs):
        return ImgsyncError.exit_code
    return 0


def _json_run(run: MirrorRun, dry_run: bool) -> dict:
    r: Report = run.report
    out: dict = {"mirror": run.mirror.name, "folder": str(run.mirror.folder), "library": run.mirror.library,
                 "dry_run": dry_run}
    if r.folder_problem:
        out["folder_problem"] = r.folder_problem
    plan = run.plan
    if dry_run and plan is not None:
        out["plan"] = {
            "add": [a.path for a in plan.adds],
            "update": [u.path for u in plan.updates] + [r.add.path for r in plan.readds],
            "delete": [d.entry.brief for d in plan.deletes],
            "rejected": [{"path": x.path, "reason": x.reason} for x in plan.rejects],
            "pending": [{"path": p, "reason": why} for p, why in plan.pending],
        }
    else:
        out["counts"] = r.counts()
        out["rejected"] = [{"path": p, "reason": why} for p, why in r.rejected]
        out["failed"] = [{"path": p, "reason": why} for p, why in r.failed]
        out["pending"] = [{"path": p, "reason": why} for p, why in r.pending]
        if r.stopped is not None:
            out["stopped"] = str(r.stopped)
    reason = r.withheld_reason or (plan.withheld_reason if plan else None)
    if reason:
        out["deletes_refused"] = reason
    return out
