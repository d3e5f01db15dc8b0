"""<state_dir>/daemon.json: what a running `imgsync watch` tells `imgsync status`.

Written atomically (temp file, fsync, rename) so a reader never sees half a file. The file can
outlive its writer (kill -9, a crash), so a reader trusts it only if the pid it names is alive and
is the pid that holds the state dir's lock (the lock file's text names its holder).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from imgsync.manifest.lock import LOCK_NAME
from imgsync.statedir import DAEMON_STATUS as STATUS_NAME


def write_status(state_dir: Path, data: dict[str, Any]) -> None:
    path = state_dir / STATUS_NAME
    tmp = path.with_name(f".{STATUS_NAME}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """The daemon's last status with "running" checked against the pid and the lock; None if no
    daemon ever wrote one here."""
    try:
        data = json.loads((state_dir / STATUS_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {"running": False, "error": f"cannot read {STATUS_NAME}: {e}"}
    if not isinstance(data, dict):
        return {"running": False, "error": f"{STATUS_NAME} is not a JSON object"}
    pid = data.get("pid")
    if data.get("running") and not (isinstance(pid, int) and _alive(pid) and lock_holder(state_dir) == pid):
        data["running"] = False
        data["stale"] = True  # it did not say goodbye: killed, crashed, or the machine went down
    return data


def held_by_a_live_process(state_dir: Path) -> bool:
    """Whether the state dir's lock names a process that is alive (a reconcile or watch at work)."""
    pid = lock_holder(state_dir)
    return pid is not None and _alive(pid)


def lock_holder(state_dir: Path) -> int | None:
    """The pid the lock file names (written by its holder, cleared when released)."""
    try:
        text = (state_dir / LOCK_NAME).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "pid" and value.strip().isdigit():
            return int(value)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
