"""`imgsync doctor`: a preflight. Each check is a small function returning Findings; whatever it has to
look at (the config loader, the filesystem, the gallery, the clock, the inotify limit) comes in as an
argument, so every check runs in tests against real parts with faults injected where needed.

    config      the config file parses (nothing else can be checked without it)
    folder      each mirror's folder exists, is a directory and can be listed
    state_dir   the state dir is writable (or can be created), with room to write (MIN_FREE_BYTES)
    manifest    the manifest's schema is current; older = migrated on the next run; newer = refused
    gallery     the gallery answers a call
    token       the key gets a token, and its scope is an AI application's (brain_all_scope)
    library     each configured library is enabled for the account (a search with a small image:
                the cloud answers 6 "No permission" or 216017 "not initialized" otherwise, api.md §6)
    clock       the gallery's HTTP Date header against the local clock
    inotify     fs.inotify.max_user_watches against the directories `imgsync watch` would watch

A Finding is ok, warn or fail. `fail` blocks a sync; it carries the exit code the sync itself would
have ended with (imgsync.errors.EXIT_CODES), and the report's exit code is the first failure's.
Nothing here writes to the state dir, the manifest or the folders, and no secret reaches a message.
"""

from __future__ import annotations

import email.utils
import io
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from imgsync.clock import SYSTEM_CLOCK, Clock
from imgsync.config import Config, MirrorConfig
from imgsync.errors import (
    DISK_FULL_ERRNOS,
    ConfigError,
    DeletesRefusedError,
    GalleryAuthError,
    GalleryError,
    GalleryPermissionError,
    GalleryQuotaError,
    GalleryRequestError,
    GalleryUnavailableError,
    ManifestError,
)
from imgsync.folder import check_folder as check_folder_state
from imgsync.folder import unreadable_folder
from imgsync.libraries import DEFAULT_LIBRARY, LIBRARIES, TOKEN_PATH
from imgsync.manifest import lite
from imgsync.statedir import MANIFEST as MANIFEST_NAME

Level = Literal["ok", "warn", "fail"]

#: Exit codes of blocking findings (the codes a sync would end with; see imgsync.errors.EXIT_CODES).
EXIT_CONFIG = ConfigError.exit_code  # 2: config, state dir
EXIT_FOLDER = DeletesRefusedError.exit_code  # 6: a folder missing, not a directory, unreadable
EXIT_UNAVAILABLE = GalleryUnavailableError.exit_code  # 3: gallery unreachable
EXIT_AUTH = GalleryAuthError.exit_code  # 4: key, secret, token scope, library not enabled
EXIT_QUOTA = GalleryQuotaError.exit_code  # 5: quota exhausted
EXIT_MANIFEST = ManifestError.exit_code  # 8: manifest unreadable or too new

#: The AI application scope: without it the key is a BCE user's and image search refuses it (api.md §2.2).
AI_APP_SCOPE = "brain_all_scope"
#: Warn above this clock difference. Tokens are judged by the gallery's clock and refreshed by ours
#: (a margin of up to a day), TLS needs a roughly right clock, and run times in reports come from ours:
#: minutes do not matter, more is a sign of a broken clock.
CLOCK_SKEW_WARN_S = 300.0
#: Warn when the folders need more than this share of the per-user inotify limit: other programs
#: (editors, sync clients) draw on the same limit.
INOTIFY_SHARE_WARN = 0.5
INOTIFY_LIMIT_FILE = Path("/proc/sys/fs/inotify/max_user_watches")
#: Used when no mirror is configured: `imgsync reconcile FOLDER` mirrors into this library.


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    level: Level
    message: str
    #: What to do about it ("" when nothing needs doing).
    fix: str = ""
    #: For a fail: the exit code the sync would end with.
    exit_code: int = 0

    def line(self) -> str:
        label = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[self.level]
        text = f"{label} {self.check}: {self.message}"
        return f"{text} -> {self.fix}" if self.fix else text


def ok(check: str, message: str) -> Finding:
    return Finding(check, "ok", message)


