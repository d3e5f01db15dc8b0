"""Text and JSON for people and scripts: what the API returns, as the command line prints it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from imgsync.report import MirrorRun, Report

if TYPE_CHECKING:
    from imgsync.plan import Plan
    from imgsync.report import Hit, Status, SyncResult


#: Control characters (C0, DEL, C1) as escapes: a file name may hold any of them, and printed raw a newline
#: splits one problem over two lines and an escape sequence recolours the terminal (or, piped, click drops
#: it and the name shown is not the file's). --json keeps the exact name.
_CONTROL = str.maketrans(
    {c: {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}.get(c, f"\\x{c:02x}") for c in [*range(0x20), *range(0x7F, 0xA0)]}
)


def shown(text: object) -> str:
    """`text` (a path, a reason) for a line of human output: control characters escaped (bad\\nname.jpg)."""
    return str(text).translate(_CONTROL)


def _brief_path(brief: str) -> str:
    try:
        value = json.loads(brief)
    except ValueError:
        return brief
    return str(value.get("path", brief)) if isinstance(value, dict) else brief


# --------------------------------------------------------------------------- reconcile


def plan_lines(plan: Plan, report: Report | None = None) -> list[str]:
    """`+ path` add, `~ path` update, `- path` delete, `! path: reason` rejected, `? path: reason` pending."""
    lines = [
        f"+ {shown(a.path)}" + (f"  (+{len(a.paths) - 1} identical)" if len(a.paths) > 1 else "") for a in plan.adds
    ]
    for u in plan.updates:
        was = _brief_path(u.entry.brief)
        lines.append(f"~ {shown(u.path)}" + (f"  (was {shown(was)})" if was != u.path else "  (labels)"))
    lines += [f"~ {shown(r.add.path)}  (labels cleared: deleted and added again)" for r in plan.readds]
    lines += [f"- {shown(_brief_path(d.entry.brief))}" for d in plan.deletes]
    lines += [f"! {shown(r.path)}: {shown(r.reason)}" for r in plan.rejects]
    lines += [f"? {shown(p)}: {shown(why)}" for p, why in plan.pending]
    if plan.withheld_reason:
        lines.append(f"deletes refused ({len(plan.withheld)}): {plan.withheld_reason}")
    return lines


def describe_plan(plan: Plan) -> str:
    return (
        f"{len(plan.adds)} to add, {len(plan.updates) + len(plan.readds)} to update, "
        f"{len(plan.deletes)} to delete, {len(plan.rejects)} rejected"
    )


def dry_run_lines(run: MirrorRun) -> list[str]:
    if run.report.folder_problem:
        return [f"{run.mirror.name}: {run.report.folder_problem}"]
    assert run.plan is not None
    done = f"{run.mirror.name}: {describe_plan(run.plan)} (dry run: nothing changed)"
    return plan_lines(run.plan, run.report) + [done]


def render_report(report: Report) -> str:
    c = report.counts()
    head = (
        f"{report.mirror}: {c['added']} added, {c['updated']} updated, {c['deleted']} deleted"
        + (f", {c['recovered']} recovered" if c["recovered"] else "")
        + (f", {c['rejected']} rejected" if c["rejected"] else "")
        + (f", {c['failed']} failed" if c["failed"] else "")
        + (f", {c['pending']} pending" if c["pending"] else "")
    )
    lines = [head]
    # Files rejected in an earlier run and unchanged since are counted, and named only with --json or in
    # `imgsync status`: every run naming the same bad files again would bury what is new.
    new_rejections = [(p, why) for p, why in report.rejected if p not in report.unchanged_problems]
    lines += [f"  ! {shown(p)}: {shown(why)}" for p, why in new_rejections]
    old = len(report.rejected) - len(new_rejections)
    if old:
        lines.append(f"  ! {old} file(s) rejected as before (unchanged since; `imgsync status` names them)")
    lines += [f"  x {shown(p)}: {shown(why)}" for p, why in report.failed]
    lines += [f"  ? {shown(p)}: {shown(why)}" for p, why in report.pending]
    if report.withheld_reason:
        lines.append(f"  deletes refused ({report.withheld}): {report.withheld_reason}")
    elif report.folder_problem:
        lines.append(f"  {report.folder_problem}; nothing done")
    elif report.folder_removed:
        lines.append(f"  folder {report.folder_removed} removed (--force): the entries that came from it are deleted")
    if report.stopped is not None:
        lines.append(f"  stopped: {report.stopped} (what was done is kept; the rest is retried next run)")
    return "\n".join(lines)


def result_json(result: SyncResult) -> list[dict[str, Any]]:
    return [_run_json(run, result.dry_run) for run in result.runs]


def _run_json(run: MirrorRun, dry_run: bool) -> dict[str, Any]:
    r = run.report
    out: dict[str, Any] = {
        "mirror": run.mirror.name,
        "folder": str(run.mirror.folder),
        "library": run.mirror.library,
        "dry_run": dry_run,
    }
    if r.folder_problem:
        out["folder_problem"] = r.folder_problem
    if r.folder_removed:
        out["folder_removed"] = True  # --force took the missing folder as removed on purpose
    plan = run.plan
    if dry_run and plan is not None:
        out["plan"] = {
            "add": [a.path for a in plan.adds],
            "update": [u.path for u in plan.updates] + [x.add.path for x in plan.readds],
            "delete": [d.entry.brief for d in plan.deletes],
            "rejected": [{"path": x.path, "reason": x.reason} for x in plan.rejects],
            "pending": [{"path": p, "reason": why} for p, why in plan.pending],
        }
    else:
        out["counts"] = r.counts()
        out["rejected"] = [{"path": p, "reason": why, "new": p not in r.unchanged_problems} for p, why in r.rejected]
        out["failed"] = [{"path": p, "reason": why} for p, why in r.failed]
        out["pending"] = [{"path": p, "reason": why} for p, why in r.pending]
        if r.stopped is not None:
            out["stopped"] = str(r.stopped)
    reason = r.withheld_reason or (plan.withheld_reason if plan else None)
    if reason:
        out["deletes_refused"] = reason
    return out


# --------------------------------------------------------------------------- search


def hits_table(hits: Sequence[Hit]) -> list[str]:
    """# score cont_sign file: one row per hit, best first; an entry no mirror here added (another tool,
    another machine) shows its brief instead of a file."""
    width = max((len(h.cont_sign) for h in hits), default=9)
    last = "file" if any(h.paths for h in hits) else "brief"
    lines = [f"{'#':>3}  {'score':>6}  {'cont_sign':<{width}}  {last}"]
    for rank, h in enumerate(hits, 1):
        first, *more = [shown(p) for p in h.paths] or [shown(h.brief)]
        lines.append(f"{rank:>3}  {h.score:6.4f}  {h.cont_sign:<{width}}  {first}")
        lines += [f"{'':>3}  {'':>6}  {'':<{width}}  {p}" for p in more]
    return lines


def hits_json(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    return [
        {"score": h.score, "cont_sign": h.cont_sign, "brief": h.brief, "paths": [str(p) for p in h.paths]} for h in hits
    ]


# --------------------------------------------------------------------------- status


def status_json(status: Status) -> dict[str, Any]:
    mirrors = []
    for m in status.mirrors:
        last = None
        if m.last_run is not None:
            last = {
                "id": m.last_run.id,
                "mirror": m.last_run.mirror,
                "status": m.last_run.status,
                "started_at": m.last_run.started_at.isoformat(),
                "finished_at": m.last_run.finished_at.isoformat() if m.last_run.finished_at else None,
                "counts": dict(m.last_run.counts),
                "error": m.last_run.error,
            }
        mirrors.append(
            {
                "mirror": m.name,
                "folder": str(m.folder) if m.folder else None,
                "library": m.library,
                "remembered": m.remembered,
                "counts": dict(m.counts),
                "last_run": last,
                "rejected": [{"path": p, "reason": why} for p, why in m.rejected],
                "pending": [{"path": p, "reason": why} for p, why in m.pending],
            }
        )
    return {"state_dir": str(status.state_dir), "mirrors": mirrors, "daemon": status.daemon}


def status_lines(status: Status, *, limit: int | None) -> list[str]:
    lines = [f"state dir: {status.state_dir}", *daemon_lines(status.daemon)]
    if not status.mirrors:
        lines.append("no mirrors yet: run `imgsync reconcile FOLDER` (it is remembered) or configure [[mirror]]")
    for m in status.mirrors:
        c = m.counts
        where = (
            f" ({shown(m.folder)}{', remembered' if m.remembered else ''})" if m.folder else " (no longer configured)"
        )
        lines.append(
            f"{m.name}{where}: {c.get('synced', 0)} synced, {c.get('pending', 0)} pending, "
            f"{c.get('rejected', 0)} rejected, {c.get('error', 0)} unreadable"
        )
        last = m.last_run
        if last:
            when = (last.finished_at or last.started_at).strftime("%Y-%m-%d %H:%M:%S")
            lines.append(f"  last run: {last.status} at {when} UTC" + (f": {last.error}" if last.error else ""))
        lines += [f"  ! {shown(p)}: {shown(why)}" for p, why in m.rejected]
        lines += [f"  ? {shown(p)}: {shown(why)}" for p, why in m.pending]
        more = c.get("rejected", 0) + c.get("pending", 0) + c.get("error", 0) - len(m.rejected) - len(m.pending)
        if limit is not None and more > 0 and (len(m.rejected) >= limit or len(m.pending) >= limit):
            lines.append("  … more: `imgsync status --all` lists every file")
    return lines


def daemon_lines(d: dict[str, Any] | None) -> list[str]:
    """What `imgsync watch` last said about itself (statusfile.read_status checked that it is alive)."""
    if d is None:
        return ["daemon: not running (imgsync watch was never started on this state dir)"]
    if not d.get("running"):
        why = "it did not stop cleanly (killed or crashed)" if d.get("stale") else "stopped"
        lines = [f"daemon: not running ({why}; last seen {d.get('updated_at', '?')})"]
    else:
        lines = [f"daemon: running since {d.get('started_at')} (pid {d.get('pid')}), {d.get('queue', 0)} queued"]
        gallery = d.get("gallery")
        if gallery:
            lines.append(f"  gallery paused: {gallery.get('paused')} (retry in {gallery.get('retry_in_s')} s)")
        for name, m in (d.get("mirrors") or {}).items():
            state = f"paused: {m['paused']}" if m.get("paused") else m.get("mode", "?")
            lines.append(f"  {name}: {state}, {m.get('queue', 0)} queued" + (f"; {m['note']}" if m.get("note") else ""))
    if d.get("last_error"):
        lines.append(f"  last error ({d.get('last_error_at', '?')}): {d['last_error']}")
    if d.get("error"):
        lines.append(f"  {d['error']}")
    return lines
