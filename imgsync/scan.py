"""Walk a mirror's folder: which image files are there, what their content is, and whether the gallery
would take them. Filesystem reads and Pillow; the decisions (`is_included`, `can_reuse`) are pure.

The walk is iterative os.scandir: one stat per candidate file, nothing else when the manifest already
knows the file (a no-op scan of 100k files costs about what `find -printf '%s %T@'` costs). The no-op
reconcile's digest walk of a big folder (stat_digest) is shared with a forked child, on a second core.

Which files (MirrorConfig.include / exclude, fnmatch, case-insensitive so IMG.JPG matches *.jpg):
a pattern without '/' matches a file or directory *name*, one with '/' the relative POSIX path.
An excluded directory prunes its whole subtree; include applies to files only. Symlinks are skipped
unless follow_symlinks; then a directory already on the current path (same st_dev, st_ino) is skipped,
which breaks loops (a directory reached through two different links is listed under both paths, as
two paths of the same content). FIFOs, sockets and devices are never opened. File names that are not
valid UTF-8 keep their bytes as surrogate escapes (os.fsdecode), so the path opens the same file again.

Change detection (git's racy-timestamp rule): a file whose size, mtime_ns and inode match the manifest,
and whose hash was taken at least SETTLE_NS after its mtime, keeps its hash and verdict without being
opened. A hash taken sooner may predate a second write within the same timestamp tick, so it is redone.
Otherwise the file is read whole, hashed (sha256) and judged:

  stat before and after the read differ      → unstable (retried next run; never uploaded half-written)
  modified less than SETTLE_NS before now    → unstable, hashed (re-checked next run: it may still be
  (or up to FUTURE_GRACE_NS after it)          being written; the watch daemon relies on this)
  vanished (before or while being read)      → absent: not an error
  cannot be opened (permission, I/O error)   → error, with the reason; the scan stays complete
  larger than MAX_READ_BYTES                 → rejected from its size, never read into memory
  otherwise                                  → validate.judge_image: ok or rejected (fit="shrink" does
                                               a trial re-encode, so "ok" is a promise)

A directory that cannot be listed makes the scan incomplete (`complete=False`, with the reason in
`errors`): the reconciler must not delete entries for files it merely could not see.
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import gc
import hashlib
import os
import re
import stat
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from imgsync import forked
from imgsync.config import MirrorConfig
from imgsync.model import KnownFile, ScannedFile, Verdict

# Pillow (validate, shrink) is imported by judge_bytes, the first time a file is judged: a walk that
# only stats (stat_digest, the no-op reconcile) never loads it.

#: Timestamp granularity we allow for (FAT has 2 s) and the age a file must have before it is trusted.
SETTLE_NS = 2_000_000_000
#: An mtime up to this far ahead of now counts as "just written" (a write during the scan, a server's
#: clock slightly ahead); further ahead it is a wrong clock, and waiting for it would mean never uploading.
#: (Such files are re-read on every run: their hash can never be trusted by the racy rule.)
FUTURE_GRACE_NS = 3600 * 10**9
#: Files larger than this are rejected from their size without being read (even shrinking needs a decode).
MAX_READ_BYTES = 256 * 1024 * 1024

#: Reads a file's bytes given its full path (the injectable seam for fault tests).
ReadFile = Callable[[str], bytes]


@dataclass(frozen=True, slots=True)
class ScanResult:
    files: dict[str, ScannedFile]
    #: (relative directory path, reason) for directories that could not be listed
    errors: list[tuple[str, str]] = field(default_factory=list)
    #: False when some directory could not be listed: absent paths may only be unseen
    complete: bool = True
    #: A scoped scan: the paths found under the scope (the rest were carried over from the manifest)
    examined: list[str] | None = None
    #: A scoped scan: the normalised scope (known paths under it that were not found are gone)
    scope: frozenset[str] | None = None
    #: (path, note) to tell at -v: names the include patterns match that are not image files (FIFOs,
    #: directories), and what judging a file noted (Pillow's warnings, a shrink)
    notes: list[tuple[str, str]] = field(default_factory=list)


def read_file(path: str) -> bytes:
    """The whole file. Opened non-blocking so a FIFO swapped in after the stat cannot hang the scan."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file (replaced after the scan listed it?)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- pure decisions


