"""Text for people: plans and reports as the command line prints them."""

from __future__ import annotations

import json

from imgsync.execute import Report
from imgsync.plan import Plan


def _brief_path(brief: str) -> str:
    try:
        value = json.loads(brief)
    except ValueError:
        return brief
    return str(value.get("path", brief)) if isinstance(value, dict) else brief


def plan_lines(plan: Plan, report: Report | None = None) -> list[str]:
    """`+ path` add, `~ path` update, `- path` delete, `! path: reason` rejected, `? path: reason` pending."""
    lines = [f"+ {a.path}" + (f"  (+{len(a.paths) - 1} identical)" if len(a.paths) > 1 else "") for a in plan.adds]
    for u in plan.updates:
        was = _brief_path(u.entry.brief)
        lines.append(f"~ {u.path}" + (f"  (was {was})" if was != u.path else "  (labels)"))
    lines += [f"~ {r.add.path}  (labels cleared: deleted and added again)" for r in plan.readds]
    lines += [f"- {_brief_path(d.entry.brief)}" for d in plan.deletes]
    lines += [f"! {r.path}: {r.reason}" for r in plan.rejects]
    lines += [f"? {p}: {why}" for p, why in plan.pending]
    if plan.withheld_reason:
        lines.append(f"deletes refused ({len(plan.withheld)}): {plan.withheld_reason}")
    return lines


def describe_plan(plan: Plan) -> str:
    return (f"{len(plan.adds)} to add, {len(plan.updates) + len(plan.readds)} to update, {len(plan.deletes)} to delete, "
            f"{len(plan.rejects)} rejected")


def render_report(report: Report) -> str:
    c = report.counts()
    head = (f"{report.mirror}: {c['added']} added, {c['updated']} updated, {c['deleted']} deleted"
            + (f", {c['recovered']} recovered" if c["recovered"] else "")
            + (f", {c['rejected']} rejected" if c["rejected"] else "")
            + (f", {c['failed']} failed" if c["failed"] else "")
            + (f", {c['pending']} pending" if c["pending"] else ""))
    lines = [head]
    lines += [f"  ! {p}: {why}" for p, why in report.rejected]
    lines += [f"  x {p}: {why}" for p, why in report.failed]
    lines += [f"  ? {p}: {why}" for p, why in report.pending]
    if report.withheld_reason:
        lines.append(f"  deletes refused ({report.withheld}): {report.withheld_reason}")
    elif report.folder_problem:
        lines.append(f"  {report.folder_problem}; nothing done")
    if report.stopped is not None:
        lines.append(f"  stopped: {report.stopped} (what was done is kept; the rest is retried next run)")
    return "\n".join(lines)
