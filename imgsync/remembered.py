"""Folders mirrored without a config: remembered in <state_dir>/mirrors.toml, first-class mirrors.

`imgsync reconcile ~/Pictures` with no [[mirror]] for that folder mirrors it with the defaults, and
remembers it here, as a [[mirror]] table of the config's own format: from then on it is a mirror like a
configured one — `imgsync reconcile` (no argument), `watch`, `status`, `service install` and the web
console include it, and its name works wherever a MIRROR is asked for. The file belongs to the state dir
because the manifest records it names live there too. Edit it, or move its tables into the config, as
you like; a configured mirror with the same name or folder wins.

Names: the folder's own name ("Pictures"), made unique with "-2", "-3"... A folder an older imgsync
mirrored under its old "<name>-<hash>" name keeps that name (its manifest records are filed under it).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from collections.abc import Collection
from pathlib import Path

from imgsync.config import MirrorConfig, parse_mirrors
from imgsync.errors import ConfigError
from imgsync.statedir import REMEMBERED as REMEMBERED_NAME

_HEADER = """\
# Folders imgsync mirrors without a config (`imgsync reconcile FOLDER`), remembered for this state dir.
# Each [[mirror]] table takes the keys of the config's [[mirror]] (see config.example.toml); a mirror in
# the config with the same name or folder wins. Remove a table to stop mirroring that folder.
"""


def remembered_path(state_dir: Path) -> Path:
    return Path(state_dir) / REMEMBERED_NAME


def load_remembered(state_dir: Path) -> tuple[MirrorConfig, ...]:
    """The remembered mirrors; none when the file does not exist. A broken file is a ConfigError that
    names it (a hand edit gone wrong must not silently drop mirrors)."""
    path = remembered_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    try:
        return parse_mirrors(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def name_for(folder: Path, taken: Collection[str]) -> str:
    """The folder's own name, sanitized to a mirror name, made unique among `taken`."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", folder.name)[:60].lstrip("._-") or "folder"
    name, n = stem, 2
    while name in taken:
        name, n = f"{stem}-{n}", n + 1
    return name


def remember(state_dir: Path, mirror: MirrorConfig) -> Path:
    """Add (or replace, by name) `mirror` in the state dir's mirrors.toml; written atomically. Returns
    the file's path. Only the keys a remembered mirror sets are written: name, folder, library."""
    kept = [m for m in load_remembered(state_dir) if m.name != mirror.name]
    return _write(state_dir, [*kept, mirror])


def forget(state_dir: Path, name: str) -> bool:
    """Remove the remembered mirror `name` (written atomically); False if there was none."""
    mirrors = load_remembered(state_dir)
    if not any(m.name == name for m in mirrors):
        return False
    _write(state_dir, [m for m in mirrors if m.name != name])
    return True


def _write(state_dir: Path, mirrors: list[MirrorConfig]) -> Path:
    """mirrors.toml holding `mirrors`, replaced atomically: a crash leaves the old file or the new one."""
    path = remembered_path(state_dir)
    tables = [_table(m) for m in mirrors]  # before the temp file: a name that cannot be written raises here
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mirrors.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_HEADER + "".join(tables))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _table(m: MirrorConfig) -> str:
    return (
        f"\n[[mirror]]\nname = {_toml_str(m.name)}\nfolder = {_toml_str(str(m.folder))}\n"
        f"library = {_toml_str(m.library)}\n"
    )


def _toml_str(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's (\\uXXXX included), except that TOML has no lone
    surrogates, which a folder name that is not valid UTF-8 would need."""
    if re.search(r"[\ud800-\udfff]", value):
        raise ConfigError(
            f"{value.encode('utf-8', 'surrogateescape')!r}: a folder name that is not valid UTF-8 "
            "cannot be remembered; add a [[mirror]] for it to the config"
        )
    return json.dumps(value)