def warn(check: str, message: str, fix: str) -> Finding:
    return Finding(check, "warn", message, fix)


def fail(check: str, message: str, fix: str, exit_code: int) -> Finding:
    return Finding(check, "fail", message, fix, exit_code)


@dataclass
class DoctorReport:
    findings: list[Finding] = field(default_factory=list)
    #: mirrors configured or remembered (none: nothing to sync yet, though nothing blocks)
    mirrors: int = 0

    def summary(self) -> str:
        blocking = sum(f.level == "fail" for f in self.findings)
        warnings = sum(f.level == "warn" for f in self.findings)
        verdict = "" if blocking else ": ready to sync" if self.mirrors else ": no mirror to sync yet"
        return f"{blocking} blocking, {warnings} warning{'s' if warnings != 1 else ''}{verdict}"

    @property
    def exit_code(self) -> int:
        """0 when nothing blocks (warnings included); else the first failure's code."""
        return next((f.exit_code for f in self.findings if f.level == "fail"), 0)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.exit_code == 0, "exit_code": self.exit_code, "findings": [asdict(f) for f in self.findings]}


# --------------------------------------------------------------------------- config


def check_config(load: Callable[[], Config]) -> tuple[Finding, Config | None]:
    try:
        config = load()
    except ConfigError as e:
        return fail(
            "config", str(e), "fix the config file (every key is explained in config.example.toml)", EXIT_CONFIG
        ), None
    where = str(config.source) if config.source else "no config file (defaults)"
    n = len(config.mirrors)
    remembered = f" ({len(config.remembered)} remembered)" if config.remembered else ""
    if not n:
        return warn(
            "config",
            f"{where}: no mirror yet, gallery {config.gallery.endpoint}",
            "run `imgsync reconcile FOLDER` (the folder is remembered) or add a [[mirror]] to the config",
        ), config
    return ok(
        "config", f"{where}: {n} mirror{'s' if n != 1 else ''}{remembered}, gallery {config.gallery.endpoint}"
    ), config


def check_secret_file(path: Path | None) -> Finding | None:
    """A config file holding the secret key must be readable by its owner only."""
    import stat
    import tomllib

    if path is None:
        return None
    try:
        gallery = tomllib.loads(path.read_text(encoding="utf-8")).get("gallery") or {}
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return None  # check_config has read it already; a race is not this check's business
    if isinstance(gallery, dict) and gallery.get("secret_key") and mode & (stat.S_IRGRP | stat.S_IROTH):
        return warn(
            "config",
            f"{path} holds [gallery] secret_key and other users may read it (mode {stat.S_IMODE(mode):o})",
            f"chmod 600 {path}, or move the secret to IMGSYNC_SECRET_KEY",
        )
    return None


def check_gallery_keys(config: Config) -> Finding | None:
    """An endpoint URL needs both keys (open_gallery refuses to start without them)."""
    missing = config.gallery.missing_key()
    if missing is None:
        return None
    name, env = missing
    problem = f"gallery.{name} is missing and gallery.endpoint is a URL"
    return fail("config", problem, f"set {env} or [gallery] {name}", EXIT_CONFIG)


# --------------------------------------------------------------------------- filesystem

ScanDir = Callable[[Path], AbstractContextManager[Iterator[os.DirEntry[str]]]]


def _scandir(path: Path) -> AbstractContextManager[Iterator[os.DirEntry[str]]]:
    return os.scandir(path)


def check_folder(name: str, folder: Path, *, scandir: ScanDir = _scandir) -> Finding:
    """The pipeline's folder check (imgsync.folder), in its words; a folder a sync could not list ends
    that sync with exit 6 (deletes withheld, nothing done), so doctor says the same."""
    check = f"folder {name}"
    found = check_folder_state(folder)
    if not found.usable:
        return fail(check, found.message or str(folder), found.fix or "", EXIT_FOLDER)
    try:
        with scandir(folder) as entries:
            next(iter(entries), None)  # listing needs read and search (x) permission
    except OSError as e:
        found = unreadable_folder(folder, e.strerror or str(e))
        return fail(check, found.message or str(folder), found.fix or "", EXIT_FOLDER)
    return ok(check, f"{folder} is readable")