class PathFilter:
    """include/exclude globs, compiled once into two case-insensitive regexes each (names, paths)."""

    def __init__(self, include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
        self._inc_name, self._inc_path = _compile(include)
        self._exc_name, self._exc_path = _compile(exclude)
        self._has_path_patterns = any("/" in p for p in (*include, *exclude))
        self._include, self._exclude = include, exclude

    def excludes(self, name: str, path: str) -> bool:
        return bool(self._exc_name(name) or self._exc_path(path))

    def includes_file(self, name: str, path: str) -> bool:
        return bool(self._inc_name(name) or self._inc_path(path)) and not self.excludes(name, path)

    def name_rules(self) -> NameRules | None:
        """The include/exclude lists as NameRules when no pattern has a '/' (the usual case), else None."""
        return None if self._has_path_patterns else _name_rules(self._include, self._exclude)

    def file_matcher(self) -> Callable[[str, str], object]:
        """includes_file, faster: when no pattern has a '/' (the usual case) only the name is tested,
        and "*.jpg" / ".*" style patterns become str.endswith / str.startswith (half a regex's cost)."""
        if self._has_path_patterns:
            return self.includes_file
        return _name_filter(self._include, self._exclude)


def _compile(patterns: tuple[str, ...]) -> tuple[Callable[[str], object], Callable[[str], object]]:
    def one(pats: list[str]) -> Callable[[str], object]:
        if not pats:
            return lambda s: None
        return re.compile("|".join(fnmatch.translate(p) for p in pats), re.IGNORECASE).match

    return one([p for p in patterns if "/" not in p]), one([p.strip("/") for p in patterns if "/" in p])


_WILD = re.compile(r"[*?\[\]]")


def _split(patterns: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...], Callable[[str], object] | None]:
    """("*.jpg", ".*", "a?c") → suffixes (".jpg",), prefixes (".",), a regex for the rest; lower-cased."""
    suffixes, prefixes, rest = [], [], []
    for p in patterns:
        if p.startswith("*") and not _WILD.search(p[1:]):
            suffixes.append(p[1:].lower())
        elif p.endswith("*") and not _WILD.search(p[:-1]):
            prefixes.append(p[:-1].lower())
        else:
            rest.append(fnmatch.translate(p))
    rx = re.compile("|".join(rest), re.IGNORECASE).match if rest else None
    return tuple(suffixes), tuple(prefixes), rx


class NameRules(NamedTuple):
    """A name-only include/exclude list as suffixes, prefixes and a regex for the rest, each side; the
    walk tests them inline (a call per file is ~10 % of a no-op walk). Lower-cased, like the names."""

    inc_sfx: tuple[str, ...]
    inc_pfx: tuple[str, ...]
    inc_rx: Callable[[str], object] | None
    exc_sfx: tuple[str, ...]
    exc_pfx: tuple[str, ...]
    exc_rx: Callable[[str], object] | None

    def wanted(self, name: str) -> bool:
        low = name.lower()
        if not (low.endswith(self.inc_sfx) or low.startswith(self.inc_pfx) or (self.inc_rx and self.inc_rx(name))):
            return False
        return not (low.endswith(self.exc_sfx) or low.startswith(self.exc_pfx) or (self.exc_rx and self.exc_rx(name)))


def _name_rules(include: tuple[str, ...], exclude: tuple[str, ...]) -> NameRules:
    isfx, ipfx, irx = _split(include)
    esfx, epfx, erx = _split(exclude)
    if not ipfx and irx is None:
        # Only suffixes let a name in: an exclude suffix that can end no such name (".tmp" after ".jpg")
        # can never match, and testing it for every file is wasted (the default list is all of them).
        esfx = tuple(x for x in esfx if any(s.endswith(x) or x.endswith(s) for s in isfx))
    return NameRules(isfx, ipfx, irx, esfx, epfx, erx)


def _name_filter(include: tuple[str, ...], exclude: tuple[str, ...]) -> Callable[[str, str], bool]:
    wanted = _name_rules(include, exclude).wanted

    def by_name(name: str, path: str) -> bool:
        return wanted(name)

    return by_name


