"""Is a mirror's folder there, readable, and the one synced last time? One check and one wording for
reconcile (pipeline), the watch daemon and doctor.

A folder that is missing, not a directory, unreadable or on another device than at the last clean run
is never a reason to delete: it is what an unmounted disk, a renamed folder or a stale mount point
looks like. The pipeline withholds every delete while such a condition lasts (plan.py); the daemon
pauses a folder it cannot list. `--force` is the one way to say "it really is gone".
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Problem = Literal["missing", "not_dir", "unreadable"]


@dataclass(frozen=True, slots=True)
class FolderCheck:
    folder: Path
    #: why the folder cannot be listed at all, or None
    problem: Problem | None = None
    #: what the user sees: the problem or the device change, in words; None when all is well
    message: str | None = None
    #: what to do about it (doctor prints it)
    fix: str | None = None
    #: st_dev / (st_dev, st_ino) of the folder when it could be stat'ed
    device: int | None = None
    identity: tuple[int, int] | None = None
    #: statvfs f_fsid (UUID-derived on ext4, xfs, btrfs); None when the filesystem gives none
    fsid: int | None = None
    #: on another device than last time (the folder is there, but is it the same one?)
    moved: bool = False

    @property
    def usable(self) -> bool:
        """Can the folder be listed? (A moved folder can: only deletes are in doubt.)"""
        return self.problem is None


def check_folder(folder: Path, last_device: int | None = None, last_fsid: int | None = None) -> FolderCheck:
    """Stat the folder (following a symlink to it) and compare its filesystem with the one of the last
    run that left it in step (`last_device` st_dev, `last_fsid` f_fsid; None: never synced, or unknown).
    Both are compared: the kernel may give a different disk the same device number (a USB stick swapped
    in the same slot; tmpfs numbers are reused at once), and f_fsid tells them apart where it is derived
    from the filesystem's UUID."""
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return FolderCheck(
            folder,
            "missing",
            f"folder {folder} does not exist (an unmounted disk, or renamed?)",
            "mount the disk it lives on, or fix the mirror's folder in the config",
        )
    except NotADirectoryError:
        return FolderCheck(
            folder,
            "missing",
            f"folder {folder} does not exist (a parent is not a directory)",
            "fix the mirror's folder in the config",
        )
    except OSError as e:
        return unreadable_folder(folder, e.strerror or str(e))
    if not stat.S_ISDIR(st.st_mode):
        return FolderCheck(
            folder,
            "not_dir",
            f"{folder} is not a directory (replaced by a file?)",
            "point the mirror's folder at a directory",
            st.st_dev,
            (st.st_dev, st.st_ino),
        )
    if not os.access(folder, os.R_OK | os.X_OK):
        return unreadable_folder(folder, "permission denied", st)
    fsid = _fsid(folder)
    moved = last_device is not None and last_device != st.st_dev
    if not moved and last_fsid is not None and fsid is not None and last_fsid != fsid:
        moved = True
    if moved:
        change = (
            f"device {last_device} → {st.st_dev}"
            if last_device != st.st_dev
            else "same device number, another filesystem"
        )
        return FolderCheck(
            folder,
            None,
            f"folder {folder} is on another disk than at the last run ({change}: an unmounted disk, or "
            "another one mounted there?)",
            "mount the disk it was on; if it really moved, `imgsync reconcile --force` confirms it once",
            st.st_dev,
            (st.st_dev, st.st_ino),
            fsid,
            moved=True,
        )
    return FolderCheck(folder, None, None, None, st.st_dev, (st.st_dev, st.st_ino), fsid)


def _fsid(folder: Path) -> int | None:
    try:
        fsid = os.statvfs(folder).f_fsid
    except (OSError, AttributeError):
        return None
    return fsid or None  # 0: the filesystem does not say (FUSE, some network filesystems)


def unreadable_folder(folder: Path, why: str, st: os.stat_result | None = None) -> FolderCheck:
    return FolderCheck(
        folder,
        "unreadable",
        f"folder {folder} cannot be read ({why.lower()})",
        f"give this user read access: chmod u+rx {folder} (or run imgsync as its owner)",
        st.st_dev if st else None,
        (st.st_dev, st.st_ino) if st else None,
    )