def check_guards(mirrors: Sequence[MirrorConfig], manifest: Path) -> list[Finding]:
    """Would a sync withhold deletes because the folder is not the one synced last time, or holds no
    image while entries came from it? (The folders that cannot be listed at all are check_folder's.)
    Read through the manifest's Store; only called when its schema is current (opening writes nothing)."""
    from imgsync.manifest import Store
    from imgsync.scan import stat_digest

    out = []
    with Store.open(manifest) as store:
        for mirror in mirrors:
            state = store.mirror_state(mirror.name)
            found = check_folder_state(mirror.folder, *((state.device, state.fsid) if state else (None, None)))
            if not found.usable:
                continue
            check = f"folder {mirror.name}"
            entries = store.counts(mirror.name)["entries"]
            if found.moved and entries:
                out.append(
                    fail(
                        check,
                        f"{found.message}: a sync withholds deletes of its {entries} entries",
                        found.fix or "",
                        EXIT_FOLDER,
                    )
                )
            elif entries and (stat_digest(mirror.folder, mirror) or "").startswith("0:"):
                out.append(
                    fail(
                        check,
                        f"{mirror.folder} holds no image now, but {entries} entries came from it: "
                        "a sync withholds their deletes",
                        "mount or restore the folder; if you emptied it on purpose, "
                        "`imgsync reconcile --force` deletes the entries",
                        EXIT_FOLDER,
                    )
                )
    return out


#: Less free space than this where the state dir lives blocks a sync (exit 8, as the sync would end): a
#: run writes the manifest and its journal, spools images in flight and, embedded, the gallery's data.
MIN_FREE_BYTES = 32 * 1024 * 1024


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check_state_dir(state_dir: Path, *, free: Callable[[Path], int] = free_bytes) -> Finding:
    """Writable now (a real write, which also catches read-only mounts), or creatable; and room to write."""
    check = "state_dir"
    full = check_free_space(state_dir, free)
    if full is not None:
        return full
    if state_dir.exists():
        if not state_dir.is_dir():
            return fail(
                check,
                f"{state_dir} exists and is not a directory",
                "move it away or choose another --state-dir / $IMGSYNC_STATE_DIR",
                EXIT_CONFIG,
            )
        try:
            fd, probe = tempfile.mkstemp(prefix=".doctor-", dir=state_dir)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            if e.errno in DISK_FULL_ERRNOS:
                return _disk_full(state_dir)
            return fail(
                check,
                f"{state_dir} is not writable ({e.strerror or e})",
                f"make it writable for this user (chmod u+rwx {state_dir}) or choose another --state-dir",
                EXIT_CONFIG,
            )
        return ok(check, f"{state_dir} is writable")
    parent = state_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if os.access(parent, os.W_OK | os.X_OK):
        return ok(check, f"{state_dir} does not exist yet; it will be created on the first run")
    return fail(
        check,
        f"{state_dir} does not exist and cannot be created ({parent} is not writable)",
        "create it by hand or choose another --state-dir / $IMGSYNC_STATE_DIR",
        EXIT_CONFIG,
    )


def check_free_space(state_dir: Path, free: Callable[[Path], int] = free_bytes) -> Finding | None:
    """A fail when the file system the state dir is (or will be) on has less than MIN_FREE_BYTES free."""
    where = state_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        left = free(where)
    except OSError:
        return None  # the writability check says what is wrong with it
    return _disk_full(state_dir, left) if left < MIN_FREE_BYTES else None


def _disk_full(state_dir: Path, left: int | None = None) -> Finding:
    room = f"only {left / 2**20:.1f} MB free" if left is not None else "no space left"
    return fail(
        "state_dir",
        f"{room} on the file system of {state_dir}: a sync would stop with exit 8 (it needs at least "
        f"{MIN_FREE_BYTES // 2**20} MB for the manifest, the spool and the embedded gallery's data)",
        "free some space there (nothing already synced is lost), or choose another --state-dir",
        EXIT_MANIFEST,
    )


