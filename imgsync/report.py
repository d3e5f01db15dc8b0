"""What one mirror's run did: counted by the executor, rendered by the CLI (render.py) and the console,
mapped to an exit code by the API. Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from imgsync.config import MirrorConfig
from imgsync.errors import GalleryError

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
    stopped: GalleryError | None = None  # the error that ended the run early, if any
    interrupted: bool = False  # the caller asked to stop (should_stop) before the plan was done
    #: paths rejected or unreadable in an earlier run and unchanged since: reported, but they do not make
    #: the exit non-zero (new ones do)
    unchanged_problems: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.rejected or self.pending or self.stopped or self.withheld_reason
                    or self.folder_problem or self.interrupted)

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added), "updated": len(self.updated), "remapped": self.remapped,
            "deleted": self.deleted, "recovered": self.recovered, "failed": len(self.failed),
            "rejected": len(self.rejected), "pending": len(self.pending), "withheld": self.withheld,
        }


@dataclass
class MirrorRun:
    """One mirror's run: its plan (None when no plan was made: a no-op run, or a gallery that failed
    during recovery) and what was done."""

    mirror: MirrorConfig
    plan: Plan | None
    report: Report
