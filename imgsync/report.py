"""What the API reports: a mirror's run (Report, counted by the executor), a reconcile's result and the
exit code it means (SyncResult), the events of a run, search hits, status. Plain data, no I/O: rendered
by the CLI (render.py) and the console, returned to Python users by imgsync.api."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgsync.config import MirrorConfig
from imgsync.errors import DeletesRefusedError, GalleryError, ImgsyncError
from imgsync.manifest.records import RunInfo

if TYPE_CHECKING:
    from imgsync.plan import Plan


@dataclass
class Report:
    mirror: str
    added: list[str] = field(default_factory=list)  # primary paths
    updated: list[str] = field(default_factory=list)
    remapped: int = 0
    deleted: int = 0
    recovered: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): retried next run
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): retried when the file changes
    pending: list[tuple[str, str]] = field(default_factory=list)
    withheld: int = 0
    withheld_reason: str | None = None
    #: the folder could not be listed (missing, not a directory, unreadable): nothing was done from it
    folder_problem: str | None = None
    #: the folder is missing and --force said it was removed on purpose: what came from it is deleted
    folder_removed: Path | None = None
    stopped: GalleryError | None = None  # the error that ended the run early, if any
    interrupted: bool = False  # the caller asked to stop (should_stop) before the plan was done
    #: paths rejected or unreadable in an earlier run and unchanged since: reported, but they do not make
    #: the exit non-zero (new ones do)
    unchanged_problems: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not (
            self.failed
            or self.rejected
            or self.pending
            or self.stopped
            or self.withheld_reason
            or self.folder_problem
            or self.interrupted
        )

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "remapped": self.remapped,
            "deleted": self.deleted,
            "recovered": self.recovered,
            "failed": len(self.failed),
            "rejected": len(self.rejected),
            "pending": len(self.pending),
            "withheld": self.withheld,
        }


@dataclass
class MirrorRun:
    """One mirror's run: its plan (None when no plan was made: a no-op run, or a gallery that failed
    during recovery) and what was done."""

    mirror: MirrorConfig
    plan: Plan | None
    report: Report


@dataclass(frozen=True)
class Remembered:
    """A folder was mirrored for the first time without a config: it is now a remembered mirror."""

    mirror: MirrorConfig
    where: Path


@dataclass(frozen=True)
class Dropped:
    """A remembered mirror's folder was removed on purpose (--force) and its entries are deleted: the
    mirror is no longer remembered (naming the folder again brings it back)."""

    mirror: MirrorConfig
    where: Path


@dataclass(frozen=True)
class Waiting:
    """A one-shot run waits (at most limit_s) for files that were saved moments ago."""

    mirror: str
    files: int
    limit_s: float


@dataclass(frozen=True)
class Started:
    """`adds` adds so far were started while the folder was still being scanned (each new file that no
    entry holds is sent at once); each reports Progress when it ends, before Planned gives the rest."""

    mirror: str
    adds: int


@dataclass(frozen=True)
class Planned:
    """The mirror's plan, made once the scan ended; `early` adds were started before it (see Started)."""

    mirror: str
    plan: Plan
    early: int = 0


@dataclass(frozen=True)
class Progress:
    """`done` more remote actions of the mirror's plan are finished (their outcome recorded)."""

    mirror: str
    done: int


@dataclass(frozen=True)
class Forgot:
    """--rebind forgot the entries of the gallery the state dir was bound to (dry_run: would forget)."""

    entries: int
    dry_run: bool = False


Event = Remembered | Dropped | Waiting | Started | Planned | Progress | Forgot
Events = Callable[[Event], None]


@dataclass
class SyncResult:
    """What `reconcile` did to each mirror, and the exit code that means."""

    runs: list[MirrorRun]
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        """The documented codes (README "Exit codes"): a gallery error that stopped a run decides; then a
        guard that withheld deletes or a folder that could not be listed (6); then files rejected, failed
        or still being written (1). Files rejected in an earlier run and unchanged since are reported but
        do not count: a folder that always holds a few bad files still syncs with exit 0 (a file that
        cannot be read counts every time: it may be a valid image the library lacks)."""
        for run in self.runs:
            if run.report.stopped is not None:
                return run.report.stopped.exit_code
        if any(
            r.report.folder_problem or r.report.withheld_reason or (r.plan and r.plan.withheld_reason)
            for r in self.runs
        ):
            return DeletesRefusedError.exit_code
        for run in self.runs:
            r = run.report
            if r.failed or any(p not in r.unchanged_problems for p, _ in r.rejected):
                return ImgsyncError.exit_code
            # A dry run does not wait for young files: only what a real run would still leave pending counts.
            if not self.dry_run and any(p not in r.unchanged_problems for p, _ in r.pending):
                return ImgsyncError.exit_code
            if run.plan is not None and any(x.path not in r.unchanged_problems for x in run.plan.rejects):
                return ImgsyncError.exit_code
        return 0


@dataclass(frozen=True)
class Hit:
    """A search result and the local files its entry stands for (from the manifest; none for an entry
    no mirror here added)."""

    score: float
    cont_sign: str
    brief: str
    paths: tuple[Path, ...] = ()


@dataclass(frozen=True)
class MirrorStatus:
    name: str
    folder: Path | None  # None: known to the manifest only (no longer configured)
    library: str | None
    remembered: bool
    counts: Mapping[str, int]
    last_run: RunInfo | None
    #: (path, reason), a page of them (see Imgsync.files for more)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    pending: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Status:
    state_dir: Path
    mirrors: list[MirrorStatus]
    #: what `imgsync watch` last published (watch/statusfile.py), or None if it never ran here
    daemon: dict[str, Any] | None