# --------------------------------------------------------------------------- manifest schema


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """What the migration scripts know: the head revision and whether a revision is one of theirs."""

    head: str
    known: Callable[[str], bool]


def schema_info(scripts: Any = None) -> SchemaInfo:
    """From the shipped migrations (or an alembic ScriptDirectory passed in, for tests)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from imgsync.manifest import migrate

    script = scripts if scripts is not None else ScriptDirectory.from_config(migrate.alembic_config())

    def known(rev: str) -> bool:
        try:
            return script.get_revision(rev) is not None
        except CommandError:
            return False

    head = script.get_current_head()
    assert head is not None, "the migrations directory has no revisions"
    return SchemaInfo(head, known)


def read_revisions(path: Path) -> tuple[tuple[str, ...], bool]:
    """(revisions stamped in the manifest, whether it has any other table), read-only: the file is not
    created, migrated or locked for writing."""
    with lite.read_only(path) as con:
        return lite.schema_revisions(con)


def judge_schema(revisions: Sequence[str], other_tables: bool, schema: SchemaInfo, where: Path) -> Finding:
    """Pure: the manifest's stamped revisions → a Finding."""
    check = "manifest"
    if not revisions:
        if other_tables:
            return fail(
                check,
                f"{where} is an SQLite database but not an imgsync manifest (no schema version)",
                "move it away or point --state-dir elsewhere",
                EXIT_MANIFEST,
            )
        return ok(check, f"{where} is empty; its schema will be created on the next run")
    if len(revisions) > 1:
        return fail(
            check,
            f"{where} has several schema revisions at once ({', '.join(revisions)}); it is damaged",
            "restore it from a backup, or move it away (the next run then uploads everything again)",
            EXIT_MANIFEST,
        )
    rev = revisions[0]
    if not schema.known(rev):
        return fail(
            check,
            f"{where} has schema revision {rev!r}, newer than this imgsync knows (its newest is {schema.head!r})",
            "upgrade imgsync; the manifest is left untouched",
            EXIT_MANIFEST,
        )
    if rev != schema.head:
        return warn(
            check,
            f"{where} is at schema revision {rev!r}; it will be migrated to {schema.head!r} on the next run",
            f"nothing to do; keep a copy of {where.name} if you may go back to an older imgsync",
        )
    return ok(check, f"{where} is at the current schema revision {rev!r}")


def check_manifest(path: Path, schema: SchemaInfo) -> Finding:
    if not path.exists():
        return ok("manifest", f"{path} does not exist yet; it will be created on the first run")
    try:
        revisions, other_tables = read_revisions(path)
    except sqlite3.Error as e:
        return fail(
            "manifest",
            f"{path} cannot be read as an SQLite database ({e})",
            "if its disk is full (see state_dir), free some space first: that is not damage; else check its "
            "permissions, and only if it is damaged restore it from a backup",
            EXIT_MANIFEST,
        )
    return judge_schema(revisions, other_tables, schema, path)


def read_binding(path: Path) -> tuple[str | None, int]:
    """(the gallery the manifest's entries live in, how many entries a gallery acknowledged), read-only."""
    with lite.read_only(path) as con:
        return lite.binding(con)


def judge_binding(bound: str | None, entries: int, configured: str) -> Finding | None:
    """Pure: do the manifest's entries live in the configured gallery? None when there is nothing to say."""
    if bound is None or entries == 0 or bound == configured:
        return None
    return fail(
        "gallery binding",
        f"the manifest's {entries} entries live in another gallery than the configured "
        "one, so its images would look uploaded already",
        "run `imgsync reconcile --rebind` to add every image to the configured gallery, or point [gallery] "
        "back at the old one",
        EXIT_CONFIG,
    )


def check_binding(path: Path, configured: str) -> Finding | None:
    if not path.exists():
        return None
    try:
        bound, entries = read_binding(path)
    except sqlite3.Error:
        return None  # check_manifest has said what is wrong with the file
    return judge_binding(bound, entries, configured)


