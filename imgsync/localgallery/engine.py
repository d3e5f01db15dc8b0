"""The local gallery's search engine: the five libraries' entries, their features and indexes.

The HTTP layer (app.py) has already decoded base64 and fetched urls and validated brief, tags,
pn and rn; the engine gets raw image bytes. Every refusal is an ApiError with the cloud's code.

Per library: a matcher (matchers/, chosen by library name) turns a checked image (images.py) into
features; the store (store.py, SQLite) keeps every entry durably; a FeatureTable keeps the same
entries in memory as numpy columns for vectorised search. The table is rebuilt from the store at
startup and changed in step with it under one lock, after the store has committed, so memory never
holds an entry the file lacks. Decoding and feature extraction (the slow part) run outside the
lock, so concurrent requests only serialise for the short store/table step.

Identical image = identical bytes (images.py explains cont_sign).

Each add also stores a reduced working copy of the image (images.encode_copy) and the matcher's
variable-length data (keypoints) next to the entry. When a library's matcher changes between
versions, the engine re-extracts every entry's features from those copies at startup (one log
line per library); only entries without a copy (a data dir from the first release) make that
impossible, and then the engine refuses to start with IndexVersionError rather than compare
incompatible features. Matchers with their own index (faiss) keep it under <data dir>/index/<library>/.
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
from imgsync.localgallery.store import DuplicateEntry, NewEntry, Store

DB_NAME = "gallery.sqlite3"
INDEX_DIR = "index"

log = logging.getLogger(__name__)

ClassIds = tuple[int | None, int | None]


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


class DataDirInUseError(RuntimeError):
    """Another process serves this data dir (its in-memory indexes would diverge from ours)."""


class Engine:
    def __init__(self, data_dir: Path, *, read_only: bool = False) -> None:
        """read_only: for looking at a data dir another process serves (listing entries): takes no
        lock and never writes the indexes back. Otherwise the data dir is this engine's alone."""
        data_dir.mkdir(parents=True, exist_ok=True)
        self._dir = data_dir
        self._read_only = read_only
        self._dir_lock = None if read_only else _lock_data_dir(data_dir)
        self._lock = threading.Lock()
        self._libs: dict[str, _Library] = {}
        try:
            self._store = Store(data_dir / DB_NAME)
        except BaseException:
            self._release()
            raise
        try:
            for name in LIBRARIES:
                self._libs[name] = self._load(name)
        except BaseException:
            self._store.close()
            self._release()
            raise

    def close(self) -> None:
        with self._lock:
            if not self._read_only:
                for name, lib in self._libs.items():
                    try:
                        lib.matcher.save_index(self._index_dir(name))
                    except (OSError, RuntimeError) as e:  # faiss reports a failed write as RuntimeError
                        # The saved index is a cache: the next open rebuilds it from the stored features.
                        log.info("%s: index cache not saved (%s); it is rebuilt on the next start", name, e)
            self._store.close()
            self._release()

    def _release(self) -> None:
        if self._dir_lock is not None:
            self._dir_lock.close()  # closing the file drops the flock
            self._dir_lock = None

    # --- the five operations ---------------------------------------------------------------------

    def add(self, library: str, image: bytes, *, brief: str, tags: tuple[int, ...] = (),
            class_ids: ClassIds = (None, None)) -> str:
        lib = self._lib(library)
        decoded = load_image(image, get_library(library))
        sign = cont_sign_of(image)
        self._refuse_duplicate(lib, sign)           # cheap early answer before extraction
        feats = lib.matcher.extract(decoded.pixels)
        entry = NewEntry(sign, brief, _tags(tags), _classes(class_ids), lib.matcher.pack(feats),
                         extra=lib.matcher.pack_extra(feats), copy=encode_copy(decoded.pixels))
        with self._lock:
            self._refuse_duplicate(lib, sign)       # again: another thread may have won meanwhile
            try:
                seq = self._store.insert(library, entry)
            except DuplicateEntry:
                raise ApiError(ITEM_EXIST, f"this image is already in {library}", cont_sign=sign) from None
            lib.table.append(seq, sign, brief, entry.tags, entry.class_ids, feats)
        return sign

    def search(self, library: str, image: bytes, *, tags: tuple[int, ...] = (), tag_logic: int = 0,
               class_ids: ClassIds = (None, None), pn: int = 0, rn: int = 300
               ) -> tuple[list[tuple[str, float, str]], bool]:
        assert pn >= 0 and rn >= 1 and tag_logic in (0, 1), (pn, rn, tag_logic)
        lib = self._lib(library)
        query = lib.matcher.extract_query(load_image(image, get_library(library)).pixels)
        if pn >= MAX_RESULTS:
            return [], False
        with self._lock:
            t = lib.table
            mask = filter_mask(t.alive[: t.n], t.tags[: t.n], t.class_ids[: t.n], want_tags=tags,
                               tag_logic=tag_logic, want_classes=class_ids)
            rows, scores = lib.matcher.match(query, t, mask)
            page, page_scores, has_more = rank_page(rows, scores, t.seq[: t.n], pn, rn)
            out = [(t.signs[p], round(float(s), 6), t.briefs[p]) for p, s in zip(page, page_scores)]
        return out, has_more

    def cont_sign_of(self, library: str, image: bytes) -> str:
        load_image(image, get_library(library))
        return cont_sign_of(image)

    def update(self, library: str, cont_sign: str, *, brief: str | None = None,
               tags: tuple[int, ...] | None = None, class_ids: ClassIds | None = None) -> None:
        lib = self._lib(library)
        new_tags = None if tags is None else _tags(tags)
        new_classes = None if class_ids is None else _classes(class_ids)
        with self._lock:
            if cont_sign not in lib.table.pos:
                raise ApiError(ITEM_NOT_EXIST, f"no image with cont_sign {cont_sign} in {library}")
            self._store.update(library, cont_sign, brief=brief, tags=new_tags, class_ids=new_classes)
            lib.table.update(cont_sign, brief, new_tags, new_classes)

    def delete(self, library: str, cont_signs: Sequence[str]) -> int:
        lib = self._lib(library)
        with self._lock:
            gone = self._store.delete(library, cont_signs)
            for s in gone:
                lib.table.remove(s)
        if not gone:
            raise ApiError(ITEM_NOT_EXIST, f"none of the {len(cont_signs)} cont_sign(s) is in {library}")
        return len(gone)

    def entries(self, library: str) -> list[dict[str, object]]:
        lib = self._lib(library)
        with self._lock:
            t = lib.table
            live = [p for p in range(t.n) if t.alive[p]]
            return [{"cont_sign": t.signs[p], "brief": t.briefs[p],
                     "tags": [int(x) for x in t.tags[p] if x],
                     "class_id1": int(t.class_ids[p, 0]) or None,
                     "class_id2": int(t.class_ids[p, 1]) or None} for p in live]

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
        news = [NewEntry(e.cont_sign, e.brief, _tags(e.tags), _classes(e.class_ids), lib.matcher.pack(e.features),
                         extra=lib.matcher.pack_extra(e.features)) for e in batch]
        with self._lock:
            try:
                seqs = self._store.insert_many(library, news)
            except DuplicateEntry as err:
                raise ApiError(ITEM_EXIST, f"bulk load into {library}: {err}") from None
            feats = lib.matcher.unpack_many([x.features for x in news])
            lib.table.append_many(seqs, [x.cont_sign for x in news], [x.brief for x in news],
                                  np.array([x.tags for x in news]), np.array([x.class_ids for x in news]), feats)
        return len(news)

    # --- internals -------------------------------------------------------------------------------

    def _lib(self, library: str) -> _Library:
        try:
            return self._libs[library]
        except KeyError:
            raise KeyError(f"unknown library {library!r} (known: {', '.join(self._libs)})") from None

    def _refuse_duplicate(self, lib: _Library, sign: str) -> None:
        if sign in lib.table.pos:
            raise ApiError(ITEM_EXIST, "this image is already in the library", cont_sign=sign)

    def _index_dir(self, library: str) -> Path:
        return self._dir / INDEX_DIR / library

    def _load(self, name: str) -> _Library:
        matcher = matcher_for(name)
        stored = self._store.matcher_of(name)
        if stored != matcher.name:
            if stored is not None and self._store.count(name):
                self._reextract(name, stored, matcher)
            self._store.set_matcher(name, matcher.name)
        table = FeatureTable(matcher.fields)
        for rows in self._store.scan(name):
            table.append_many((r.seq for r in rows), [r.cont_sign for r in rows], [r.brief for r in rows],
                              np.array([r.tags for r in rows]), np.array([r.class_ids for r in rows]),
                              matcher.unpack_many([r.features for r in rows]))
        table.extra_loader = self._store.extras
        matcher.open_index(table, self._index_dir(name))
        return _Library(matcher, table)

    def _reextract(self, name: str, stored: str, matcher: Matcher) -> None:
        """Recompute every entry's features with `matcher` from the stored working copies."""
        total = self._store.count(name)
        missing = self._store.count_without_copy(name)
        if missing:
            raise IndexVersionError(
                f"library {name}: its {total} entries have features from matcher {stored!r}, but this version "
                f"uses {matcher.name!r}, and {missing} of them have no stored working copy to re-extract from "
                f"(added by an older imgsync, or bulk-loaded); re-add the images into a new data dir")
        log.warning("library %s: matcher changed from %s to %s; re-extracting features of %d entries from "
                    "their stored copies", name, stored, matcher.name, total)
        t0 = time.monotonic()
        for batch in self._store.scan_copies(name):
            rows = []
            for seq, jpeg in batch:
                feats = matcher.extract(decode_copy(jpeg))
                rows.append((seq, matcher.pack(feats), matcher.pack_extra(feats)))
            self._store.replace_features(rows)
        log.warning("library %s: re-extracted %d entries in %.1f s", name, total, time.monotonic() - t0)


def _lock_data_dir(data_dir: Path):  # -> the open lock file
    """An exclusive flock on <data_dir>/lock, held while the engine is open (released by the kernel if
    the process dies). Two engines on one data dir would each keep their own in-memory indexes and
    save them over each other's."""
    import fcntl
    import os

    f = open(data_dir / "lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise DataDirInUseError(f"the gallery data dir {data_dir} is in use by another process"
                                + (f" (pid {holder})" if holder else "")) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _tags(tags: tuple[int, ...]) -> tuple[int, int]:
    assert len(tags) <= 2 and all(1 <= t <= 65535 for t in tags), tags
    padded = (*tags, 0, 0)
    return padded[0], padded[1]


def _classes(class_ids: ClassIds) -> tuple[int, int]:
    assert len(class_ids) == 2 and all(c is None or 1 <= c <= 65535 for c in class_ids), class_ids
    return class_ids[0] or 0, class_ids[1] or 0
