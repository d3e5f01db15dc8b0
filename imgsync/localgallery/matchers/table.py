"""The in-memory index of one library: dense numpy columns, one row per entry.

Rows are appended in insertion order; a delete only clears `alive` (cheap, keeps positions
stable) and the table compacts itself once half of it is dead. Compaction keeps the order, so
`seq` stays sorted ascending: seq → position is a binary search (positions_of). Not thread-safe:
the engine holds its lock around every call.

Variable-length per-entry data (matchers/base.py EXTRA) is not held here: `extras(rows)` reads
it through the loader the engine installs (the store), for the few rows a search verifies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from imgsync.localgallery.matchers.base import Features, Field

_MIN_CAPACITY = 1024


@dataclass(slots=True)
class Row:
    """What a search result needs besides its score."""

    seq: int
    cont_sign: str
    brief: str


class FeatureTable:
    def __init__(self, fields: tuple[Field, ...]) -> None:
        self.fields = fields
        self.n = 0  # rows in use, dead ones included
        self._cap = 0
        self.seq = np.empty(0, dtype=np.int64)
        self.alive = np.empty(0, dtype=bool)
        #: tags (two uint16, 0 = none) and product class ids (0 = none): filters are masks on these.
        self.tags = np.empty((0, 2), dtype=np.uint16)
        self.class_ids = np.empty((0, 2), dtype=np.uint16)
        self.cols: dict[str, np.ndarray] = {f.name: np.empty((0, *f.shape), dtype=f.dtype) for f in fields}
        self.signs: list[str] = []
        self.briefs: list[str] = []
        self.pos: dict[str, int] = {}
        #: seqs → {seq: blob}; set by the engine. Rows without variable-length data are absent.
        self.extra_loader: Callable[[Sequence[int]], dict[int, bytes]] | None = None
        #: derived columns (see derived): name → (column, rows computed)
        self._derived: dict[str, tuple[np.ndarray, int]] = {}

    def __len__(self) -> int:
        return len(self.pos)

    def col(self, name: str) -> np.ndarray:
        """The live part of a feature column (a view; rows beyond n are unused capacity)."""
        return self.cols[name][: self.n]

    def derived(self, name: str, width: int, compute: Callable[[FeatureTable, slice], np.ndarray]) -> np.ndarray:
        """Values computed from the stored columns by `compute` (the table and a slice of rows → float32
        (width, rows)), kept from one search to the next: float32 (width, n), a row's values in a column
        of its own (a product over all rows then runs along contiguous memory). Each row is computed
        once, when first asked for: a row's features never change, and only compaction moves rows
        (they are then computed anew). `name` stands for `compute`: one name, one function."""
        vals, done = self._derived.get(name, (np.empty((width, 0), dtype=np.float32), 0))
        if done < self.n:
            if vals.shape[1] < self.n:
                grown = np.zeros((width, max(self._cap, self.n)), dtype=np.float32)
                grown[:, :done] = vals[:, :done]
                vals = grown
            vals[:, done : self.n] = compute(self, slice(done, self.n))
            self._derived[name] = (vals, self.n)
        return vals[:, : self.n]

    def float32(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Those rows of a feature column, as float32 (a float16 column widened: to_float32)."""
        return to_float32(self.cols[name][rows])

    def append_many(
        self,
        seqs: Iterable[int],
        signs: list[str],
        briefs: list[str],
        tags: np.ndarray,
        class_ids: np.ndarray,
        feats: Features,
    ) -> None:
        seq_arr = np.fromiter(seqs, dtype=np.int64)
        k = len(seq_arr)
        self._reserve(self.n + k)
        sl = slice(self.n, self.n + k)
        self.seq[sl] = seq_arr
        self.alive[sl] = True
        self.tags[sl] = tags
        self.class_ids[sl] = class_ids
        for f in self.fields:
            self.cols[f.name][sl] = feats[f.name]
        for i, s in enumerate(signs):
            self.pos[s] = self.n + i
        self.signs.extend(signs)
        self.briefs.extend(briefs)
        self.n += k

    def append(
        self, seq: int, sign: str, brief: str, tags: tuple[int, int], class_ids: tuple[int, int], feats: Features
    ) -> None:
        one = {name: np.asarray(a)[None] for name, a in feats.items()}
        self.append_many([seq], [sign], [brief], np.array([tags]), np.array([class_ids]), one)

    def update(
        self, sign: str, brief: str | None, tags: tuple[int, int] | None, class_ids: tuple[int, int] | None
    ) -> None:
        p = self.pos[sign]
        if brief is not None:
            self.briefs[p] = brief
        if tags is not None:
            self.tags[p] = tags
        if class_ids is not None:
            self.class_ids[p] = class_ids

    def remove(self, sign: str) -> bool:
        p = self.pos.pop(sign, None)
        if p is None:
            return False
        self.alive[p] = False
        if self.n - len(self.pos) > max(_MIN_CAPACITY, self.n // 2):
            self._compact()
        return True

    def extras(self, rows: np.ndarray) -> list[bytes | None]:
        """The variable-length blobs of `rows` (positions), None where an entry has none."""
        if self.extra_loader is None or len(rows) == 0:
            return [None] * len(rows)
        seqs = [int(s) for s in self.seq[rows]]
        found = self.extra_loader(seqs)
        return [found.get(s) for s in seqs]

    def positions_of(self, seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions, found) for seqs: found[i] says whether seqs[i] is a row of the table."""
        live = self.seq[: self.n]
        pos = np.searchsorted(live, seqs)
        pos = np.minimum(pos, max(self.n - 1, 0))
        found = (live[pos] == seqs) if self.n else np.zeros(len(seqs), dtype=bool)
        return pos, found

    def row(self, p: int) -> Row:
        return Row(int(self.seq[p]), self.signs[p], self.briefs[p])

    def _reserve(self, need: int) -> None:
        if need <= self._cap:
            return
        cap = max(_MIN_CAPACITY, self._cap * 2, need)
        self.seq = _grow(self.seq, cap)
        self.alive = _grow(self.alive, cap)
        self.tags = _grow(self.tags, cap)
        self.class_ids = _grow(self.class_ids, cap)
        self.cols = {k: _grow(v, cap) for k, v in self.cols.items()}
        self._cap = cap

    def _compact(self) -> None:
        self._derived.clear()  # rows move: what was derived from them is computed again when asked for
        keep = np.flatnonzero(self.alive[: self.n])
        k = len(keep)
        self.seq[:k] = self.seq[keep]
        self.alive[:k] = True
        self.alive[k:] = False
        self.tags[:k] = self.tags[keep]
        self.class_ids[:k] = self.class_ids[keep]
        for c in self.cols.values():
            c[:k] = c[keep]
        self.signs = [self.signs[i] for i in keep]
        self.briefs = [self.briefs[i] for i in keep]
        self.pos = {s: i for i, s in enumerate(self.signs)}
        self.n = k


def to_float32(a: np.ndarray) -> np.ndarray:
    """`a` as float32, exactly. numpy widens float16 one value at a time: 3.5 ms for the 1.7 M values
    of the 4,000 rows a 100k-entry hash stage re-ranks, the largest single cost of a same_hq search;
    OpenCV 5 does the same in 0.2 ms. OpenCV 4 has no float16 arithmetic: numpy then."""
    if a.dtype != np.float16 or not _OPENCV_WIDENS or a.size == 0:
        return a.astype(np.float32)
    flat = np.ascontiguousarray(a).reshape(len(a), -1) if a.ndim > 1 else np.ascontiguousarray(a).reshape(1, -1)
    return cv2.multiply(flat, 1.0, dtype=cv2.CV_32F).reshape(a.shape)


def _opencv_widens() -> bool:
    probe = np.array([[0.0, -0.0, 1.5, -65504.0, 6e-8, np.inf]], dtype=np.float16)
    try:
        out = cv2.multiply(probe, 1.0, dtype=cv2.CV_32F)
    except cv2.error:
        return False
    return bool(out.dtype == np.float32 and np.array_equal(out, probe.astype(np.float32)))


_OPENCV_WIDENS = _opencv_widens()


def _grow(a: np.ndarray, cap: int) -> np.ndarray:
    out = np.zeros((cap, *a.shape[1:]), dtype=a.dtype)
    out[: len(a)] = a
    return out