# --------------------------------------------------------------------------- gallery


@dataclass
class GalleryObservation:
    """What a probe saw on the wire besides the answers: the token scope and the server's Date."""

    scope: tuple[str, ...] | None = None
    server_time: float | None = None


class GalleryProbe(Protocol):
    """A gallery to probe: search raises imgsync's GalleryError on any error answer."""

    observed: GalleryObservation

    def search(self, library: str, image: bytes) -> None: ...


def probe_image(library: str) -> bytes:
    """A small valid picture for `library` (its minimum side, a gradient with noise so it has features)."""
    from PIL import Image, ImageChops

    side = max(LIBRARIES[library].min_side, 64)
    gradient = Image.linear_gradient("L").resize((side, side))
    noise = Image.effect_noise((side, side), 40)
    rgb = Image.merge("RGB", (gradient, noise, ImageChops.invert(gradient)))
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def gallery_findings(
    probe: GalleryProbe,
    libraries: Sequence[str],
    endpoint: str,
    *,
    clock: Clock = SYSTEM_CLOCK,
    image_for: Callable[[str], bytes] = probe_image,
) -> list[Finding]:
    """gallery, token and one library finding per library, from a search in each (first one first)."""
    findings: list[Finding] = []
    outcomes: list[tuple[str, GalleryError | None]] = []
    for library in libraries:
        try:
            probe.search(library, image_for(library))
            outcomes.append((library, None))
        except GalleryError as e:
            outcomes.append((library, e))
            if not isinstance(e, GalleryPermissionError | GalleryRequestError):
                break  # unreachable, key refused or quota: every other library would say the same
    first = outcomes[0][1] if outcomes else None
    if isinstance(first, GalleryUnavailableError):
        return [
            fail(
                "gallery",
                f"{endpoint} did not answer: {first}",
                "check gallery.endpoint and the network (or run again later if the gallery is down)",
                EXIT_UNAVAILABLE,
            )
        ]
    findings.append(ok("gallery", f"{endpoint} answers"))
    if isinstance(first, GalleryAuthError) and not isinstance(first, GalleryPermissionError):
        findings.append(fail("token", str(first), _auth_fix(first), EXIT_AUTH))
        return findings
    if isinstance(first, GalleryQuotaError):
        findings.append(
            fail("quota", str(first), "wait for the quota to reset, or buy more in the console", EXIT_QUOTA)
        )
        return findings
    findings.append(check_token_scope(probe.observed.scope, libraries))
    for library, error in outcomes:
        findings.append(library_finding(library, error))
    findings.append(check_clock(probe.observed.server_time, clock.time()))
    return findings


def _auth_fix(error: GalleryAuthError) -> str:
    if error.code == "invalid_client":
        return (
            "check IMGSYNC_API_KEY / IMGSYNC_SECRET_KEY (or [gallery] api_key / secret_key): copy both "
            "again from the application's page in the Baidu AI console"
        )
    return "check the API key and secret key; they must be an AI application's keys with image search enabled"


def check_token_scope(scope: Sequence[str] | None, libraries: Iterable[str]) -> Finding:
    """brain_all_scope is required (else the gallery would refuse the token; the client already raises
    on that). Per-library scopes (brain_realtime_<library>) are seen on real tokens but their names for
    picturebook and materiel are unconfirmed, so a missing one is only a warning, and only when the token
    lists some brain_realtime_* scope at all; the library check below is the authority."""
    if scope is None:
        return ok("token", "granted (scope not seen)")
    if AI_APP_SCOPE not in scope:
        return fail(
            "token",
            f"the token's scope lacks {AI_APP_SCOPE}: the key is a Baidu Cloud (BCE) user's, not an AI application's",
            "create an application with image search in the Baidu AI console and use its API Key and Secret Key",
            EXIT_AUTH,
        )
    realtime = {s for s in scope if s.startswith("brain_realtime_")}
    missing = [lib for lib in libraries if realtime and f"brain_realtime_{lib}" not in realtime]
    if missing:
        return warn(
            "token",
            f"granted with {AI_APP_SCOPE}, but its scope lists no brain_realtime_ scope for {', '.join(missing)}",
            "if the library check below fails, enable that image-search service for the application",
        )
    return ok("token", f"granted with {AI_APP_SCOPE}")


