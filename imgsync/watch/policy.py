"""What the daemon does after a run: pure decisions, the daemon (daemon.py) only carries them out.

    after_run(report, young, told)  →  Verdict: requeue the work, pause the folder, hold the gallery,
                                       or finish it (which paths to look at again, what to log)
    gallery_backoff_base(error)     →  how long the first hold lasts for this kind of gallery error

No clock, no filesystem, no logging here (h11's way: decisions as data, effects at the edge); the
caller tells which rejected files are young (modified lately: maybe a copy still in progress).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from imgsync.errors import GalleryAuthError, GalleryError, GalleryQuotaError
from imgsync.report import Report

#: A rejected file modified less than this long ago may still be being written: it is looked at again.
YOUNG_S = 30.0

Action = Literal["requeue", "pause_folder", "hold_gallery", "finish"]


@dataclass(frozen=True)
class Verdict:
    action: Action
    #: pause_folder: why; hold_gallery: the error
    reason: str | None = None
    error: GalleryError | None = None
    #: finish: the paths to look at again (pending, failed, and young rejections), in that order
    retry: tuple[str, ...] = ()
    #: finish: the note the mirror's status carries (deletes withheld, and why)
    note: str | None = None
    #: finish: rejections to log as warnings now (path, reason), and the young ones to mention quietly
    tell: tuple[tuple[str, str], ...] = ()
    quiet: tuple[tuple[str, str], ...] = ()
    #: finish: failures to log (they are retried)
    failed: tuple[tuple[str, str], ...] = ()
    #: finish: whether the run did anything worth an INFO line
    changed: bool = False
    counts: Mapping[str, int] = field(default_factory=dict)


def after_run(report: Report, *, young: Collection[str], told: Mapping[str, str]) -> Verdict:
    """The daemon's next step after a run that returned `report`.

    interrupted (the daemon is stopping)      → requeue: the rest runs at the next start
    the folder could not be listed            → requeue and pause the folder until it is back
    the gallery stopped the run               → requeue and hold every call (backoff)
    otherwise                                 → finish: pending, failed and young rejected paths are
                                                retried; a rejection is told once per reason (`told`:
                                                path → reason already logged), a young one only quietly
    """
    if report.interrupted:
        return Verdict("requeue")
    if report.folder_problem:
        return Verdict("pause_folder", reason=report.folder_problem)
    if report.stopped is not None:
        return Verdict("hold_gallery", error=report.stopped)
    young_rejected = sorted(p for p, _ in report.rejected if p in young)
    retry = tuple([p for p, _ in report.pending] + [p for p, _ in report.failed] + young_rejected)
    news = [(p, why) for p, why in report.rejected if told.get(p) != why]
    counts = report.counts()
    changed = any(counts[k] for k in ("added", "updated", "deleted", "failed", "recovered")) or bool(news)
    return Verdict(
        "finish",
        retry=retry,
        note=report.withheld_reason,
        tell=tuple((p, why) for p, why in news if p not in young),
        quiet=tuple((p, why) for p, why in news if p in young),
        failed=tuple(report.failed),
        changed=changed,
        counts=counts,
    )


def gallery_backoff_base(error: GalleryError) -> float | None:
    """The first hold for a gallery error: quota and auth need time (a new day) or a human (a fixed key,
    then SIGHUP), so they are asked less often; None: the backoff's own start (transient errors)."""
    if isinstance(error, GalleryQuotaError):
        return 300.0
    if isinstance(error, GalleryAuthError):
        return 60.0
    return None


def is_young(mtime: float | None, now: float) -> bool:
    """Modified within YOUNG_S of `now` (None: the file is gone or unreadable)."""
    return mtime is not None and now - mtime < YOUNG_S
