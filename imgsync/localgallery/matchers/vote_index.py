"""A shortlist by descriptor voting: which entries share many local features with a query?

Each entry contributes a fixed number of binary descriptors (a FeatureTable column of shape
(cap, 32) uint8; all-zero rows are padding). They live in a faiss binary index whose ids are the
entries' seqs, so the index survives table compaction: seq → row position is a binary search
(FeatureTable.positions_of). A query's descriptors each look up their `knn` nearest stored
descriptors; every one within `radius` bits votes for its entry, weighted 1/(number of such hits),
so a generic descriptor (a plain corner that matches everything) counts for little.

Index kind: exact (IndexBinaryFlat) while small; IVF (k-means cells, `nprobe` searched) once it
holds IVF_FROM codes, retrained when it has grown 8x. Deleted entries stay in the index until the
next rebuild: their votes land on no live row, or on a row the filter mask excludes.

Sync is lazy: new rows (seq above the highest indexed) are added at the next query. Persistence:
save() writes the index with the highest seq it holds; load() reads it back and the next sync
catches up with whatever was added since (after a crash, say). A missing or unreadable file just
means a rebuild from the table.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from imgsync.localgallery.matchers.table import FeatureTable

# One thread per search, as for OpenCV (keypoints.py): a vote search is small (hundreds of query
# codes), and on a shared 2-core machine with a threaded HTTP server faiss's OpenMP team only
# spins against the other requests: measured 45-82 ms per 300-600-code search with 2 threads under
# load, 2-3 ms with 1.
faiss.omp_set_num_threads(1)

BITS = 256
#: Switch from exact search to IVF at this many codes (~500 same_hq entries). Exact search costs
#: ~O(codes) per query descriptor: 29 ms for a query's 300 voters at 32k codes (1,000 same_hq
#: entries), 126 ms at 147k, while IVF at 3.2M codes (100k entries) takes ~12 ms. It was 150k codes,
#: so a library of 1,000-4,600 entries searched slower than one of 100k.
IVF_FROM = 16_384
#: IVF cells: about one per 128 codes (a power of two, 128 at IVF_FROM), at most _NLIST. A query
#: descriptor then costs nlist (the nearest cells) + nprobe x codes / nlist comparisons, and with
#: fewer, larger cells a small index finds more of the true neighbours than the 100k one does.
_NLIST = 1024
_CODES_PER_LIST = 128
_TRAIN_PER_LIST = 40


class VoteIndex:
    def __init__(self, field: str, *, knn: int = 4, radius: int = 45, nprobe: int = 4) -> None:
        self.field = field
        self.knn, self.radius, self.nprobe = knn, radius, nprobe
        self._index: faiss.IndexBinary = _flat()
        self._max_seq = 0
        self._trained_at = 0  # codes when the IVF was trained (0: exact index)
        self._on_disk: tuple[int, int, int] | None = None  # _state() as last saved or loaded

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def sync(self, table: FeatureTable) -> None:
        """Add the table's rows newer than anything indexed; switch to / retrain IVF when due."""
        seqs = table.seq[: table.n]
        start = int(np.searchsorted(seqs, self._max_seq, side="right"))
        if start >= table.n:
            return
        codes, ids = _codes_of(table.col(self.field)[start:], seqs[start:])
        grown = self.ntotal + len(codes)
        if (self._trained_at == 0 and grown >= IVF_FROM) or (self._trained_at and grown > 8 * self._trained_at):
            self.rebuild(table)
            return
        if len(codes):
            self._index.add_with_ids(codes, ids)
        self._max_seq = int(seqs[-1])

    def rebuild(self, table: FeatureTable) -> None:
        """Index every live row from scratch (dropping deleted ones)."""
        live = np.flatnonzero(table.alive[: table.n])
        codes, ids = _codes_of(table.col(self.field)[live], table.seq[live])
        if len(codes) >= IVF_FROM:
            rng = np.random.default_rng(0)
            nlist = nlist_for(len(codes))
            sample = codes[rng.choice(len(codes), min(len(codes), nlist * _TRAIN_PER_LIST), replace=False)]
            ivf = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(BITS), BITS, nlist)
            ivf.train(sample)
            ivf.nprobe = self.nprobe
            self._index, self._trained_at = ivf, len(codes)
        else:
            self._index, self._trained_at = _flat(), 0
        if len(codes):
            self._index.add_with_ids(codes, ids)
        self._max_seq = int(table.seq[table.n - 1]) if table.n else 0

    def votes(self, desc: np.ndarray, table: FeatureTable, more_than: np.ndarray | None = None) -> np.ndarray:
        """Votes (float32, one per table row) of the query descriptors `desc` (uint8 (n, 32)); with
        more_than, added to those votes (another set of descriptors' of the same search): each
        descriptor's votes depend on it alone, so this equals one search of both sets, in that order."""
        self.sync(table)
        out = np.zeros(table.n, dtype=np.float32) if more_than is None else more_than.copy()
        if len(desc) == 0 or self.ntotal == 0:
            return out
        dist, ids = self._index.search(np.ascontiguousarray(desc, dtype=np.uint8), self.knn)
        ok = (ids >= 0) & (dist <= self.radius)
        weight = np.broadcast_to(1.0 / np.maximum(ok.sum(axis=1, keepdims=True), 1), ok.shape)[ok]
        pos, found = table.positions_of(ids[ok])
        np.add.at(out, pos[found], weight[found].astype(np.float32))
        return out

    # --- persistence ------------------------------------------------------------------------------

    def _state(self) -> tuple[int, int, int]:
        return self._max_seq, self._trained_at, self.ntotal

    def save(self, path: Path, stamp: str) -> None:
        """Write the index next to its meta; skipped when the file already holds this index (every
        close saves, and at 100k entries the file is over 100 MB)."""
        if self._on_disk == self._state() and path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        # Serialized here and written by Python, not by faiss.write_index_binary: faiss prints its own
        # "close error: No space left on device" to stderr, past imgsync's one-line error on a full disk.
        data = faiss.serialize_index_binary(self._index)
        try:
            with open(tmp, "wb") as f:
                f.write(data.data)  # the array's buffer: no copy of a 100 MB index
        except OSError:
            tmp.unlink(missing_ok=True)  # a partial file would only take the space a full disk lacks
            raise
        tmp.replace(path)
        meta = {"stamp": stamp, "max_seq": self._max_seq, "trained_at": self._trained_at}
        path.with_suffix(".json").write_text(json.dumps(meta))
        self._on_disk = self._state()

    def load(self, path: Path, stamp: str) -> bool:
        """Read a saved index; False (and nothing changed) if it is missing, stale or unreadable."""
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            if meta.get("stamp") != stamp:
                return False
            index = faiss.read_index_binary(str(path))
        except (OSError, ValueError, RuntimeError):
            return False
        if isinstance(index, faiss.IndexBinaryIVF):
            index.nprobe = self.nprobe
        self._index, self._max_seq, self._trained_at = index, int(meta["max_seq"]), int(meta["trained_at"])
        self._on_disk = self._state()
        return True


def nlist_for(codes: int) -> int:
    """IVF cells for an index of `codes` codes (see _CODES_PER_LIST)."""
    return int(min(_NLIST, 2 ** round(np.log2(max(codes, 1) / _CODES_PER_LIST))))


def _flat() -> faiss.IndexBinary:
    return faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(BITS))


def _codes_of(col: np.ndarray, seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten (rows, cap, 32) codes to (k, 32) without the all-zero padding, with their seqs."""
    rows, cap = col.shape[:2]
    flat = col.reshape(rows * cap, col.shape[2])
    ids = np.repeat(seqs.astype(np.int64), cap)
    real = flat.any(axis=1)
    return np.ascontiguousarray(flat[real]), ids[real]