def library_finding(library: str, error: GalleryError | None) -> Finding:
    check = f"library {library}"
    if error is None:
        return ok(check, "enabled (a search was answered)")
    if isinstance(error, GalleryPermissionError):
        if error.code == 216017:
            why = "the library has not been created for this account (216017 not initialized)"
            fix = f"apply for the {library} library (申请建库) in the Baidu AI console's image search page"
        else:
            why = f"this application may not use the {library} library ({error.code} no permission)"
            fix = f"enable the {library} image-search service for the application in the Baidu AI console"
        return fail(check, why, f"{fix}, or choose a library the account has", EXIT_AUTH)
    if isinstance(error, GalleryRequestError):
        # The library answered: it refused our probe image, which says nothing against the library.
        return ok(check, f"enabled (it answered: {error})")
    return warn(check, f"could not tell: {error}", "run `imgsync doctor` again later")


def parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def check_clock(server_time: float | None, local_time: float) -> Finding:
    if server_time is None:
        return ok("clock", "not compared: the gallery sent no Date header")
    skew = local_time - server_time
    # The Date header has 1 s resolution and the answer took some time: report whole seconds.
    if abs(skew) > CLOCK_SKEW_WARN_S:
        side = "ahead of" if skew > 0 else "behind"
        return warn(
            "clock",
            f"this machine's clock is {abs(skew):.0f} s {side} the gallery's",
            "turn on time synchronisation (timedatectl set-ntp true, or your OS's equivalent)",
        )
    return ok("clock", f"within {max(abs(skew), 1):.0f} s of the gallery's")


# --------------------------------------------------------------------------- inotify


