"""Matchers for the similar, product and materiel libraries, built on a learned embedding.

SimilarMatcher (similar): "pictures that look like this one". The EfficientNet-Lite0 embedding
(embedding.py) of the whole picture; raw score = cosine, over every row the filters allow (one
float32 matrix-vector product; 10k rows: 2-8 ms).

ProductMatcher (product): "the same product in another photo". The same embedding shortlists;
the best RERANK rows by cosine are then checked with ORB keypoints + RANSAC (keypoints.py), and
a product seen again with enough geometrically consistent keypoints scores by its inlier count
even when background and scale changed the embedding. Keypoints are stored as fixed-size fields
(the KP strongest ORB points, zero-padded, with their count), so they fit the fixed-size store.

FabricMatcher (materiel): "the same fabric, another patch of it". The embedding of a centred
square plus texture histograms (texture.py: multi-scale LBP, GLCM, HSV colour); raw score = the
weighted mean of the parts' cosines, each stretched from its "unrelated" level (FABRIC_PARTS).

Scores: a raw score is mapped to 0..1 by a per-library monotone piecewise-linear calibration
(Calibration below) fitted on held-out images so that the thresholds mean the same thing in every
library: ≥ 0.9 "the same" (same picture, same product, same fabric), ≥ 0.6 "similar", and
unrelated pictures fall below ~0.3. Rows below FLOOR (0.3) are not returned. How the knots were
measured: benchmarks/bench_match_embedding.py --calibrate, docs/matching-embedding.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image

from imgsync.libraries import MAX_RESULTS
from imgsync.localgallery.matchers import embedding as E
from imgsync.localgallery.matchers import keypoints as K
from imgsync.localgallery.matchers import texture as T
from imgsync.localgallery.matchers.base import Features, Field, Matcher
from imgsync.localgallery.matchers.table import FeatureTable

#: Rows scoring below this are not results: below it lies the unrelated-picture range.
FLOOR = 0.3
#: At most this many rows are scored in full (the best by raw score): the most a search can return.
SHORTLIST = MAX_RESULTS


@dataclass(frozen=True, slots=True)
class Calibration:
    """Raw score → 0..1, linear between knots: raw[i] maps to SCORES[i]."""

    SCORES: ClassVar[tuple[float, ...]] = (0.0, 0.3, 0.6, 0.9, 1.0)
    raw: tuple[float, float, float, float, float]

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(raw, dtype=np.float64), self.raw, self.SCORES)

    def raw_at(self, score: float) -> float:
        """The raw score mapping to `score` (the inverse, for thresholding before calibration)."""
        return float(np.interp(score, self.SCORES, self.raw))


def _top_rows(raw: np.ndarray, mask: np.ndarray, threshold: float, cap: int) -> np.ndarray:
    """Rows allowed by mask with raw ≥ threshold, the `cap` best if more."""
    rows = np.flatnonzero(mask & (raw >= threshold))
    if len(rows) > cap:
        rows = rows[np.argpartition(-raw[rows], cap - 1)[:cap]]
    return rows.astype(np.int64)


# --- similar -------------------------------------------------------------------------------------

class SimilarMatcher(Matcher):
    name: ClassVar[str] = "similar/lite0-gap1280-v1"
    fields: ClassVar[tuple[Field, ...]] = (Field("emb", "float32", (E.DIM,)),)
    floor: ClassVar[float] = FLOOR
    # Knots: see docs/matching-embedding.md (held-out split of benchmarks.photos).
    calibration: ClassVar[Calibration] = Calibration((0.0, 0.448, 0.714, 0.918, 1.0))

    def extract(self, img: Image.Image) -> dict[str, np.ndarray]:
        return {"emb": E.embed(img)}

    def raw(self, query: Features, table: FeatureTable, rows: np.ndarray | None = None) -> np.ndarray:
        emb = table.col("emb") if rows is None else table.col("emb")[rows]
        return emb @ np.asarray(query["emb"], dtype=np.float32)

    def shortlist(self, query: Features, table: FeatureTable, mask: np.ndarray) -> np.ndarray:
        return _top_rows(self.raw(query, table), mask, self.calibration.raw_at(self.floor), SHORTLIST)

    def verify(self, query: Features, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
        return self.calibration(self.raw(query, table, rows))


# --- product -------------------------------------------------------------------------------------

#: ORB keypoints kept per entry (fixed-size field, zero-padded).
KP = 256
#: This many best rows by embedding are re-ranked with keypoints.
RERANK = 20
#: Inlier count → score: fewer than ~12 inliers is what unrelated pictures reach by chance
#: (matching.md §3: wrong pages ≤ 11); 30+ consistent points is the same object.
_INLIER_KNOTS = ((0.0, 11.0, 15.0, 30.0, 80.0), (0.0, 0.0, 0.6, 0.9, 1.0))
_XY_SCALE = 8.0  # stored coordinates in 1/8 px, as uint16 (pictures are ≤ 512 px)


def _keypoint_fields(img: Image.Image) -> dict[str, np.ndarray]:
    gray = np.asarray(img.convert("L"))
    kps = K.orb_keypoints(gray, n=KP)
    n = len(kps)
    xy = np.zeros((KP, 2), np.uint16)
    desc = np.zeros((KP, K.DESC_BYTES), np.uint8)
    xy[:n] = np.round(kps.xy * _XY_SCALE).clip(0, 65535).astype(np.uint16)
    desc[:n] = kps.desc
    return {"kp_xy": xy, "kp_desc": desc, "kp_n": np.array([n, kps.size[0], kps.size[1]], np.uint16)}


def _keypoints_of(xy: np.ndarray, desc: np.ndarray, meta: np.ndarray) -> K.Keypoints:
    n = int(meta[0])
    return K.Keypoints(xy[:n].astype(np.float32) / _XY_SCALE, desc[:n], (int(meta[1]), int(meta[2])))


class ProductMatcher(SimilarMatcher):
    name: ClassVar[str] = "product/lite0-gap1280+orb256-v1"
    fields: ClassVar[tuple[Field, ...]] = (
        Field("emb", "float32", (E.DIM,)),
        Field("kp_xy", "uint16", (KP, 2)),
        Field("kp_desc", "uint8", (KP, K.DESC_BYTES)),
        Field("kp_n", "uint16", (3,)),   # count, width, height
    )
    calibration: ClassVar[Calibration] = Calibration((0.0, 0.448, 0.714, 0.918, 1.0))

    def extract(self, img: Image.Image) -> dict[str, np.ndarray]:
        return {"emb": E.embed(img), **_keypoint_fields(img)}

    def shortlist(self, query: Features, table: FeatureTable, mask: np.ndarray) -> np.ndarray:
        raw = self.raw(query, table)
        by_score = _top_rows(raw, mask, self.calibration.raw_at(self.floor), SHORTLIST)
        # The best RERANK rows get a keypoint check even when the embedding alone scores them low.
        return np.union1d(by_score, _top_rows(raw, mask, -np.inf, RERANK))

    def verify(self, query: Features, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
        raw = self.raw(query, table, rows)
        scores = self.calibration(raw)
        q = _keypoints_of(query["kp_xy"], query["kp_desc"], query["kp_n"])
        if len(q) < 8:
            return scores
        xy, desc, meta = table.col("kp_xy"), table.col("kp_desc"), table.col("kp_n")
        for i in np.argsort(-raw, kind="stable")[:RERANK]:
            r = rows[i]
            stored = _keypoints_of(xy[r], desc[r], meta[r])
            v = K.verify(q, stored, K.ratio_matches(q.desc, stored.desc), model="homography")
            scores[i] = max(scores[i], float(np.interp(v.inliers, *_INLIER_KNOTS)))
        return scores


# --- materiel ------------------------------------------------------------------------------------

#: Parts of the fabric descriptor: (field, dimension, weight, unrelated level). A part's cosine is
#: stretched from its "unrelated" level to 1 onto 0..1 before the weighted mean: texture histograms
#: of ANY two fabrics overlap a lot (unrelated LBP cosines have a median of 0.94, GLCM 0.92), so
#: unstretched they would squash every score into a narrow band near the top. Levels and weights
#: were chosen on the benchmark's fabric set (docs/matching-embedding.md): the stretch widened the
#: gap between the 10th percentile of matches and the 99th of non-matches from 0.14 to 0.26.
FABRIC_PARTS: tuple[tuple[str, int, float, float], ...] = (
    ("emb", E.DIM, 1.0, 0.4),
    ("lbp", T.LBP_DIM, 1.0, 0.95),
    ("glcm", T.GLCM_DIM, 1.0, 0.9),
    ("hsv", T.HSV_DIM, 1.0, 0.2),
)


def centre_square(img: Image.Image) -> Image.Image:
    """The largest centred square: a texture is stationary, so squashing it to 224x224 would only
    distort its pattern; any square of it is as good as the whole."""
    w, h = img.size
    s = min(w, h)
    return img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))


class FabricMatcher(SimilarMatcher):
    name: ClassVar[str] = "materiel/lite0+lbp3+glcm3+hsv-v1"
    fields: ClassVar[tuple[Field, ...]] = tuple(Field(n, "float32", (d,)) for n, d, _, _ in FABRIC_PARTS)
    calibration: ClassVar[Calibration] = Calibration((0.0, 0.559, 0.71, 0.861, 1.0))

    def extract(self, img: Image.Image) -> dict[str, np.ndarray]:
        lbp, glcm, hsv = T.texture_descriptors(img)
        return {"emb": E.embed(centre_square(img)), "lbp": lbp, "glcm": glcm, "hsv": hsv}

    def raw(self, query: Features, table: FeatureTable, rows: np.ndarray | None = None) -> np.ndarray:
        total = 0.0
        for name, _, weight, level in FABRIC_PARTS:
            col = table.col(name) if rows is None else table.col(name)[rows]
            cos = col @ np.asarray(query[name], dtype=np.float32)
            total = total + weight * np.clip((cos - level) / (1.0 - level), 0.0, 1.0)
        return total / sum(w for _, _, w, _ in FABRIC_PARTS)


__all__ = ["FLOOR", "Calibration", "FabricMatcher", "ProductMatcher", "SimilarMatcher"]
