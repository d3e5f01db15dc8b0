"""Plain values that cross imgsync's stages: what the scanner saw, what the manifest knows.

No I/O here. "path" always means the POSIX path relative to the mirror's folder; "cont_sign" is the
id the gallery gives an entry; "content_hash" is the sha256 (hex) of a file's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: ok: valid, uploadable as is (or after shrinking, with fit="shrink");
#: rejected: the library would refuse it (reason says why); retried only when the file changes;
#: unstable: changed while being read, or too fresh to trust; retried on the next run;
#: error: could not be read (permission denied, vanished, ...); retried on the next run.
Verdict = Literal["ok", "rejected", "unstable", "error"]


@dataclass(frozen=True, slots=True)
class FileStat:
    path: str
    size: int
    mtime_ns: int
    inode: int


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """One file as the scanner found it this run."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    content_hash: str | None  # None when it could not be read whole
    verdict: Verdict
    reason: str | None = None  # one line, for rejected / unstable / error
    hashed_at_ns: int = 0  # wall-clock time the hash was taken (decides whether a later mtime can be trusted)

    @property
    def stat(self) -> FileStat:
        return FileStat(self.path, self.size, self.mtime_ns, self.inode)


@dataclass(frozen=True, slots=True)
class KnownFile:
    """One file as the manifest remembers it."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    content_hash: str | None
    verdict: Verdict
    reason: str | None
    entry_id: int | None  # the remote entry this file maps to (None until it has one)
    hashed_at_ns: int = 0

    def as_scanned(self) -> ScannedFile:
        """The file as a scan that found it unchanged would list it."""
        return ScannedFile(
            self.path,
            self.size,
            self.mtime_ns,
            self.inode,
            self.content_hash,
            self.verdict,
            self.reason,
            self.hashed_at_ns,
        )


EntryState = Literal["live", "adding", "deleting"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One remote gallery entry as the manifest records it. `id` is imgsync's own stable id (put in the brief)."""

    id: int
    mirror: str
    library: str
    cont_sign: str | None  # None while an add is in flight (state "adding")
    content_hash: str
    brief: str
    tags: tuple[int, ...] = ()
    class_id1: int | None = None
    class_id2: int | None = None
    state: EntryState = "live"