def read_watch_limit(path: Path = INOTIFY_LIMIT_FILE) -> int | None:
    """fs.inotify.max_user_watches, or None where there is no such thing (not Linux)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def count_directories(folder: Path, *, follow_symlinks: bool = False, stop_after: int | None = None) -> int:
    """Directories under `folder`, itself included: one inotify watch each. Unreadable ones count
    (the watcher tries them too); counting stops after `stop_after` (enough to judge)."""
    count = 0
    stack = [folder]
    seen: set[tuple[int, int]] = set()
    while stack:
        current = stack.pop()
        count += 1
        if stop_after is not None and count > stop_after:
            break
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        if not entry.is_dir(follow_symlinks=follow_symlinks):
                            continue
                        if follow_symlinks:  # a symlink loop must not count forever
                            st = entry.stat()
                            key = (st.st_dev, st.st_ino)
                            if key in seen:
                                continue
                            seen.add(key)
                    except OSError:
                        continue
                    stack.append(Path(entry.path))
        except OSError:
            continue
    return count


def check_inotify(config: Config, limit: int | None) -> Finding:
    if limit is None:
        return ok("inotify", "no inotify limit on this system (not Linux); nothing to check")
    folders = [m for m in config.mirrors if m.folder.is_dir()]
    needed = sum(count_directories(m.folder, follow_symlinks=m.follow_symlinks, stop_after=limit) for m in folders)
    if needed > limit:
        return warn(
            "inotify",
            f"`imgsync watch` needs {needed}+ watches (one per directory), above fs.inotify.max_user_watches = {limit}",
            f"raise it: sudo sysctl fs.inotify.max_user_watches={_suggest(needed)} (and set it in "
            "/etc/sysctl.d/ to keep it); `imgsync reconcile` is not affected",
        )
    if needed > INOTIFY_SHARE_WARN * limit:
        return warn(
            "inotify",
            f"`imgsync watch` needs {needed} of the {limit} inotify watches this user may "
            "have; other programs draw on the same limit",
            f"consider raising it: sudo sysctl fs.inotify.max_user_watches={_suggest(needed)}",
        )
    return ok("inotify", f"{needed} director{'ies' if needed != 1 else 'y'} to watch, limit {limit}")


def _suggest(needed: int) -> int:
    """Room for growth and other programs: four times the need, rounded up to a power of two."""
    return 1 << max(needed * 4 - 1, 1).bit_length()


# --------------------------------------------------------------------------- the whole run


GalleryOpener = Callable[[Config], AbstractContextManager["tuple[GalleryProbe, str] | Finding"]]


def former_gallery_dir() -> Path:
    """Where `imgsync gallery serve` kept its data by default before the embedded gallery and it shared
    <state dir>/gallery."""
    import platformdirs

    return Path(platformdirs.user_data_dir("imgsync")) / "gallery"


def check_former_gallery_dir(config: Config, former: Path) -> Finding | None:
    """A gallery left where an earlier imgsync's `gallery serve` kept it by default: a `gallery serve`
    without --data now starts an empty one elsewhere, so say where the old one is."""
    from imgsync.embedded import local_data_dir

    current = local_data_dir(config)
    try:
        left = former.is_dir() and any(former.iterdir()) and former.resolve() != current.resolve()
    except OSError:
        return None
    if not left:
        return None
    return warn(
        "gallery data",
        f"{former} holds a local gallery that an earlier imgsync's `gallery serve` kept there by default; "
        f"the default is now {current}",
        f"serve it with `imgsync gallery serve --data {former}`, or move its files to {current} while no imgsync runs",
    )


def run_doctor(
    load: Callable[[], Config],
    *,
    open_gallery: GalleryOpener,
    clock: Clock = SYSTEM_CLOCK,
    watch_limit: Callable[[], int | None] = read_watch_limit,
    scandir: ScanDir = _scandir,
    schema: Callable[[], SchemaInfo] = schema_info,
    former_gallery: Callable[[], Path] = former_gallery_dir,
) -> DoctorReport:
    """Every check, in order. `open_gallery(config)` yields (probe, endpoint shown to the user), or a
    Finding when there is nothing to probe (why)."""
    report = DoctorReport()
    finding, config = check_config(load)
    report.findings.append(finding)
    if config is None:
        return report
    report.mirrors = len(config.mirrors)
    exposed = check_secret_file(config.source)
    if exposed is not None:
        report.findings.append(exposed)
    for mirror in config.mirrors:
        report.findings.append(check_folder(mirror.name, mirror.folder, scandir=scandir))
    report.findings.append(check_state_dir(config.state_dir))
    manifest = check_manifest(config.state_dir / MANIFEST_NAME, schema())
    report.findings.append(manifest)
    if manifest.level == "ok" and (config.state_dir / MANIFEST_NAME).exists():
        report.findings.extend(check_guards(config.mirrors, config.state_dir / MANIFEST_NAME))
    from imgsync.embedded import gallery_identity

    binding = check_binding(config.state_dir / MANIFEST_NAME, gallery_identity(config))
    if binding is not None:
        report.findings.append(binding)
    keys = check_gallery_keys(config)
    if keys is not None:
        report.findings.append(keys)
    else:
        libraries = list(dict.fromkeys(m.library for m in config.mirrors)) or [DEFAULT_LIBRARY]
        with open_gallery(config) as opened:
            if isinstance(opened, Finding):
                report.findings.append(opened)
            else:
                probe, endpoint = opened
                report.findings.extend(gallery_findings(probe, libraries, endpoint, clock=clock))
    former = check_former_gallery_dir(config, former_gallery())
    if former is not None:
        report.findings.append(former)
    report.findings.append(check_inotify(config, watch_limit()))
    return report


# --------------------------------------------------------------------------- the real gallery probe


class HttpGalleryProbe:
    """A GalleryClient (imgsync's one wire implementation) whose requests.Session notes the token
    answer's scope and the server's Date header on the way past. Nothing else of the token answer is
    kept (it holds the token)."""

    def __init__(
        self,
        endpoint: str,
        api_key: str,
        secret_key: str,
        *,
        qps: float | None = None,
        timeout: tuple[float, float] = (5.0, 20.0),
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        import requests

        from imgsync.gallery.client import GalleryClient
        from imgsync.gallery.retry import RetryPolicy

        self.observed = GalleryObservation()
        self._session = requests.Session()
        self._session.hooks["response"].append(self._observe)
        # Two tries: a preflight should say "unreachable" within seconds, not back off for minutes.
        self._client = GalleryClient(
            endpoint,
            api_key,
            secret_key,
            qps=qps,
            session=self._session,
            timeout=timeout,
            retry=RetryPolicy(attempts=2, base=0.5),
            clock=clock,
        )

    def _observe(self, response: Any, *args: Any, **kwargs: Any) -> None:
        when = parse_http_date(response.headers.get("Date"))
        if when is not None:
            self.observed.server_time = when
        if urlsplit(response.url).path == TOKEN_PATH:
            try:
                scope = response.json().get("scope")
            except (ValueError, AttributeError):
                return
            if isinstance(scope, str):
                self.observed.scope = tuple(scope.split())

    def search(self, library: str, image: bytes) -> None:
        self._client.search(library, image=image, rn=1)

    def close(self) -> None:
        self._client.close()
        self._session.close()


@contextmanager
def open_configured_gallery(
    config: Config, *, clock: Clock = SYSTEM_CLOCK
) -> Iterator[tuple[GalleryProbe, str] | Finding]:
    """The configured gallery as a probe. The local gallery is probed only when its data dir exists
    (doctor does not create it); a fresh one has every library and nothing to go wrong yet. Without the
    gallery extra installed it is a failure (exit 2, as a sync would end)."""
    g = config.gallery
    if not g.is_local:
        assert g.api_key and g.secret_key, "check_gallery_keys runs first"
        probe = HttpGalleryProbe(g.endpoint, g.api_key, g.secret_key, qps=g.qps, clock=clock)
        try:
            yield probe, g.endpoint
        finally:
            probe.close()
        return
    from imgsync.embedded import local_data_dir
    from imgsync.gallery.extra import ELSEWHERE_HINT, INSTALL_HINT, gallery_missing, missing_gallery_modules

    data_dir = local_data_dir(config)
    missing = missing_gallery_modules()
    if missing:  # a sync would stop with GalleryNotInstalledError (exit 2)
        yield fail(
            "gallery",
            f'gallery.endpoint is "local" (the default), but the local gallery is {gallery_missing(missing)}',
            f"{INSTALL_HINT}, {ELSEWHERE_HINT}",
            EXIT_CONFIG,
        )
        return
    if not data_dir.is_dir():
        yield ok("gallery", f"local gallery: will be created in {data_dir} on the first run")
        return
    from imgsync.localgallery.auth import load_or_create_key
    from imgsync.localgallery.engine import DataDirInUseError
    from imgsync.localgallery.server import serving_url, start_in_thread

    try:
        running = start_in_thread(data_dir, host="127.0.0.1", port=0)
    except DataDirInUseError as e:
        # `imgsync watch` (or a reconcile, or `gallery serve`) holds it: probe it where it is served.
        url = serving_url(data_dir)
        if url is None:
            yield fail(
                "gallery",
                f"{e}, which does not serve it over HTTP",
                "run doctor again when it is done",
                EXIT_UNAVAILABLE,
            )
            return
        (api_key, secret_key), _ = load_or_create_key(data_dir)
        held = HttpGalleryProbe(url, api_key, secret_key, clock=clock)
        try:
            yield held, f"local gallery ({data_dir}, served by another imgsync at {url})"
        finally:
            held.close()
        return
    except OSError as e:
        yield fail(
            "gallery",
            f"the local gallery in {data_dir} cannot start ({e.strerror or e})",
            f"check that this user can read and write {data_dir}",
            EXIT_UNAVAILABLE,
        )
        return
    probe = HttpGalleryProbe(running.url, running.api_key, running.secret_key, clock=clock)
    try:
        yield probe, f"local gallery ({data_dir})"
    finally:
        probe.close()
        running.stop()