def is_included(path: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Would the scan list the file at relative POSIX `path`? (Directories on the way are checked too.)"""
    f = PathFilter(include, exclude)
    parts = path.split("/")
    for i in range(len(parts) - 1):
        if f.excludes(parts[i], "/".join(parts[: i + 1])):
            return False
    return f.includes_file(parts[-1], path)


def can_reuse(known: KnownFile | None, size: int, mtime_ns: int, inode: int) -> bool:
    """May the scan keep `known`'s hash and verdict without opening the file?"""
    return (
        known is not None
        and known.size == size
        and known.mtime_ns == mtime_ns
        and known.inode == inode
        and is_trusted(known)
    )


def is_trusted(f: KnownFile | ScannedFile) -> bool:
    """Is this record final for as long as the file's stat stays the same: a verdict that needs no
    retry, and (the racy-mtime rule) a hash taken long enough after the last write?"""
    return (
        f.verdict == "rejected" or (f.verdict == "ok" and f.content_hash is not None)
    ) and f.hashed_at_ns - f.mtime_ns >= SETTLE_NS


# --------------------------------------------------------------------------- the walk


def scan_folder(
    root: Path | str,
    mirror: MirrorConfig,
    known: Mapping[str, KnownFile],
    *,
    now_ns: int,
    read: ReadFile = read_file,
    scope: Collection[str] | None = None,
    min_age_ns: int = SETTLE_NS,
    on_examined: Callable[[ScannedFile], None] | None = None,
) -> ScanResult:
    """Every included file under `root` as a ScannedFile keyed by relative POSIX path (see module doc).

    scope: relative paths (files or directories) to look at; every other known path is carried over
    from `known` as unchanged without touching the disk (the watch daemon's cheap rescan of what its
    events marked dirty). None or a scope containing "" / "." is the whole folder.
    min_age_ns: a file modified more recently than this is "unstable" (retried later). The one-shot
    reconcile waits SETTLE_NS; the daemon, which has already seen the file sit quiet, may pass less.
    on_examined: called with each file read and judged in this walk as soon as it is (not with files
    reused from `known`): the pipeline's early adds; what it raises ends the walk.
    """
    walker = _Walker(mirror, known, now_ns, read, min_age_ns)
    walker.on_examined = on_examined
    roots = normalise_scope(scope)
    with _gc_paused():
        if roots is None:
            walker.walk(os.fspath(root))
        else:
            for k in known.values():
                if not _under_any(k.path, roots):
                    walker.files[k.path] = k.as_scanned()
            for rel in sorted(roots):
                walker.walk_scoped(os.fspath(root), rel)
    examined = None if roots is None else [p for p in walker.files if _under_any(p, roots)]
    return ScanResult(walker.files, walker.errors, not walker.errors, examined, roots, walker.notes)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """A walk allocates one small acyclic object per file while `known` holds as many more: the cyclic
    GC would traverse all of them several times for nothing (~15 % of a no-op scan)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


#: A folder of at least this many files is walked by two processes when it can be (see stat_digest):
#: below it, the fork (a few ms) costs about what the second core saves.
SPLIT_WALK_FILES = 5000
#: Directories found (breadth first) before the two processes share them out: enough that uneven
#: subtrees even out and a process that starts late (a busy machine) just takes fewer.
_SPLIT_UNITS = 64


def stat_digest(root: Path | str, mirror: MirrorConfig, *, expect_files: int = 0) -> str | None:
    """A digest of every included file's (path, size, mtime_ns, inode), from one stat walk that reads
    no file and builds no record; None if the walk met an error. Equal to `digest_of` the files a scan
    listed when none of them changed since: the no-op reconcile's whole cost (see pipeline).

    With `expect_files` >= SPLIT_WALK_FILES (the count the last clean run saw) and a second core, a
    forked child shares the walk (imgsync.forked): the first directories found, breadth first, are
    units of work that the two processes take one at a time from a shared queue, each walking a unit's
    whole subtree. The digest is a sum over directories, so the two parts add up to the same value.
    Threads cannot share this work: the GIL changes hands at every stat."""
    walker = _Walker(mirror, {}, 0, read_file)
    walker.digest = 0
    with _gc_paused():
        stack = walker.start(os.fspath(root))
        if expect_files >= SPLIT_WALK_FILES:
            units = collections.deque(stack)
            while units and len(units) < _SPLIT_UNITS:
                found: list[_Dir] = []
                walker.visit(units.popleft(), found)
                units.extend(found)
            stack = list(units)
            if len(stack) >= 2:
                return _shared_digest(walker, stack)
        walker.walk_from(stack)
    return walker.digest_value()


def _shared_digest(walker: _Walker, units: list[_Dir]) -> str | None:
    """stat_digest's walk of `units` by this process and a forked child, each taking the next unit
    from a queue both read; the walk alone where this process cannot fork."""
    n = min(len(units), forked.Tickets.MAX)  # ticket i: units i, i + n, i + 2n, ...
    with forked.Tickets(n) as tickets:

        def walk_my_share() -> None:
            while (i := tickets.take()) is not None:
                walker.walk_from(units[i::n])

        def their_share() -> tuple[int, int, bool]:
            walker.count = walker.digest = 0
            walk_my_share()
            return walker.count, walker.digest % 2**64, not (walker.errors or walker.dirty)

        child = forked.start(their_share)
        if child is None:
            walk_my_share()
            return walker.digest_value()
        with child:
            walk_my_share()
            try:
                count, digest, clean = child.result()
            except forked.ChildFailed:
                return None  # unknown: the caller does the full scan
    walker.count += count
    walker.digest = (walker.digest or 0) + digest
    walker.dirty |= not clean
    return walker.digest_value()


def digest_of(files: Collection[ScannedFile]) -> str:
    """stat_digest's value for a folder holding exactly `files`."""
    by_dir: dict[str, list[str]] = {}
    for f in files:
        prefix, _, name = f.path.rpartition("/")
        by_dir.setdefault(prefix + "/" if prefix else "", []).append(f"{name}/{f.size}/{f.mtime_ns}/{f.inode}")
    total = sum(directory_key(prefix, rows) for prefix, rows in by_dir.items())
    return f"{len(files)}:{total % 2**64:016x}"


def directory_key(prefix: str, rows: list[str]) -> int:
    """64 bits of BLAKE2b over one directory's sorted "name/size/mtime_ns/inode" rows, NUL-separated (a
    name holds neither "/" nor NUL, so the text is unambiguous). Summed over directories, they make an
    order-free folder digest; one hash per directory, not per file, keeps the walk close to a bare stat
    walk. (Sorts `rows` in place.)"""
    rows.sort()
    text = prefix + "\0" + "\0".join(rows)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")


def normalise_scope(scope: Collection[str] | None) -> frozenset[str] | None:
    """Scope paths without "./", duplicate slashes or paths under another scope path; None = everything."""
    if scope is None:
        return None
    clean = set()
    for p in scope:
        parts = [x for x in p.split("/") if x not in ("", ".")]
        if not parts:
            return None
        if ".." in parts:
            raise ValueError(f"scope path {p!r} leaves the folder")
        clean.add("/".join(parts))
    return frozenset(p for p in clean if not any(_under(p, q) for q in clean if q != p))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def _under_any(path: str, roots: frozenset[str]) -> bool:
    # Check each ancestor (few) rather than each root (may be thousands after a burst of events).
    if path in roots:
        return True
    i = path.find("/")
    while i != -1:
        if path[:i] in roots:
            return True
        i = path.find("/", i + 1)
    return False


#: A directory waiting to be walked: (full path, relative prefix ending in "/" or "", ids (st_dev,
#: st_ino) of the directories on the path to it, to skip a link back up the tree)
_Dir = tuple[str, str, frozenset[tuple[int, int]]]


class _Walker:
    def __init__(
        self,
        mirror: MirrorConfig,
        known: Mapping[str, KnownFile],
        now_ns: int,
        read: ReadFile,
        min_age_ns: int = SETTLE_NS,
    ) -> None:
        self.mirror = mirror
        self.min_age_ns = min_age_ns
        self.known = known
        self.now_ns = now_ns
        self.read = read
        self.filter = PathFilter(mirror.include, mirror.exclude)
        self.follow = mirror.follow_symlinks
        self.files: dict[str, ScannedFile] = {}
        self.errors: list[tuple[str, str]] = []
        #: digest mode (stat_digest): sum of per-file keys instead of ScannedFiles; None otherwise
        self.digest: int | None = None
        self.count = 0
        self.dirty = False  # digest mode: met something a settled folder cannot hold
        #: (path, note) to tell at -v (see ScanResult.notes)
        self.notes: list[tuple[str, str]] = []
        self.on_examined: Callable[[ScannedFile], None] | None = None

    def walk(self, root: str) -> None:
        self.walk_from(self.start(root))

    def digest_value(self) -> str | None:
        """Digest mode's result: "<files>:<64-bit sum as hex>", or None if the walk met a problem."""
        if self.errors or self.dirty or self.digest is None:
            return None
        return f"{self.count}:{self.digest % 2**64:016x}"

    def start(self, root: str) -> list[_Dir]:
        """The walk's first stack: the root directory, or nothing if it cannot be read (an error)."""
        try:
            top = os.stat(root)
        except OSError as e:
            self.errors.append((".", _why(e)))
            return []
        return [(root, "", frozenset({(top.st_dev, top.st_ino)}))]

    def walk_from(self, stack: list[_Dir]) -> None:
        """Walks the directories on `stack` and those found under them, depth first."""
        while stack:
            self.visit(stack.pop(), stack)

    def visit(self, directory: _Dir, found: list[_Dir]) -> None:
        """Lists one directory: its files are examined (or digested), its subdirectories appended to `found`."""
        full, prefix, ancestors = directory
        try:
            # Listing through a directory fd makes each entry's stat an fstatat(fd, name): the
            # kernel does not walk the whole path again for every file (~15 % of a no-op scan).
            fd = os.open(full, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
            try:
                if self.digest is None:
                    self._list(fd, full, prefix, ancestors, found)
                else:
                    self._digest_list(fd, full, prefix, ancestors, found)
            finally:
                os.close(fd)
        except OSError as e:  # unreadable or vanished mid-scan: absent files here are unseen, not gone
            self.errors.append((prefix.rstrip("/") or ".", _why(e)))

    def walk_scoped(self, root: str, rel: str) -> None:
        """One scope path: a file (examined alone) or a directory (walked), if the mirror includes it.
        Each directory on the way must be one the full walk would enter (not excluded, no symlink unless
        followed), so a scoped scan never sees more than a full one."""
        parts = rel.split("/")
        ancestors: set[tuple[int, int]] = set()
        full = root
        for i, name in enumerate(parts):
            try:
                st = os.stat(full, follow_symlinks=self.follow or i == 0)
            except FileNotFoundError:
                return  # gone: the known paths under it are absent from the result
            except OSError as e:
                self.errors.append(("/".join(parts[:i]) or ".", _why(e)))
                return
            if not stat.S_ISDIR(st.st_mode):
                return
            ancestors.add((st.st_dev, st.st_ino))
            if self.filter.excludes(name, "/".join(parts[: i + 1])):
                return
            full = f"{full}/{name}"
        try:
            st = os.stat(full, follow_symlinks=self.follow)
        except FileNotFoundError:
            return
        except OSError as e:  # this one path (a looping link, say): its own message, the scan stays complete
            self._unfollowable(parts[-1], rel, e)
            return
        if stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in ancestors:
                return
            self.walk_from([(full, rel + "/", frozenset(ancestors | {(st.st_dev, st.st_ino)}))])
        elif stat.S_ISREG(st.st_mode) and self.filter.file_matcher()(parts[-1], rel):
            k = self.known.get(rel)
            if k is not None and can_reuse(k, st.st_size, st.st_mtime_ns, st.st_ino):
                self.files[rel] = k.as_scanned()
                return
            scanned = self._examine(full, rel, st.st_size, st.st_mtime_ns, st.st_ino)
            if scanned is not None:
                self.files[rel] = scanned

    def _list(
        self,
        fd: int,
        full: str,
        prefix: str,
        ancestors: frozenset[tuple[int, int]],
        stack: list[_Dir],
    ) -> None:
        """One directory. The hot loop of a no-op scan: one stat and one dict lookup per file, no calls
        that are not needed (it is deliberately inlined; see benchmarks/bench_scan.py)."""
        follow, files, known_get = self.follow, self.files, self.known.get
        excludes, wanted = self.filter.excludes, self.filter.file_matcher()
        with os.scandir(fd) as it:
            for entry in it:
                name = entry.name
                try:
                    is_dir = entry.is_dir(follow_symlinks=follow)
                except OSError as e:  # a link that loops or cannot be followed: this entry alone
                    self._unfollowable(name, prefix + name, e)
                    continue
                if is_dir:
                    if excludes(name, prefix + name):
                        continue
                    if wanted(name, prefix + name):
                        self.notes.append((prefix + name, "a directory, not an image file (its files are scanned)"))
                    try:
                        st = entry.stat(follow_symlinks=follow)
                    except OSError:
                        continue  # vanished (or a link that broke) between listing and stat
                    key = (st.st_dev, st.st_ino)
                    if key not in ancestors:  # else a symlink (or bind mount) back up the tree
                        stack.append((f"{full}/{name}", f"{prefix}{name}/", ancestors | {key}))
                    continue
                path = prefix + name
                if not wanted(name, path):
                    continue
                try:
                    is_file = entry.is_file(follow_symlinks=follow)
                except OSError as e:
                    self._unfollowable(name, path, e)
                    continue
                if not is_file:
                    if follow and entry.is_symlink() and not os.path.exists(f"{full}/{name}"):
                        self.dirty = True
                        files[path] = ScannedFile(
                            path, 0, 0, 0, None, "error", "broken symlink (its target does not exist)"
                        )
                    else:  # FIFOs, sockets and devices are not images: never opened
                        self.notes.append((path, _kind_of(entry, follow)))
                    continue
                try:
                    st = entry.stat(follow_symlinks=follow)
                except FileNotFoundError:
                    continue
                except OSError as e:
                    self.dirty = True
                    files[path] = ScannedFile(path, 0, 0, 0, None, "error", f"cannot stat: {_why(e)}")
                    continue
                size, mtime, inode = st.st_size, st.st_mtime_ns, st.st_ino
                k = known_get(path)
                # can_reuse(k, size, mtime, inode), inlined: a call per file is ~10 % of a no-op scan
                if (
                    k is not None
                    and k.size == size
                    and k.mtime_ns == mtime
                    and k.inode == inode
                    and k.hashed_at_ns - mtime >= SETTLE_NS
                    and (k.verdict == "rejected" or (k.verdict == "ok" and k.content_hash is not None))
                ):
                    files[path] = ScannedFile(
                        path, size, mtime, inode, k.content_hash, k.verdict, k.reason, k.hashed_at_ns
                    )
                    continue
                scanned = self._examine(f"{full}/{name}", path, size, mtime, inode)
                if scanned is not None:
                    files[path] = scanned

    def _digest_list(
        self,
        fd: int,
        full: str,
        prefix: str,
        ancestors: frozenset[tuple[int, int]],
        stack: list[_Dir],
    ) -> None:
        """One directory for stat_digest: _list's choices (the same files, errors and directories), but
        only a "name/size/mtime_ns/inode" row per file. The whole of a no-op reconcile's per-file work, so
        the name patterns are tested inline and no path string is built unless a pattern needs it."""
        follow, excludes = self.follow, self.filter.excludes
        rules = self.filter.name_rules()
        includes_file = self.filter.includes_file
        if rules is not None:
            isfx, ipfx, irx, esfx, epfx, erx = rules
        rows: list[str] = []
        add = rows.append
        with os.scandir(fd) as it:
            for entry in it:
                name = entry.name
                try:
                    is_dir = entry.is_dir(follow_symlinks=follow)
                except OSError as e:
                    self._unfollowable(name, prefix + name, e)
                    continue
                if is_dir:
                    if excludes(name, prefix + name):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=follow)
                    except OSError:
                        continue
                    key = (st.st_dev, st.st_ino)
                    if key not in ancestors:
                        stack.append((f"{full}/{name}", f"{prefix}{name}/", ancestors | {key}))
                    continue
                if rules is None:
                    if not includes_file(name, prefix + name):
                        continue
                else:  # NameRules.wanted, inlined
                    low = name.lower()
                    if not (low.endswith(isfx) or low.startswith(ipfx) or (irx is not None and irx(name))):
                        continue
                    if low.endswith(esfx) or low.startswith(epfx) or (erx is not None and erx(name)):
                        continue
                try:
                    is_file = entry.is_file(follow_symlinks=follow)
                except OSError as e:
                    self._unfollowable(name, prefix + name, e)
                    continue
                if not is_file:
                    if follow and entry.is_symlink() and not os.path.exists(f"{full}/{name}"):
                        self.dirty = True  # a broken link: a settled folder holds none
                    continue
                try:
                    st = entry.stat(follow_symlinks=follow)
                except FileNotFoundError:
                    continue
                except OSError:
                    self.dirty = True
                    continue
                add(f"{name}/{st.st_size}/{st.st_mtime_ns}/{st.st_ino}")
        if rows:
            assert self.digest is not None  # digest mode
            self.digest += directory_key(prefix, rows)
            self.count += len(rows)

    def _unfollowable(self, name: str, path: str, e: OSError) -> None:
        """A symlink that loops (`ln -s x.jpg x.jpg`) or cannot be followed: its own message; the rest of
        its directory is scanned as usual."""
        if self.filter.file_matcher()(name, path):
            self.dirty = True
            self.files[path] = ScannedFile(path, 0, 0, 0, None, "error", f"cannot follow the link: {_why(e)}")

    def _examine(self, full: str, path: str, size: int, mtime: int, inode: int) -> ScannedFile | None:
        """Read, hash and judge one file; None if it vanished. With the GC running (see _gc_paused):
        Pillow's objects are its business."""
        paused = not gc.isenabled()
        if paused:
            gc.enable()
        try:
            scanned = self._read_and_judge(full, path, size, mtime, inode)
            if scanned is not None and self.on_examined is not None:
                self.on_examined(scanned)
            return scanned
        finally:
            if paused:
                gc.disable()

    def _read_and_judge(self, full: str, path: str, size: int, mtime: int, inode: int) -> ScannedFile | None:
        def result(verdict: Verdict, reason: str | None, digest: str | None = None) -> ScannedFile:
            return ScannedFile(path, size, mtime, inode, digest, verdict, reason, self.now_ns if digest else 0)

        if size > MAX_READ_BYTES:
            return result(
                "rejected",
                f"{size / 2**20:.0f} MB file: over the {MAX_READ_BYTES >> 20} MB imgsync "
                f"reads into memory (and far over the gallery's 4 MB base64 limit)",
            )
        try:
            data = self.read(full)
            after = os.stat(full, follow_symlinks=self.follow)
        except FileNotFoundError:
            return None
        except OSError as e:
            return result("error", f"cannot read: {_why(e)}")
        if (after.st_size, after.st_mtime_ns, after.st_ino) != (size, mtime, inode) or len(data) != size:
            return result("unstable", "changed while being read; will check again next run")
        digest = hashlib.sha256(data).hexdigest()
        if self.now_ns - self.min_age_ns < mtime < self.now_ns + FUTURE_GRACE_NS:
            return result(
                "unstable",
                f"modified less than {self.min_age_ns / 1e9:g} s ago (or its mtime is "
                f"ahead of this clock); will check again next run",
                digest,
            )
        verdict, reason = judge_bytes(data, self.mirror)
        if verdict == "ok" and reason:
            self.notes.append((path, reason))
        return result(verdict, reason, digest)


def judge_bytes(data: bytes, mirror: MirrorConfig) -> tuple[Verdict, str | None]:
    """("ok" | "rejected", reason or note) for a file's bytes under the mirror's library and fit."""
    from imgsync.shrink import ShrinkError, shrink_image
    from imgsync.validate import (
        REJECT_MAX_PIXELS,
        SHRINK_MAX_PIXELS,
        inspect_image,
        judge_image,
        needs_shrink,
    )

    shrinking = mirror.fit == "shrink"
    info = inspect_image(data, max_pixels=SHRINK_MAX_PIXELS if shrinking else REJECT_MAX_PIXELS)
    reason = judge_image(info, mirror.lib, mirror.fit)
    if reason:
        return "rejected", reason
    note = "; ".join(f"Pillow: {w}" for w in info.warnings) or None
    if not shrinking:
        return "ok", note
    lib = mirror.lib
    if not needs_shrink(info, lib):
        return "ok", note
    try:  # the trial re-encode: "ok" must mean the upload will fit
        shrunk = shrink_image(data, lib)
    except ShrinkError as e:
        return "rejected", str(e)
    return "ok", "; ".join(filter(None, [shrunk.note(f"{info.format} {info.width}x{info.height} px"), note]))


def _kind_of(entry: os.DirEntry[str], follow: bool) -> str:
    try:
        mode = entry.stat(follow_symlinks=follow).st_mode
    except OSError:
        return "not a regular file"
    kind = (
        "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a symlink (follow_symlinks is off)"
        if stat.S_ISLNK(mode)
        else "not a regular file"
    )
    return f"{kind}, not an image file: skipped"


def _why(e: OSError) -> str:
    """ "permission denied", "input/output error", ...: the OS's words, without the path (logged apart)."""
    return e.strerror.lower() if e.strerror else (str(e) or type(e).__name__)
