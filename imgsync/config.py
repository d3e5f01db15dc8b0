"""Configuration: where it comes from, what every key means, and errors that name the key.

`parse_config(data, env=...)` is pure (a dict from TOML in, a frozen Config out); `load_config()` finds and
reads the file. Every key is documented in config.example.toml, and a test parses that file.

Where things come from, first match wins:
  config file   --config PATH, else $IMGSYNC_CONFIG, else <user config dir>/imgsync/config.toml (optional)
  state dir     --state-dir, else $IMGSYNC_STATE_DIR, else `state_dir` in the file, else <user state dir>/imgsync
  keys          $IMGSYNC_API_KEY / $IMGSYNC_SECRET_KEY, else [gallery] api_key / secret_key
  gallery db    `gallery serve --database`, else $IMGSYNC_GALLERY_DATABASE, else [local_gallery] database
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import platformdirs

from imgsync.errors import ConfigError
from imgsync.libraries import DEFAULT_LIBRARY, LIBRARIES, TAG_RANGE, Library

log = logging.getLogger("imgsync.config")

LOCAL = "local"
DEFAULT_INCLUDE = ("*.jpg", "*.jpeg", "*.png", "*.bmp", "*.webp", "*.gif", "*.tif", "*.tiff")
DEFAULT_EXCLUDE = (".*", "*~", "*.tmp", "*.part", "*.crdownload")
#: The default brief: JSON with the entry's stable id and the file's path (cut to fit 256 bytes).
DEFAULT_BRIEF = '{"id":{id},"path":"{path}"}'
BRIEF_FIELDS = ("id", "path", "name", "stem", "mirror", "library")


@dataclass(frozen=True, slots=True)
class LabelRule:
    """Files whose path matches `glob` get these tags (or, for product, class ids). First matching rule wins."""

    glob: str
    tags: tuple[int, ...] = ()
    class_id1: int | None = None
    class_id2: int | None = None


@dataclass(frozen=True, slots=True)
class DeleteGuard:
    """Refuse a run's deletes when they exceed `fraction` of the mirror's entries and number more than
    `min_count`; or, when `max_count` is set, when they exceed `max_count`."""

    fraction: float = 0.5
    min_count: int = 10
    max_count: int | None = None

    def refuses(self, deletes: int, entries: int) -> bool:
        if self.max_count is not None:
            return deletes > self.max_count
        return deletes > self.min_count and deletes > self.fraction * entries


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    name: str
    folder: Path
    library: str
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    follow_symlinks: bool = False
    brief: str = DEFAULT_BRIEF
    labels: tuple[LabelRule, ...] = ()
    fit: Literal["reject", "shrink"] = "reject"
    max_delete: DeleteGuard = DeleteGuard()

    @property
    def lib(self) -> Library:
        """The library's facts (limits, API paths, labels), resolved from its name (checked when parsed)."""
        return LIBRARIES[self.library]

    def label_for(self, path: str) -> LabelRule | None:
        """The first rule whose glob matches `path` (POSIX, relative to the folder)."""
        for rule in self.labels:
            if fnmatch.fnmatchcase(path, rule.glob):
                return rule
        return None


@dataclass(frozen=True, slots=True)
class GalleryConfig:
    endpoint: str = LOCAL
    api_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    qps: float | None = None
    timeout: float = 60.0
    #: Calls kept in flight at once; None = "auto" (enough to reach `qps` at the latency seen).
    in_flight: int | None = None

    @property
    def is_local(self) -> bool:
        return self.endpoint == LOCAL

    def missing_key(self) -> tuple[str, str] | None:
        """The first key an endpoint URL needs and this config lacks, as (setting, environment variable)
        to name in a message; None when nothing is missing (or the gallery is local, which needs none)."""
        if self.is_local:
            return None
        if not self.api_key:
            return "api_key", "IMGSYNC_API_KEY"
        if not self.secret_key:
            return "secret_key", "IMGSYNC_SECRET_KEY"
        return None


@dataclass(frozen=True, slots=True)
class LocalGalleryConfig:
    """`imgsync gallery serve` / `gallery ls`: where a served local gallery keeps its state."""

    #: A PostgreSQL URL (postgresql://user@host/db) shared by any number of `gallery serve` replicas;
    #: None = the SQLite data dir.
    database: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """`imgsync watch` timing, in seconds (see imgsync.watch.debounce)."""

    debounce: float = 1.0  # quiet time a path needs before it is looked at
    delete_delay: float = 3.0  # longer for deletes, so a move arriving as delete + create pairs up
    max_delay: float = 10.0  # a path that never goes quiet is looked at after this anyway
    min_age: float = 1.0  # a file is uploaded only once its mtime is at least this old
    full_scan_interval: float = 3600.0  # the full reconcile that catches what the watcher missed
    fallback_scan_interval: float = 300.0  # full scans when the folder cannot be watched (inotify limit)


