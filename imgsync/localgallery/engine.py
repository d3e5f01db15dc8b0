"""The local gallery's search engine: the five libraries' entries, their features and indexes.

The HTTP layer (app.py) has already decoded base64 and fetched urls and validated brief, tags,
pn and rn; the engine gets raw image bytes. Every refusal is an ApiError with the cloud's code.

Per library: a matcher (matchers/, chosen by library name) turns a checked image (images.py) into
features; the store (store.py: SQLite in a data dir, or PostgreSQL shared by replicas) keeps every
entry durably; a FeatureTable keeps the same entries in memory as numpy columns for vectorised
search. The tables are a cache of the store: loaded from a snapshot at startup, then kept current
by applying the store's change log in change-id order, so memory never holds an entry the store
lacks and applies every write in the order it committed.

A write commits in the store first (the store, not a look at the table, decides a duplicate: its
unique constraint refuses the second of two racing adds, also across replicas) and is then applied
here. When its change id directly follows the last one applied, it is applied as it is; otherwise
the engine first catches up from the log (another thread's or another replica's writes came first).
Decoding and feature extraction (the slow part) run outside every lock.

A shared store (PostgreSQL) is written by other replicas too. Then a follower thread listens for
their change notifications and applies them as they come (the replication delay is one round trip
plus the apply), and every search first asks the store for its newest change id and catches up if
it is behind: a write acknowledged by any replica before a search starts is in that search's
results. If the store cannot be reached, calls fail with StoreUnavailable (the app answers error 2)
rather than answer from a cache that may be stale, and health() says so.

Identical image = identical bytes (images.py explains cont_sign).

Each add also stores a reduced working copy of the image (images.encode_copy) and the matcher's
variable-length data (keypoints) next to the entry. When a library's matcher changes between
versions, the engine re-extracts every entry's features from those copies at startup (one log
line per library; with replicas, one of them does it while the others wait); only entries without
a copy (a data dir from the first release) make that impossible, and then the engine refuses to
start with IndexVersionError rather than compare incompatible features. Matchers with their own
index (faiss) keep it under <data dir>/index/<library>/ (SQLite) or rebuild it at start (PostgreSQL).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgsync.libraries import LIBRARIES, MAX_RESULTS, get_library
from imgsync.localgallery.errors import ITEM_EXIST, ITEM_NOT_EXIST, ApiError
from imgsync.localgallery.images import cont_sign_of, decode_copy, encode_copy, load_image
from imgsync.localgallery.matchers import Features, Matcher, matcher_for
from imgsync.localgallery.matchers.ranking import filter_mask, rank_page
from imgsync.localgallery.matchers.table import FeatureTable
from imgsync.localgallery.store import (
    Change,
    ChangesPruned,
    DuplicateEntry,
    NewEntry,
    Snapshot,
    Store,
    StoredEntry,
    StoreError,
)
from imgsync.localgallery.store_sqlite import DB_NAME, INDEX_DIR, DataDirInUseError, SqliteStore

__all__ = ["DB_NAME", "INDEX_DIR", "BulkEntry", "DataDirInUseError", "Engine", "IndexVersionError"]

log = logging.getLogger(__name__)

ClassIds = tuple[int | None, int | None]

#: How often a follower checks the store when no notification comes (a lost notification, or a
#: connection that died quietly, costs at most this much delay).
FOLLOW_POLL = 1.0

#: While a changed matcher re-extracts a library at startup, a line every this many seconds says how far.
REEXTRACT_TELL_S = 30.0


class IndexVersionError(RuntimeError):
    """A library's stored features were made by another matcher than this version uses, and some
    entries have no working copy to re-extract them from."""


@dataclass(slots=True)
class _Library:
    matcher: Matcher
    table: FeatureTable


@dataclass(frozen=True, slots=True)
class BulkEntry:
    """An entry with precomputed features, for Engine.bulk_load."""

    cont_sign: str
    brief: str
    features: Features
    tags: tuple[int, ...] = ()
    class_ids: ClassIds = (None, None)


class Engine:
    def __init__(self, location: Path | Store, *, read_only: bool = False) -> None:
        """location: a data dir (the SQLite store, this engine's alone; read_only: for looking at a
        data dir another process serves, taking no lock and never writing the indexes back) or an
        open Store, which the engine then owns (closes)."""
        self._store: Store = location if isinstance(location, Store) else SqliteStore(location, read_only=read_only)
        self._read_only = read_only
        self._lock = threading.Lock()  # the tables
        self._sync_lock = threading.Lock()  # one catch-up at a time
        self._libs: dict[str, _Library] = {}
        self._applied = 0  # every change up to this id is in the tables
        self._closing = threading.Event()
        self._follower: threading.Thread | None = None
        self._follow_error: str | None = "starting"
        self._wake: list[object] = []
        try:
            with self._store.exclusive():  # one replica at a time re-extracts
                for name in LIBRARIES:
                    self._check_matcher(name)
            self._libs, self._applied = self._load_all()
        except BaseException:
            self._store.close()
            raise
        if self._store.shared:
            self._follower = threading.Thread(target=self._follow, name="localgallery-follower", daemon=True)
            self._follower.start()

    @property
    def store(self) -> Store:
        return self._store

    def close(self) -> None:
        self._closing.set()
        if self._follower is not None:
            for listener in list(self._wake):
                listener.wake()  # type: ignore[attr-defined]
            self._follower.join(timeout=10)
        with self._lock:
            index_dir = self._store.index_dir
            if not self._read_only and index_dir is not None:
                for name, lib in self._libs.items():
                    try:
                        lib.matcher.save_index(index_dir / name)
                    except (OSError, RuntimeError) as e:  # faiss reports a failed write as RuntimeError
                        # The saved index is a cache: the next open rebuilds it from the stored features.
                        log.info("%s: index cache not saved (%s); it is rebuilt on the next start", name, e)
            self._store.close()

    # --- the five operations ---------------------------------------------------------------------

    def add(
        self, library: str, image: bytes, *, brief: str, tags: tuple[int, ...] = (), class_ids: ClassIds = (None, None)
    ) -> str:
        lib = self._lib(library)
        decoded = load_image(image, get_library(library))
        sign = cont_sign_of(image)
        self._sync()
        if sign in lib.table.pos:  # cheap early answer before extraction
            raise ApiError(ITEM_EXIST, "this image is already in the library", cont_sign=sign)
        feats = lib.matcher.extract(decoded.pixels)
        entry = NewEntry(
            sign,
            brief,
            _tags(tags),
            _classes(class_ids),
            lib.matcher.pack(feats),
            extra=lib.matcher.pack_extra(feats),
            copy=encode_copy(decoded.pixels),
        )
        try:
            change = self._store.insert(library, entry)
        except DuplicateEntry:  # another thread or replica won the race
            raise ApiError(ITEM_EXIST, f"this image is already in {library}", cont_sign=sign) from None
        self._advance([change])
        return sign

    def search(
        self,
        library: str,
        image: bytes,
        *,
        tags: tuple[int, ...] = (),
        tag_logic: int = 0,
        class_ids: ClassIds = (None, None),
        pn: int = 0,
        rn: int = 300,
    ) -> tuple[list[tuple[str, float, str]], bool]:
        assert pn >= 0 and rn >= 1 and tag_logic in (0, 1), (pn, rn, tag_logic)
        lib = self._lib(library)
        query = lib.matcher.extract_query(load_image(image, get_library(library)).pixels)
        if pn >= MAX_RESULTS:
            return [], False
        self._sync()
        with self._lock:
            lib = self._libs[library]  # (a reload may have replaced it)
            t = lib.table
            mask = filter_mask(
                t.alive[: t.n],
                t.tags[: t.n],
                t.class_ids[: t.n],
                want_tags=tags,
                tag_logic=tag_logic,
                want_classes=class_ids,
            )
            rows, scores = lib.matcher.match(query, t, mask)
            page, page_scores, has_more = rank_page(rows, scores, t.seq[: t.n], pn, rn)
            out = [(t.signs[p], round(float(s), 6), t.briefs[p]) for p, s in zip(page, page_scores, strict=True)]
        return out, has_more

    def cont_sign_of(self, library: str, image: bytes) -> str:
        load_image(image, get_library(library))
        return cont_sign_of(image)

    def update(
        self,
        library: str,
        cont_sign: str,
        *,
        brief: str | None = None,
        tags: tuple[int, ...] | None = None,
        class_ids: ClassIds | None = None,
    ) -> None:
        self._lib(library)
        change = self._store.update(
            library,
            cont_sign,
            brief=brief,
            tags=None if tags is None else _tags(tags),
            class_ids=None if class_ids is None else _classes(class_ids),
        )
        if change is None:
            raise ApiError(ITEM_NOT_EXIST, f"no image with cont_sign {cont_sign} in {library}")
        self._advance([change])

    def delete(self, library: str, cont_signs: Sequence[str]) -> int:
        self._lib(library)
        change = self._store.delete(library, cont_signs)
        if change is None:
            raise ApiError(ITEM_NOT_EXIST, f"none of the {len(cont_signs)} cont_sign(s) is in {library}")
        self._advance([change])
        return len(change.cont_signs)

    def entries(self, library: str) -> list[dict[str, object]]:
        self._lib(library)
        self._sync()
        with self._lock:
            t = self._libs[library].table
            live = [p for p in range(t.n) if t.alive[p]]
            return [
                {
                    "cont_sign": t.signs[p],
                    "brief": t.briefs[p],
                    "tags": [int(x) for x in t.tags[p] if x],
                    "class_id1": int(t.class_ids[p, 0]) or None,
                    "class_id2": int(t.class_ids[p, 1]) or None,
                }
                for p in live
            ]

    def health(self) -> dict[str, object]:
        """{"ok": bool, "store": its kind, "applied_change": id, "error": why not ok (only when not ok)}.
        Asks the store now; a shared store also needs the follower to be connected."""
        out: dict[str, object] = {"store": self._store.kind, "applied_change": self._applied}
        try:
            self._store.ping()
        except StoreError as e:
            return {**out, "ok": False, "error": str(e)}
        if self._store.shared and self._follow_error is not None:
            return {**out, "ok": False, "error": f"not following the database's changes: {self._follow_error}"}
        return {**out, "ok": True}

    # --- bulk loading (benchmarks, imports) --------------------------------------------------------

    def bulk_load(self, library: str, entries: Iterable[BulkEntry], *, batch: int = 5000) -> int:
        """Insert entries whose features were computed elsewhere (e.g. by `matcher_for(library)
        .extract`), skipping image checks, one transaction per batch. For benchmarks and imports:
        a wrong feature shape raises ValueError; a duplicate cont_sign fails its whole batch."""
        lib = self._lib(library)
        n = 0
        pending: list[BulkEntry] = []
        for e in entries:
            pending.append(e)
            if len(pending) >= batch:
                n += self._bulk_batch(library, lib, pending)
                pending = []
        if pending:
            n += self._bulk_batch(library, lib, pending)
        return n

    def _bulk_batch(self, library: str, lib: _Library, batch: list[BulkEntry]) -> int:
        news = [
            NewEntry(
                e.cont_sign,
                e.brief,
                _tags(e.tags),
                _classes(e.class_ids),
                lib.matcher.pack(e.features),
                extra=lib.matcher.pack_extra(e.features),
            )
            for e in batch
        ]
        try:
            changes = self._store.insert_many(library, news)
        except DuplicateEntry as err:
            raise ApiError(ITEM_EXIST, f"bulk load into {library}: {err}") from None
        self._advance(changes)
        return len(news)

    # --- keeping the tables current ----------------------------------------------------------------

    def _sync(self) -> None:
        """A shared store: catch up with every change committed before now (one round trip when
        nothing is new)."""
        if not self._store.shared:
            return
        before = self._applied  # the store had committed at least this much when it was asked
        last = self._store.last_change()
        if last < before:
            # The database went back in time (restored from a backup, or a failover lost commits).
            log.warning("the gallery database's change log is behind this replica's (%d < %d): reloading", last, before)
            with self._sync_lock:
                self._reload()
        elif last > self._applied:
            self._advance(newest=last)

    def _advance(self, own: Sequence[Change] = (), newest: int | None = None) -> None:
        """Bring the tables up to date with `own` (changes this engine just committed, contiguous)
        or with the store's newest change."""
        with self._sync_lock:
            if own and own[-1].id <= self._applied:
                return  # a catch-up already applied them
            if own and own[0].id == self._applied + 1:
                self._apply(own)
                return
            while True:
                try:
                    batch = self._store.changes_since(self._applied)
                except ChangesPruned as e:
                    log.warning("%s: reloading every library from the store", e)
                    self._reload()
                    return
                if not batch:
                    if newest is not None and newest > self._applied:
                        self._applied = newest  # ids with no change (none are made today; harmless)
                    return
                self._apply(batch)

    def _apply(self, changes: Sequence[Change]) -> None:
        """Apply committed changes, in id order, to the tables (idempotent for adds already there)."""
        with self._lock:
            pending: list[StoredEntry] = []
            pending_lib: str | None = None

            def flush() -> None:
                if pending:
                    assert pending_lib is not None
                    _append(self._libs[pending_lib], pending)
                    pending.clear()

            for c in changes:
                lib = self._libs.get(c.library)
                if lib is None:
                    continue
                t = lib.table
                if c.kind == "add":
                    # Gone since (a later change deletes it), or already loaded from a snapshot.
                    if (
                        c.entry is None
                        or (t.n and c.entry.seq <= int(t.seq[t.n - 1]))
                        or (pending and pending_lib == c.library and c.entry.seq <= pending[-1].seq)
                    ):
                        continue
                    if pending_lib != c.library:
                        flush()
                        pending_lib = c.library
                    pending.append(c.entry)
                    continue
                flush()
                if c.kind == "update":
                    if c.cont_signs[0] in t.pos:
                        t.update(c.cont_signs[0], c.brief, c.tags, c.class_ids)
                else:
                    for s in c.cont_signs:
                        t.remove(s)
            flush()
            self._applied = changes[-1].id

    def _follow(self) -> None:
        """A shared store's follower: apply other replicas' changes as their notifications come, and
        at least every FOLLOW_POLL seconds; reconnect (with a short backoff) when the connection is lost."""
        delay = 0.1
        while not self._closing.is_set():
            try:
                with self._store.listen() as listener:
                    self._wake.append(listener)
                    try:
                        self._sync()  # whatever was missed while disconnected
                        if self._follow_error is not None and self._follow_error != "starting":
                            log.warning(
                                "gallery database %s is reachable again; following its changes", self._store.describe()
                            )
                        self._follow_error, delay = None, 0.1
                        while not self._closing.is_set():
                            listener.wait(FOLLOW_POLL)
                            if not self._closing.is_set():
                                self._sync()
                    finally:
                        self._wake.remove(listener)
            except StoreError as e:
                self._follow_error = str(e)
            except Exception as e:  # noqa: BLE001 - the follower must outlive any one bad apply
                log.exception("local gallery: following the database's changes failed")
                self._follow_error = f"internal error ({type(e).__name__})"
            self._closing.wait(delay)
            delay = min(delay * 2, 2.0)

    # --- loading -----------------------------------------------------------------------------------

    def _lib(self, library: str) -> _Library:
        try:
            return self._libs[library]
        except KeyError:
            raise KeyError(f"unknown library {library!r} (known: {', '.join(self._libs)})") from None

    def _check_matcher(self, name: str) -> None:
        matcher = matcher_for(name)
        stored = self._store.matcher_of(name)
        if stored != matcher.name:
            if stored is not None and self._store.count(name):
                self._reextract(name, stored, matcher)
            self._store.set_matcher(name, matcher.name)

    def _load_all(self) -> tuple[dict[str, _Library], int]:
        with self._store.snapshot() as snap:
            return {name: self._load(name, snap) for name in LIBRARIES}, snap.last_change

    def _reload(self) -> None:
        """Replace every table with one loaded afresh (the change log no longer reaches back far enough)."""
        libs, applied = self._load_all()
        with self._lock:
            self._libs, self._applied = libs, applied

    def _load(self, name: str, snap: Snapshot) -> _Library:
        matcher = matcher_for(name)
        table = FeatureTable(matcher.fields)
        for rows in snap.scan(name):
            _append(_Library(matcher, table), rows)
        table.extra_loader = self._store.extras
        index_dir = self._store.index_dir
        matcher.open_index(table, None if index_dir is None else index_dir / name)
        return _Library(matcher, table)

    def _reextract(self, name: str, stored: str, matcher: Matcher) -> None:
        """Recompute every entry's features with `matcher` from the stored working copies."""
        total = self._store.count(name)
        missing = self._store.count_without_copy(name)
        if missing:
            raise IndexVersionError(
                f"library {name}: its {total} entries have features from matcher {stored!r}, but this version "
                f"uses {matcher.name!r}, and {missing} of them have no stored working copy to re-extract from "
                f"(added by an older imgsync, or bulk-loaded); re-add the images into a new data dir"
            )
        log.warning(
            "library %s: matcher changed from %s to %s; re-extracting features of %d entries from their stored copies",
            name,
            stored,
            matcher.name,
            total,
        )
        t0 = last_told = time.monotonic()
        done = 0
        for batch in self._store.scan_copies(name):
            rows = []
            for seq, jpeg in batch:
                feats = matcher.extract(decode_copy(jpeg))
                rows.append((seq, matcher.pack(feats), matcher.pack_extra(feats)))
            self._store.replace_features(rows)
            done += len(rows)
            now = time.monotonic()
            if now - last_told >= REEXTRACT_TELL_S and done < total:
                # A big library takes minutes (~15 ms an entry): say how far it is, so a start that seems to
                # hang is seen to be working.
                last_told = now
                left = (now - t0) / done * (total - done)
                log.warning("library %s: re-extracted %d of %d entries, about %.0f s left", name, done, total, left)
        log.warning("library %s: re-extracted %d entries in %.1f s", name, total, time.monotonic() - t0)


def _append(lib: _Library, rows: Sequence[StoredEntry]) -> None:
    lib.table.append_many(
        (r.seq for r in rows),
        [r.cont_sign for r in rows],
        [r.brief for r in rows],
        np.array([r.tags for r in rows]),
        np.array([r.class_ids for r in rows]),
        lib.matcher.unpack_many([r.features for r in rows]),
    )


def _tags(tags: tuple[int, ...]) -> tuple[int, int]:
    assert len(tags) <= 2 and all(1 <= t <= 65535 for t in tags), tags
    padded = (*tags, 0, 0)
    return padded[0], padded[1]


def _classes(class_ids: ClassIds) -> tuple[int, int]:
    assert len(class_ids) == 2 and all(c is None or 1 <= c <= 65535 for c in class_ids), class_ids
    return class_ids[0] or 0, class_ids[1] or 0
