"""What lives in a state dir, by name: the one place that spells these file names.

manifest.sqlite3   the manifest (SQLite, WAL: with its -wal and -shm files)
imgsync.lock       the lock one reconcile / watch holds (flock), with its holder's pid
spool/             the bytes of uploads in flight (kept until their add is recorded)
gallery/           the embedded local gallery's data dir
mirrors.toml       folders mirrored without a config (imgsync.remembered)
daemon.json        what `imgsync watch` publishes about itself (watch/statusfile.py)
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = "manifest.sqlite3"
LOCK = "imgsync.lock"
SPOOL = "spool"
GALLERY = "gallery"
REMEMBERED = "mirrors.toml"
DAEMON_STATUS = "daemon.json"


def manifest_path(state_dir: Path) -> Path:
    return Path(state_dir) / MANIFEST


def spool_dir(state_dir: Path) -> Path:
    return Path(state_dir) / SPOOL


def gallery_dir(state_dir: Path) -> Path:
    return Path(state_dir) / GALLERY