@dataclass(frozen=True, slots=True)
class Config:
    state_dir: Path
    gallery: GalleryConfig = GalleryConfig()
    mirrors: tuple[MirrorConfig, ...] = ()
    source: Path | None = None
    watch: WatchConfig = WatchConfig()
    #: names of the mirrors that come from the state dir's mirrors.toml, not the config file
    remembered: frozenset[str] = frozenset()
    local_gallery: LocalGalleryConfig = LocalGalleryConfig()

    def mirror(self, name: str) -> MirrorConfig:
        for m in self.mirrors:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.mirrors) or "none configured"
        raise ConfigError(f"no mirror named {name!r} (known: {known})")


# --------------------------------------------------------------------------- pure parsing


class _Reader:
    """Reads one table, naming the key in every error and refusing keys it does not know."""

    def __init__(self, table: Any, where: str) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: expected a table, got {type(table).__name__}")
        self.table = dict(table)
        self.where = where
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.seen.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        if isinstance(value, bool) and kind not in (bool, (bool,)):
            raise ConfigError(f"{self.key(name)}: expected {_kind(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise ConfigError(f"{self.key(name)}: expected {_kind(kind)}, got {type(value).__name__} {value!r}")
        if isinstance(value, float) and not math.isfinite(value):  # TOML has nan and inf; no setting means them
            raise ConfigError(f"{self.key(name)}: expected a finite number, got {value}")
        return value

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(name, (list, str), None)
        if value is None:
            return default
        items = [value] if isinstance(value, str) else value
        if not all(isinstance(v, str) and v for v in items):
            raise ConfigError(f"{self.key(name)}: expected a list of non-empty strings")
        return tuple(items)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.seen)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(self.seen), n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}`?" if close else "check the spelling;"
            raise ConfigError(f"{self.key(unknown[0])}: unknown key ({hint} see config.example.toml)")


def _kind(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def parse_config(
    data: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    state_dir: Path | None = None,
    source: Path | None = None,
) -> Config:
    """Build a Config from parsed TOML. Pure: `env` stands in for os.environ."""
    env = {} if env is None else env
    top = _Reader(data, "")
    file_state = _path_or_none(top.get("state_dir", str))
    state = state_dir or _path_or_none(env.get("IMGSYNC_STATE_DIR")) or file_state
    gallery = _parse_gallery(top.get("gallery", dict, {}), env)
    mirrors = _mirrors(top.get("mirror", list, []))
    watch = _parse_watch(top.get("watch", dict, {}))
    local_gallery = _parse_local_gallery(top.get("local_gallery", dict, {}), env)
    top.finish()
    return Config(
        state_dir=(state or Path(platformdirs.user_state_dir("imgsync"))).expanduser(),
        gallery=gallery,
        mirrors=mirrors,
        source=source,
        watch=watch,
        local_gallery=local_gallery,
    )


def parse_mirrors(data: Mapping[str, Any]) -> tuple[MirrorConfig, ...]:
    """The [[mirror]] tables of a TOML document that holds nothing else (the state dir's mirrors.toml)."""
    top = _Reader(data, "")
    mirrors = _mirrors(top.get("mirror", list, []))
    top.finish()
    return mirrors


def _mirrors(raw: list[Any]) -> tuple[MirrorConfig, ...]:
    mirrors = tuple(_parse_mirror(m, f"mirror[{i}]") for i, m in enumerate(raw))
    names = [m.name for m in mirrors]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"mirror.name: {dupes[0]!r} is used by more than one mirror; names must be unique")
    return mirrors


def with_remembered(config: Config, remembered: tuple[MirrorConfig, ...]) -> Config:
    """The config's mirrors, then the remembered ones (imgsync.remembered) whose name and folder no
    configured mirror uses: a configured mirror wins."""
    names = {m.name for m in config.mirrors}
    folders = {m.folder.expanduser().resolve() for m in config.mirrors}
    extra = tuple(m for m in remembered if m.name not in names and m.folder.expanduser().resolve() not in folders)
    return replace(config, mirrors=config.mirrors + extra, remembered=frozenset(m.name for m in extra))


def _path_or_none(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


#: gallery.timeout's ceiling: an hour per call is already no timeout; a larger one overflows the clock.
MAX_TIMEOUT_S = 3600


def _parse_gallery(table: Any, env: Mapping[str, str]) -> GalleryConfig:
    r = _Reader(table, "gallery")
    endpoint = r.get("endpoint", str, LOCAL).strip()
    if endpoint != LOCAL and not re.match(r"^https?://[^/\s]+", endpoint):
        raise ConfigError(f'gallery.endpoint: {endpoint!r} is neither "local" nor an http(s) URL')
    file_key, file_secret = r.get("api_key", str), r.get("secret_key", str)
    api_key = env.get("IMGSYNC_API_KEY") or file_key or None
    secret_key = env.get("IMGSYNC_SECRET_KEY") or file_secret or None
    qps = r.get("qps", (int, float), None)
    if qps is not None and qps < 0:
        raise ConfigError(f"gallery.qps: must be ≥ 0 (0 means no client-side limit), got {qps}")
    timeout = r.get("timeout", (int, float), 60.0)
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise ConfigError(f"gallery.timeout: must be > 0 and at most {MAX_TIMEOUT_S} seconds, got {timeout}")
    in_flight = _parse_in_flight(r.get("in_flight", (int, str), "auto"))
    r.finish()
    return GalleryConfig(
        endpoint.rstrip("/"), api_key, secret_key, float(qps) if qps else None, float(timeout), in_flight
    )


def _parse_in_flight(value: int | str) -> int | None:
    from imgsync.gallery.pacing import CEILING

    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= CEILING:
        raise ConfigError(f'gallery.in_flight: must be "auto" or a whole number from 1 to {CEILING}, got {value!r}')
    return value


def _parse_local_gallery(table: Any, env: Mapping[str, str]) -> LocalGalleryConfig:
    r = _Reader(table, "local_gallery")
    database = env.get("IMGSYNC_GALLERY_DATABASE") or r.get("database", str) or None
    r.finish()
    if database is not None and not re.match(r"^(postgres(ql)?://|\S+=)", database.strip()):
        raise ConfigError(
            "local_gallery.database: expected a PostgreSQL URL (postgresql://user@host/dbname) "
            "or a libpq connection string (host=... dbname=...)"
        )
    return LocalGalleryConfig(database.strip() if database else None)


def _parse_watch(table: Any) -> WatchConfig:
    r = _Reader(table, "watch")
    values = {}
    for name, lowest in (
        ("debounce", 0.0),
        ("delete_delay", 0.0),
        ("max_delay", 0.0),
        ("min_age", 0.0),
        ("full_scan_interval", 1.0),
        ("fallback_scan_interval", 1.0),
    ):
        value = r.get(name, (int, float), None)
        if value is None:
            continue
        if value < lowest:
            raise ConfigError(f"watch.{name}: must be ≥ {lowest:g} seconds, got {value}")
        values[name] = float(value)
    r.finish()
    return WatchConfig(**values)


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _parse_mirror(table: Any, where: str) -> MirrorConfig:
    r = _Reader(table, where)
    name = r.get("name", str)
    if name is None:
        raise ConfigError(f"{where}.name: missing (every mirror needs a name)")
    if not _NAME.match(name):
        raise ConfigError(f"{where}.name: {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    where = f"mirror {name!r}"
    r.where = where
    folder = r.get("folder", str)
    if not folder:
        raise ConfigError(f"{where}.folder: missing (the folder to mirror)")
    library = r.get("library", str, DEFAULT_LIBRARY)
    if library not in LIBRARIES:
        raise ConfigError(f"{where}.library: unknown library {library!r} (known: {', '.join(LIBRARIES)})")
    brief = r.get("brief", str, DEFAULT_BRIEF)
    check_brief_template(brief, f"{where}.brief")
    fit = r.get("fit", str, "reject")
    if fit not in ("reject", "shrink"):
        raise ConfigError(f'{where}.fit: must be "reject" or "shrink", got {fit!r}')
    labels = tuple(_parse_label(t, f"{where}.labels[{i}]", library) for i, t in enumerate(r.get("labels", list, [])))
    guard = _parse_guard(r.get("max_delete", (int, str), None), f"{where}.max_delete")
    mirror = MirrorConfig(
        name=name,
        folder=Path(folder).expanduser(),
        library=library,
        include=r.strings("include", DEFAULT_INCLUDE),
        exclude=r.strings("exclude", DEFAULT_EXCLUDE),
        follow_symlinks=r.get("follow_symlinks", bool, False),
        brief=brief,
        labels=labels,
        fit=fit,
        max_delete=guard,
    )
    r.finish()
    return mirror


def _parse_label(table: Any, where: str, library: str) -> LabelRule:
    r = _Reader(table, where)
    glob = r.get("glob", str)
    if not glob:
        raise ConfigError(f"{where}.glob: missing (the path pattern this rule applies to)")
    lo, hi = TAG_RANGE
    tags = r.get("tags", list, [])
    if len(tags) > 2 or not all(isinstance(t, int) and not isinstance(t, bool) and lo <= t <= hi for t in tags):
        raise ConfigError(f"{where}.tags: at most 2 integers in {lo}..{hi}, got {tags!r}")
    ids = []
    for key in ("class_id1", "class_id2"):
        v = r.get(key, int, None)
        if v is not None and not lo <= v <= hi:
            raise ConfigError(f"{where}.{key}: must be in {lo}..{hi}, got {v}")
        ids.append(v)
    r.finish()
    is_product = LIBRARIES[library].labels == "class_id"
    if is_product and tags:
        raise ConfigError(f"{where}.tags: the product library has no tags; use class_id1 / class_id2")
    if not is_product and any(v is not None for v in ids):
        raise ConfigError(f"{where}.class_id1: only the product library has class ids; use tags")
    return LabelRule(glob, tuple(tags), ids[0], ids[1])


def _parse_guard(value: int | str | None, where: str) -> DeleteGuard:
    if value is None:
        return DeleteGuard()
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{where}: must be ≥ 0, got {value}")
        return DeleteGuard(max_count=value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
    if not m or float(m.group(1)) > 100:
        raise ConfigError(f'{where}: expected a count (e.g. 100) or a percentage (e.g. "50%"), got {value!r}')
    return DeleteGuard(fraction=float(m.group(1)) / 100)


_FIELD = re.compile(r"\{([^{}]*)\}")


def check_brief_template(template: str, where: str) -> None:
    """A template may use {id} {path} {name} {stem} {mirror} {library}; {id} keeps each brief unique."""
    fields = _FIELD.findall(template)
    unknown = [f for f in fields if f not in BRIEF_FIELDS]
    if unknown:
        raise ConfigError(f"{where}: unknown placeholder {{{unknown[0]}}} (known: {', '.join(BRIEF_FIELDS)})")
    if "id" not in fields:
        raise ConfigError(f"{where}: must contain {{id}}, which keeps every entry's brief unique")


# --------------------------------------------------------------------------- loading


def default_config_path(env: Mapping[str, str]) -> tuple[Path, bool]:
    """(path, explicit): $IMGSYNC_CONFIG, else the user config dir's imgsync/config.toml."""
    if env.get("IMGSYNC_CONFIG"):
        return Path(env["IMGSYNC_CONFIG"]).expanduser(), True
    return Path(platformdirs.user_config_dir("imgsync")) / "config.toml", False


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    state_dir: Path | None = None,
) -> Config:
    """Find, read and parse the config. A missing default file means defaults; a missing explicit one is an error."""
    env = os.environ if env is None else env
    explicit = path is not None
    if path is None:
        path, explicit = default_config_path(env)
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file {path} does not exist")
        return parse_config({}, env=env, state_dir=state_dir)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    try:
        config = parse_config(data, env=env, state_dir=state_dir, source=path)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    _warn_if_secret_exposed(path, data)
    return config


def _warn_if_secret_exposed(path: Path, data: Mapping[str, Any]) -> None:
    gallery = data.get("gallery") or {}
    local = data.get("local_gallery") or {}
    if isinstance(gallery, Mapping) and gallery.get("secret_key"):
        what, instead = "[gallery] secret_key", "IMGSYNC_SECRET_KEY"
    elif isinstance(local, Mapping) and re.search(
        r"(://[^/@\s]*:[^/@\s]*@|password\s*=)", str(local.get("database", ""))
    ):
        what, instead = "a password in [local_gallery] database", "IMGSYNC_GALLERY_DATABASE or ~/.pgpass"
    else:
        return
    mode = path.stat().st_mode
    if mode & (stat.S_IROTH | stat.S_IRGRP):
        log.warning(
            "%s holds %s and is readable by other users (mode %o); run `chmod 600 %s` or use %s instead",
            path,
            what,
            stat.S_IMODE(mode),
            path,
            instead,
        )


def adhoc_mirror(folder: Path, *, library: str = DEFAULT_LIBRARY) -> MirrorConfig:
    """The mirror an imgsync before remembered mirrors (imgsync.remembered) used for `imgsync reconcile
    FOLDER`: named the folder's name plus a short hash of its full path. Kept so that such a folder, when
    remembered now, keeps its name and so its manifest records."""
    import hashlib

    folder = folder.expanduser().resolve()
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", folder.name)[:40].lstrip("._-") or "folder"
    digest = hashlib.sha256(os.fsencode(folder)).hexdigest()[:8]
    return MirrorConfig(name=f"{stem}-{digest}", folder=folder, library=library)
