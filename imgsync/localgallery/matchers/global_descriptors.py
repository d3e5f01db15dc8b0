"""Matchers built on global descriptors (numpy + Pillow only).

SameImageMatcher (same_hq): "is this the same picture?" Stage 1 compares 64-bit pHashes of three
centred crops against every allowed row (XOR + popcount, vectorised) and keeps rows within
MAX_BITS; stage 2 re-ranks that shortlist by the cosine of a finer DCT descriptor of the
best-aligned crop pair. Score = that cosine, clipped to 0..1: 1.0 for the identical picture,
≈0.99+ after resize / re-compression / PNG↔JPEG↔BMP / brightness change, ~0.85-1.0 after a
5-10 % crop, and below ~0.45 for unrelated pictures (measured on synthetic images, see
tests/test_localgallery_engine.py). Only matches scoring ≥ SAME_FLOOR are returned, because
same_hq is a "same image" search: an unrelated picture is not a result at all.

SimilarityMatcher (similar, product, picturebook, materiel): the same-image stage above, plus a
visual similarity descriptor (HSV colour histogram, gradient-orientation grid, 8x8 colour layout)
whose cosine ranks every allowed row. Score = max(same-image score, similarity cosine); results
below SIMILAR_FLOOR are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from PIL import Image

from imgsync.libraries import MAX_RESULTS
from imgsync.localgallery.matchers import features as F
from imgsync.localgallery.matchers.base import Features, Field, Matcher
from imgsync.localgallery.matchers.table import FeatureTable

#: pHash distance (of 64 bits) up to which a row is re-ranked. Copies measured ≤ 10 bits (5 %
#: one-sided crop), unrelated pictures ≥ 16 bits; the re-ranker decides between.
MAX_BITS = 22
#: At most this many rows are re-ranked (the closest by pHash), however large the library: twice
#: the 1000 results a search can reach, so ~1000 copies of one picture still come back.
SHORTLIST = 2 * MAX_RESULTS
#: same_hq answers only pictures at least this close (copies score ≥ 0.86; unrelated ≤ 0.45).
SAME_FLOOR = 0.70
#: The similarity libraries answer a ranked list of everything at least this similar.
SIMILAR_FLOOR = 0.45

_CROP_A = np.array([a for a, _ in F.CROP_PAIRS])
_CROP_B = np.array([b for _, b in F.CROP_PAIRS])

_SAME_FIELDS = (
    Field("phash", "uint64", (len(F.CROPS),)),
    # float16 halves the memory (858 B per entry); the cosine changes by < 1e-3.
    Field("fine", "float16", (len(F.CROPS), F.FINE_DIM)),
)


def _same_extract(img: Image.Image, gray: Image.Image | None = None) -> dict[str, np.ndarray]:
    hashes, fine = F.same_image_descriptors(img, gray)
    return {"phash": hashes, "fine": fine.astype(np.float16)}


def _same_shortlist(query: Features, table: FeatureTable, mask: np.ndarray) -> np.ndarray:
    stored = table.col("phash")
    q = np.asarray(query["phash"], dtype=np.uint64)
    dist = np.full(table.n, 255, dtype=np.uint8)
    for a, b in F.CROP_PAIRS:
        np.minimum(dist, np.bitwise_count(stored[:, b] ^ q[a]).astype(np.uint8), out=dist)
    dist[~mask] = 255
    rows = np.flatnonzero(dist <= MAX_BITS)
    if len(rows) > SHORTLIST:
        rows = rows[np.argpartition(dist[rows], SHORTLIST - 1)[:SHORTLIST]]
    return rows.astype(np.int64)


def _same_pair_cosines(query: Features, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
    """Fine-DCT cosine of every CROP_PAIRS pair (query crop, stored crop) for each row: (k, pairs)."""
    return pair_cosines([query["fine"]], table, rows)[0]


def pair_cosines(fines: Sequence[np.ndarray], table: FeatureTable, rows: np.ndarray) -> list[np.ndarray]:
    """_same_pair_cosines for several query descriptors (a query and its mirror image) at once: every
    stored crop against every query crop, the pairs picked after. The shortlist can hold thousands of
    rows at 100k entries, and widening them (float16 → float32) was most of the hash stage's time: once
    per search, not once per orientation (3.3 → 1.8 ms for 1500 rows). einsum, not a BLAS product:
    BLAS threads fight each other on a busy machine (median 12 ms for the same product)."""
    stored = table.float32("fine", rows)  # (k, crops, dim)
    q = np.concatenate([np.asarray(f, dtype=np.float32) for f in fines])  # (n * crops, dim)
    every = np.einsum("kcd,nd->kcn", stored, q)  # [row, stored crop, query i's crop j at i * crops + j]
    crops = stored.shape[1]
    return [every[:, _CROP_B, i * crops + _CROP_A] for i in range(len(fines))]


def _same_verify(query: Features, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
    cos = _same_pair_cosines(query, table, rows)
    return np.clip(cos.max(axis=1), 0.0, 1.0).astype(np.float64)


def crop_pair_transform(pair: int, stored_size: tuple[int, int], query_size: tuple[int, int]) -> np.ndarray:
    """The 3x3 map stored pixels → query pixels that lines up the crops of CROP_PAIRS[pair] (the
    alignment the hash stage found)."""
    a, b = F.CROP_PAIRS[pair]
    sx0, sy0, sx1, sy1 = F._crop_box(stored_size, F.CROPS[b])
    qx0, qy0, qx1, qy1 = F._crop_box(query_size, F.CROPS[a])
    kx, ky = (qx1 - qx0) / (sx1 - sx0), (qy1 - qy0) / (sy1 - sy0)
    return np.array([[kx, 0.0, qx0 - kx * sx0], [0.0, ky, qy0 - ky * sy0], [0.0, 0.0, 1.0]])


class SameImageMatcher(Matcher):
    name: ClassVar[str] = "same-image/phash64x3+dct143-v1"
    fields = _SAME_FIELDS
    floor = SAME_FLOOR

    def extract(self, img: Image.Image) -> dict[str, np.ndarray]:
        return _same_extract(img)

    def shortlist(self, query: Features, table: FeatureTable, mask: np.ndarray) -> np.ndarray:
        return _same_shortlist(query, table, mask)

    def verify(self, query: Features, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
        return _same_verify(query, table, rows)


class SimilarityMatcher(Matcher):
    name: ClassVar[str] = "similarity/phash64x3+dct143+hsv-hog-layout-v1"
    fields = _SAME_FIELDS + (Field("desc", "float32", (F.SIMILAR_DIM,)),)
    floor = SIMILAR_FLOOR
    #: colour, edges, layout: how much each part counts in the similarity cosine.
    weights: ClassVar[tuple[float, float, float]] = (1.0, 1.0, 1.0)

    def extract(self, img: Image.Image) -> dict[str, np.ndarray]:
        return {**_same_extract(img), "desc": F.similarity_descriptor(img, self.weights)}

    def shortlist(self, query: Features, table: FeatureTable, mask: np.ndarray) -> np.ndarray:
        cos = table.col("desc") @ np.asarray(query["desc"], dtype=np.float32)  # one BLAS call over all rows
        similar = np.flatnonzero(mask & (cos >= self.floor))
        return np.union1d(similar, _same_shortlist(query, table, mask)).astype(np.int64)

    def verify(self, query: Features, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
        cos = table.col("desc")[rows] @ np.asarray(query["desc"], dtype=np.float32)
        same = _same_verify(query, table, rows)
        # A copy below the same-image floor is just "similar"; don't let its weaker evidence count.
        same[same < SAME_FLOOR] = 0.0
        return np.maximum(np.clip(cos, 0.0, 1.0), same)
