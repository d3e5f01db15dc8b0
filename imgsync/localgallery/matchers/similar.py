"""Matchers for the similar, product and materiel libraries, built on a learned embedding.

SimilarMatcher (similar): "pictures that look like this one". The EfficientNet-Lite0 embedding
(embedding.py) of the whole picture; raw score = cosine, over every row the filters allow (one
float32 matrix-vector product; 10k rows: 2-8 ms).

ProductMatcher (product): "the same product in another photo". The same embedding shortlists;
the best RERANK rows by cosine are then checked with ORB keypoints + RANSAC (keypoints.py), and
a product seen again with enough geometrically consistent keypoints scores by its inlier count
even when background and scale changed the embedding. Keypoints are kept, as in similar, in the
entry's variable-length blob (EXTRA), read for the re-ranked rows only.

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

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
from PIL import Image

from imgsync.libraries import MAX_RESULTS
from imgsync.localgallery.matchers import embedding as E
from imgsync.localgallery.matchers import foreground as FG
from imgsync.localgallery.matchers import keypoints as K
from imgsync.localgallery.matchers import texture as T
from imgsync.localgallery.matchers.base import EXTRA, Features, Field, Matcher
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

#: ORB keypoints kept per entry (in its extra blob). An object that fills a part of a stored scene
#: keeps only its share of them: with 256, a scene stored and the object queried alone often had
#: under 12 consistent matches. Measured on the tuning part's extra natural pairs
#: (benchmarks/heldout.py tune_pairs, 45 per direction), similar top-1 object alone stored / scene
#: queried and the reverse: 256 → 29 / 33, 384 → 32 / 34, 512 → 35 / 35, 768 and 1024 → 35 / 35.
KP = 512
#: Query keypoints for the re-ranking: this many of the usual ones plus as many spread over the
#: frame (keypoints.adaptive_keypoints), so an object in a cluttered scene keeps points of its own.
QUERY_KP = 400
#: This many best rows by embedding are re-ranked with keypoints.
RERANK = 20
#: Inlier count → score: fewer than ~12 inliers is what unrelated pictures reach by chance
#: (matching.md §3: wrong pages ≤ 11); 30+ consistent points is the same object. Above 80 the
#: score still rises a little, to 1 at 320: with 512 keypoints per entry a detail of a picture
#: and the whole picture, both stored, both reached 80 and tied at 1.0 for a query of the detail
#: (the whole then came first, being the older entry); the detail itself has more inliers.
_INLIER_KNOTS = ((0.0, 11.0, 15.0, 30.0, 80.0, 320.0), (0.0, 0.0, 0.6, 0.9, 0.995, 1.0))
#: _INLIER_KNOTS' score of every inlier count up to its last knot (for _inliers_above).
_SCORE_OF_INLIERS = np.interp(np.arange(int(_INLIER_KNOTS[0][-1]) + 1), *_INLIER_KNOTS)
#: In similar, keypoint evidence says "the same object seen again": similar, not the same picture.
SIMILAR_KEYPOINT_CAP = 0.85


#: The query's grey picture: its keypoints are detected only when a re-ranking runs (verify).
QUERY_GRAY = "qgray"
#: The query's RGB picture: regions of it are embedded only when something hides part of a picture
#: matched behind it (_front_by_hole).
QUERY_RGB = "qrgb"

#: The object in front, found by the hole it leaves (foreground.hidden): the picture behind must match
#: with this many inliers (its keypoint score "the same", 0.9) for its missing inliers to say anything.
HOLE_BEHIND_INLIERS = 30
#: ... and be seen mostly in the query (this share of it at least): when the query is a part of the
#: picture matched instead (an object queried alone, a scene with it stored), that picture's points
#: around the part fall on what the query shows of the part, and leave holes there too.
HOLE_COVERAGE = 0.5
#: The crop over a hole names the row its embedding is nearest (the picture behind excepted) when that
#: raw cosine is at least this, and above the crop's cosine with the picture behind. Tuning part's
#: extra pairs, objects in front of a library photo: nearest rows other than the object reached
#: 0.38-0.45, the object 0.43-0.77.
HOLE_COSINE = 0.55
#: ... and its own embedding must be this far from the picture behind's (cosine below it): a detail
#: of the picture, stored as an entry of its own, is nearer a crop of the picture than the whole
#: picture is. Negative set (26 tuning and calibration photos, each with its central quarter stored
#: beside it, queried turned 4°, cropped 5 %, with a plain box or text painted on): such details
#: 0.63-0.86, the objects in front of the tuning part's extra pairs 0.27-0.35. The keypoint front
#: rule asks the same of an object over a sparse part of the picture behind (foreground.SPARSE_OVER).
HOLE_APART = 0.5
#: ... and the query must have this many keypoints of its own inside the hole.
HOLE_POINTS = 8
#: _looks_in_front: the picture behind's frame covers this share of the query at least; the row in
#: front scores at least LOOKS_MIN by its embedding alone, and LOOKS_MARGIN above the picture behind's
#: embedding score. Tuning part's sparse spots, alone -> scene top-1 of 45 (similar / product): 30 / 31
#: without the rule, 32 / 33 with it at a margin of 0, 0.1 or 0.25 and a minimum of 0.5 or 0.6 (a
#: cat photo and a rocket box over game_puyo, whose 116-133 inliers gave it 0.996 in product); the
#: extra pairs and the negative set unchanged. Without the frame condition, an object matched with
#: 30 inliers or more passed for the picture behind: extra pairs alone -> scene 61 -> 55 of 90.
LOOKS_BEHIND_FRAME = 0.8
LOOKS_MIN = 0.6
LOOKS_MARGIN = 0.1
#: The largest this many holes are embedded (one CNN batch).
HOLE_CROPS = 2
#: Crops are padded by this share of the query's sides (the hole's cells stop short of the outline).
HOLE_PAD = 0.03


def _query_keypoints(gray: np.ndarray) -> K.Keypoints:
    kps = K.adaptive_keypoints(gray, QUERY_KP, spread=True)
    return K.Keypoints.from_bytes(kps.to_bytes())  # at the stored precision (1/8 px), as entries


def _rerank(
    q: K.Keypoints, scores: np.ndarray, stored: list[K.Keypoints | None], order: np.ndarray, cap: float = 1.0
) -> dict[int, tuple[K.Verification, K.Keypoints]]:
    """Raise scores[order[i]] to the keypoint evidence of the query q against stored[i] (in place).
    Returns the evidence that scored ({index into scores: (verification, stored keypoints)})."""
    found = {}
    for i, kps in zip(order, stored, strict=True):
        if kps is None or len(kps) < 8:
            continue
        # only a transform with more inliers than the row's score already stands for can raise it:
        # fewer matches need no RANSAC, and RANSAC need not look for fewer inliers
        v = K.verify(
            q, kps, K.ratio_matches(q.desc, kps.desc), model="homography", min_inliers=_inliers_above(scores[i])
        )
        s = float(np.interp(v.inliers, *_INLIER_KNOTS))
        scores[i] = max(scores[i], min(cap, s))
        if s > 0:
            found[int(i)] = (v, kps)
    return found


def _geometry(
    q: K.Keypoints, stored: list[K.Keypoints | None], order: np.ndarray
) -> dict[int, tuple[K.Verification, K.Keypoints]]:
    """Keypoint evidence of rows whose score it cannot change, for their geometry only."""
    found = {}
    for i, kps in zip(order, stored, strict=True):
        if kps is None or len(kps) < 8:
            continue
        min_inliers = int(_INLIER_KNOTS[0][1]) + 1
        v = K.verify(q, kps, K.ratio_matches(q.desc, kps.desc), model="homography", min_inliers=min_inliers)
        if v.inliers >= min_inliers:
            found[int(i)] = (v, kps)
    return found


def _in_front_first(
    scores: np.ndarray,
    evidence: dict[int, tuple[K.Verification, K.Keypoints]],
    query_size: tuple[int, int],
    apart: Callable[[int, int], bool],
) -> None:
    """A row whose match hides part of another's (foreground.py: an object in front of a library
    picture) ranks above it: the one behind keeps at most the front one's score less 0.01 (in place).
    When each seems to hide the other, the one seen over the smaller area is the object in front:
    an object stored on a plain background has a frame larger than itself, and the picture behind,
    seen in that plain margin where the object has no inliers, would otherwise pass for the one
    in front of it. apart(b, a): the stored pictures of b and a are unlike each other, so b is no
    detail of a (foreground.hides asks it where a is sparse under b)."""
    frames = {i: FG.frame_in_query(v, kps.size, query_size) for i, (v, kps) in evidence.items()}
    fronts = {i: FG.seen_whole(v, kps, query_size) for i, (v, kps) in evidence.items()}

    def hides(b: int, a: int) -> bool:
        pb, pa = fronts[b], frames[a]
        return (
            pb is not None
            and pa is not None
            and FG.hides(evidence[b][0], pb, evidence[a][0], pa, query_size, evidence[a][1], apart=apart(b, a))
        )

    for b in evidence:
        for a in evidence:
            if a == b or scores[a] < scores[b] or not hides(b, a):
                continue
            pa, pb = fronts[a], fronts[b]
            if pa is not None and pb is not None and cv2.contourArea(pb) >= cv2.contourArea(pa) and hides(a, b):
                continue
            scores[a] = min(scores[a], scores[b] - 0.01)


def _picture_behind(evidence: dict[int, tuple[K.Verification, K.Keypoints]]) -> int | None:
    """The row matched as the picture behind an object in front: the one with the most inliers, when it
    has HOLE_BEHIND_INLIERS or more (its keypoint score "the same"); None otherwise."""
    behind = max(evidence, key=lambda i: evidence[i][0].inliers)
    return behind if evidence[behind][0].inliers >= HOLE_BEHIND_INLIERS else None


def _looks_in_front(
    scores: np.ndarray,
    calibrated: np.ndarray,
    evidence: dict[int, tuple[K.Verification, K.Keypoints]],
    query_size: tuple[int, int],
    apart: Callable[[int, int], bool],
) -> None:
    """An object in front that keypoints do not find, over a part of the picture behind where no hole
    shows (_front_by_hole sees none where the picture has no points of its own): the picture behind
    (the row with the most inliers, HOLE_BEHIND_INLIERS or more, its frame over LOOKS_BEHIND_FRAME of
    the query) is what the keypoints see, but the query as a whole looks more like another row, by
    the embedding: that row scores "similar" (LOOKS_MIN) by its embedding alone, LOOKS_MARGIN above
    the picture behind's embedding score, had no keypoint evidence, and is unlike the picture behind
    (`apart`, not a detail of it). The picture behind then keeps at most that row's score less
    0.01, as with the front rule of _in_front_first (in place)."""
    behind = _picture_behind(evidence)
    if behind is None:
        return
    v, kps = evidence[behind]
    frame = FG.frame_in_query(v, kps.size, query_size)
    if frame is None or cv2.contourArea(frame) < LOOKS_BEHIND_FRAME * query_size[0] * query_size[1]:
        return
    others = calibrated.copy()
    others[list(evidence)] = -np.inf
    front = int(np.argmax(others))
    if others[front] < max(LOOKS_MIN, calibrated[behind] + LOOKS_MARGIN) or not apart(front, behind):
        return
    scores[behind] = min(scores[behind], scores[front] - 0.01)


def _points_in(q: K.Keypoints, box: np.ndarray) -> int:
    x, y = q.xy[:, 0], q.xy[:, 1]
    return int(np.sum((x >= box[0]) & (x < box[2]) & (y >= box[1]) & (y < box[3])))


def _inliers_above(score: float) -> int:
    """The fewest inliers whose keypoint score exceeds `score` (at least those that score at all)."""
    n = int(np.searchsorted(_SCORE_OF_INLIERS, score, side="right"))
    return min(max(n, int(_INLIER_KNOTS[0][1]) + 1), int(_INLIER_KNOTS[0][-1]))


class SimilarMatcher(Matcher):
    """similar: the embedding ranks every allowed row; the best RERANK rows are also checked with
    keypoints (kept in the entry's extra blob, read for those rows only), so the same object
    photographed again in a cluttered scene, whose embedding the clutter pulled away, is still
    found: as "similar" (SIMILAR_KEYPOINT_CAP), never as "the same picture"."""

    name: ClassVar[str] = "similar/lite0-gap1280+orb512x-v3"
    fields: ClassVar[tuple[Field, ...]] = (Field("emb", "float32", (E.DIM,)),)
    floor: ClassVar[float] = FLOOR
    # Knots: see docs/matching-embedding.md (held-out split of benchmarks.photos).
    calibration: ClassVar[Calibration] = Calibration((0.0, 0.448, 0.714, 0.918, 1.0))
    keypoint_cap: ClassVar[float] = SIMILAR_KEYPOINT_CAP
    #: No keypoint re-ranking once the embedding has found a row scoring this: the query is that
    #: picture, and keypoint evidence (at most keypoint_cap, below it) could only reorder the rows
    #: under it. Every row scoring ≥ keypoint_cap, the first included, is the same either way.
    settled_at: ClassVar[float] = 0.9

    def extract(self, img: Image.Image) -> dict[str, np.ndarray]:
        kps = K.adaptive_keypoints(np.asarray(img.convert("L")), KP)
        return {"emb": E.embed(img), EXTRA: np.frombuffer(kps.to_bytes(), dtype=np.uint8)}

    def extract_query(self, img: Image.Image) -> dict[str, np.ndarray]:
        rgb = img.convert("RGB")
        return {"emb": E.embed(rgb), QUERY_GRAY: np.asarray(rgb.convert("L")), QUERY_RGB: np.asarray(rgb)}

    def raw(self, query: Features, table: FeatureTable, rows: np.ndarray | None = None) -> np.ndarray:
        emb = table.col("emb") if rows is None else table.col("emb")[rows]
        return emb @ np.asarray(query["emb"], dtype=np.float32)

    def match(self, query: Features, table: FeatureTable, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # one pass over the table: the shortlist's raw scores are the verification's too
        raw = self.raw(query, table)
        rows = self._shortlist_of(query, raw, mask)
        if rows.size:
            scores, found, q = self._scores(query, table, rows, raw[rows])
            rows, scores = self._front_by_hole(query, table, rows, scores, found, q, mask)
        else:
            scores = np.empty(0)
        keep = scores >= self.floor
        return rows[keep], scores[keep]

    def shortlist(self, query: Features, table: FeatureTable, mask: np.ndarray) -> np.ndarray:
        return self._shortlist_of(query, self.raw(query, table), mask)

    def verify(self, query: Features, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
        scores, found, q = self._scores(query, table, rows, self.raw(query, table, rows))
        allowed = np.zeros(table.n, dtype=bool)
        allowed[rows] = True
        return self._front_by_hole(query, table, rows, scores, found, q, allowed)[1]

    def _shortlist_of(self, query: Features, raw: np.ndarray, mask: np.ndarray) -> np.ndarray:
        by_score = _top_rows(raw, mask, self.calibration.raw_at(self.floor), SHORTLIST)
        if not self._reranks(query):
            return by_score
        # The best RERANK rows get a keypoint check even when the embedding alone scores them low.
        return np.union1d(by_score, _top_rows(raw, mask, -np.inf, RERANK))

    def _scores(
        self, query: Features, table: FeatureTable, rows: np.ndarray, raw: np.ndarray
    ) -> tuple[np.ndarray, dict[int, tuple[K.Verification, K.Keypoints]], K.Keypoints | None]:
        """Calibrated scores of `rows` given their raw scores, raised by the keypoint re-ranking; the
        keypoint evidence ({index into rows: (verification, stored keypoints)}) and the query's
        keypoints, when a re-ranking ran."""
        scores = self.calibration(raw)
        if not self._reranks(query) or (len(scores) and scores.max() >= self.settled_at):
            return scores, {}, None
        best = np.argsort(-raw, kind="stable")[:RERANK]
        order = best[scores[best] < self.keypoint_cap]  # a row at the cap already cannot gain
        if len(order) == 0:
            return scores, {}, None
        q = self._query_keypoints(query)
        if len(q) < 8:
            return scores, {}, q
        found = _rerank(q, scores, self._stored_keypoints(table, rows[order]), order, self.keypoint_cap)
        if found:
            # an object found by its keypoints may lie in front of a picture ranked above it: the
            # geometry of the rows above it (unchecked so far: at the cap, or the RANSAC needed more
            # inliers than they have) says whether it hides part of them
            lowest = min(scores[i] for i in found)
            above = np.array([i for i in best if int(i) not in found and scores[i] >= lowest], dtype=np.int64)
            if len(above):
                found.update(_geometry(q, self._stored_keypoints(table, rows[above]), above))
            emb = table.col("emb")

            def apart(b: int, a: int) -> bool:  # the stored pictures of rows[b] and rows[a] are unlike
                return float(emb[rows[b]] @ emb[rows[a]]) < HOLE_APART

            if len(found) > 1:
                _in_front_first(scores, found, q.size, apart)
            _looks_in_front(scores, self.calibration(raw), found, q.size, apart)
        return scores, found, q

    def _front_by_hole(
        self,
        query: Features,
        table: FeatureTable,
        rows: np.ndarray,
        scores: np.ndarray,
        found: dict[int, tuple[K.Verification, K.Keypoints]],
        q: K.Keypoints | None,
        allowed: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """An object in front of a library picture that its keypoints do not find (a smooth sign, a
        hand): the picture behind, matched with HOLE_BEHIND_INLIERS or more, lacks its inliers where
        the object hides it (foreground.hidden). The query's crop there is embedded and searched
        among the `allowed` rows; the nearest row other than the picture behind, at HOLE_COSINE or
        more and nearer the crop than the picture behind, is the object in front: it scores at least
        its crop's calibrated cosine (at most keypoint_cap), is added to `rows` if missing, and the
        picture behind keeps at most that score less 0.01, as with the front rule of
        _in_front_first. Returns (rows, scores)."""
        if q is None or not found or QUERY_RGB not in query:
            return rows, scores
        behind = _picture_behind(found)
        if behind is None or found[behind][0].coverage < HOLE_COVERAGE:
            return rows, scores
        v, kps = found[behind]
        holes = FG.hidden(v, kps, q.size)
        # Something must be seen in each hole: where the query shows nothing (fewer than HOLE_POINTS
        # of its own keypoints), the picture matched is not behind anything; the query is a part of it
        # on a plain background (an object queried alone, a scene with it stored), and the holes
        # elsewhere are only where that part looks different.
        if not holes or any(_points_in(q, b) < HOLE_POINTS for b in holes):
            return rows, scores
        holes = holes[:HOLE_CROPS]
        w, h = q.size
        boxes: list[E.Box] = [
            (
                max(0.0, x0 / w - HOLE_PAD),
                max(0.0, y0 / h - HOLE_PAD),
                min(1.0, x1 / w + HOLE_PAD),
                min(1.0, y1 / h + HOLE_PAD),
            )
            for x0, y0, x1, y1 in holes
        ]
        crops = E.embed_regions(Image.fromarray(np.asarray(query[QUERY_RGB])), boxes)
        cos = (table.col("emb") @ crops.T).max(axis=1)
        behind_row = int(rows[behind])
        behind_cos = float(cos[behind_row])
        cos = np.where(allowed, cos, -np.inf)
        cos[behind_row] = -np.inf
        front_row = int(np.argmax(cos))
        if cos[front_row] < HOLE_COSINE or cos[front_row] <= behind_cos:
            return rows, scores
        emb = table.col("emb")
        if float(emb[front_row] @ emb[behind_row]) >= HOLE_APART:
            return rows, scores  # a detail of the picture behind, stored on its own: not in front of it
        s = min(float(self.calibration(np.asarray(cos[front_row]))), self.keypoint_cap)
        at = np.flatnonzero(rows == front_row)
        if at.size:
            scores[at[0]] = max(scores[at[0]], s)
            s = float(scores[at[0]])
        else:
            rows, scores = np.append(rows, front_row), np.append(scores, s)
        scores[behind] = min(scores[behind], s - 0.01)
        return rows, scores

    def _reranks(self, query: Features) -> bool:
        return QUERY_GRAY in query

    def _query_keypoints(self, query: Features) -> K.Keypoints:
        return _query_keypoints(np.asarray(query[QUERY_GRAY]))

    def _stored_keypoints(self, table: FeatureTable, rows: np.ndarray) -> list[K.Keypoints | None]:
        return [None if b is None else K.Keypoints.from_bytes(b) for b in table.extras(rows)]


# --- product -------------------------------------------------------------------------------------


class ProductMatcher(SimilarMatcher):
    """product: like similar, the keypoint evidence allowed to say "the same product" (≥ 0.9 at 30
    inliers). (Until -v2 its 256 keypoints were fixed-size fields held in memory, 9 KB per entry;
    512 in the blob cost no memory.)"""

    name: ClassVar[str] = "product/lite0-gap1280+orb512x-v2"
    calibration: ClassVar[Calibration] = Calibration((0.0, 0.448, 0.714, 0.918, 1.0))
    keypoint_cap: ClassVar[float] = 1.0
    settled_at: ClassVar[float] = np.inf  # keypoints may say "the same product" above any row

    def _reranks(self, query: Features) -> bool:
        return QUERY_GRAY in query or EXTRA in query

    def _query_keypoints(self, query: Features) -> K.Keypoints:
        if QUERY_GRAY in query:
            return _query_keypoints(np.asarray(query[QUERY_GRAY]))
        # features from a plain extract(): its own keypoints are the query's
        return K.Keypoints.from_bytes(np.asarray(query[EXTRA], dtype=np.uint8).tobytes())


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


#: Relative scales (query texture size / stored texture size) a fabric match is tried at: the same
#: fabric photographed closer (1.5, 2) or farther (1/1.5, 1/2). ZOOM: the CNN sees a centred crop
#: 1/z of the square, enlarged (a closer view); SHRINK: the texture histograms are taken of the
#: picture reduced by 1/s (a farther view: reducing keeps every pixel honest, enlarging would blur).
ZOOM = 1.5
SHRINK = 1.5
#: (relative scale, query CNN zoom, stored CNN zoom, query texture shrink, stored texture shrink).
#: Fields: emb (zoom 1), emb_z (zoom ZOOM, stored), emb_q* (query zooms); lbp/glcm (shrink 1),
#: lbp_s/glcm_s (shrink SHRINK, stored), lbp_q*/glcm_q* (query shrinks).
SCALE_HYPOTHESES: tuple[tuple[float, str, str, str, str], ...] = (
    (1.0, "emb", "emb", "", ""),
    (1.5, "emb", "emb_z", "_q15", ""),
    (2.0, "emb", "emb_z", "_q2", ""),
    (1 / 1.5, "emb_q15", "emb", "", "_s"),
    (0.5, "emb_q2", "emb", "", "_s"),
)


def _zoom_box(z: float) -> E.Box:
    m = (1 - 1 / z) / 2
    return (m, m, 1 - m, 1 - m)


def _shrunk(img: Image.Image, s: float) -> Image.Image:
    return img.resize((max(32, round(img.width / s)), max(32, round(img.height / s))), Image.Resampling.BOX)


def _cosines(
    query: Features, table: FeatureTable, rows: np.ndarray | None, pairs: list[tuple[str, str]]
) -> Callable[[str, str], np.ndarray]:
    """cos(stored field, query field) for every pair, each stored column read once: the scale
    hypotheses compare one stored column with several query vectors (emb with three crops), and
    a 10k x 1280 column is ~50 MB of memory to stream (5 reads: 45 ms at 10k on the loaded
    machine; 2 reads, one of them against three vectors at once: 22 ms)."""
    wanted: dict[str, list[str]] = {}
    for stored, queried in pairs:
        if queried not in wanted.setdefault(stored, []):
            wanted[stored].append(queried)
    out: dict[tuple[str, str], np.ndarray] = {}
    for stored, fields in wanted.items():
        col = table.col(stored) if rows is None else table.col(stored)[rows]
        m = col @ np.stack([np.asarray(query[q], dtype=np.float32) for q in fields], axis=1)
        out.update({(stored, q): m[:, j] for j, q in enumerate(fields)})
    return lambda stored, queried: out[(stored, queried)]


class FabricMatcher(SimilarMatcher):
    """materiel. Every part of the descriptor is position-free, and each comparison is tried at
    five relative scales (SCALE_HYPOTHESES): the score is the best weighted mean over them, each
    hypothesis comparing all parts at one consistent scale."""

    name: ClassVar[str] = "materiel/lite0x2+lbp3+glcm3+hsv-multiscale-v2"
    fields: ClassVar[tuple[Field, ...]] = (
        *(Field(n, "float32", (d,)) for n, d, _, _ in FABRIC_PARTS),
        Field("emb_z", "float32", (E.DIM,)),
        Field("lbp_s", "float32", (T.LBP_DIM,)),
        Field("glcm_s", "float32", (T.GLCM_DIM,)),
    )
    # Knots refitted for the best-of-five-scales raw score on the tuning part of benchmarks/heldout.py
    # (scales 1, 1.5, 1/1.5) together with bench_match_embedding's calibration half: unrelated
    # pairs' p99 (0.60) → 0.3, true matches' p10 (0.82) → 0.9, 0.6 halfway.
    calibration: ClassVar[Calibration] = Calibration((0.0, 0.60, 0.71, 0.82, 1.0))

    def extract(self, img: Image.Image) -> dict[str, np.ndarray]:
        square = centre_square(img)
        emb = E.embed_regions(square, (E.FULL, _zoom_box(ZOOM)))
        lbp, glcm, hsv = T.texture_descriptors(img)
        lbp_s, glcm_s, _ = T.texture_descriptors(_shrunk(img, SHRINK))
        return {"emb": emb[0], "emb_z": emb[1], "lbp": lbp, "glcm": glcm, "hsv": hsv, "lbp_s": lbp_s, "glcm_s": glcm_s}

    def extract_query(self, img: Image.Image) -> dict[str, np.ndarray]:
        square = centre_square(img)
        emb = E.embed_regions(square, (E.FULL, _zoom_box(1.5), _zoom_box(2.0)))
        lbp, glcm, hsv = T.texture_descriptors(img)
        out = {"emb": emb[0], "emb_q15": emb[1], "emb_q2": emb[2], "lbp": lbp, "glcm": glcm, "hsv": hsv}
        for suffix, k in (("_q15", 1.5), ("_q2", 2.0)):
            out["lbp" + suffix], out["glcm" + suffix], _ = T.texture_descriptors(_shrunk(img, k))
        # what an entry has too, so that a query can also be compared as an entry would be (the
        # same crop and the same reduction as the query's 1.5 ones: ZOOM = SHRINK = 1.5)
        out["emb_z"] = emb[1]
        out["lbp_s"], out["glcm_s"] = out["lbp_q15"], out["glcm_q15"]
        return out

    def raw(self, query: Features, table: FeatureTable, rows: np.ndarray | None = None) -> np.ndarray:
        # features of a plain extract() (no query-only fields): scale 1 only
        hypotheses = [h for h in SCALE_HYPOTHESES if h[1] in query and "lbp" + h[3] in query]
        cos = _cosines(
            query,
            table,
            rows,
            [("hsv", "hsv")]
            + [
                pair
                for _, q_emb, s_emb, q_tex, s_tex in hypotheses
                for pair in ((s_emb, q_emb), ("lbp" + s_tex, "lbp" + q_tex), ("glcm" + s_tex, "glcm" + q_tex))
            ],
        )

        def stretch(c: np.ndarray, level: float) -> np.ndarray:
            return np.clip((c - level) / (1.0 - level), 0.0, 1.0)

        weights = {n: (w, lvl) for n, _, w, lvl in FABRIC_PARTS}
        total = sum(w for w, _ in weights.values())
        colour = weights["hsv"][0] * stretch(cos("hsv", "hsv"), weights["hsv"][1])
        best: np.ndarray | None = None
        for _, q_emb, s_emb, q_tex, s_tex in hypotheses:
            mean = colour + weights["emb"][0] * stretch(cos(s_emb, q_emb), weights["emb"][1])
            for part in ("lbp", "glcm"):
                mean = mean + weights[part][0] * stretch(cos(part + s_tex, part + q_tex), weights[part][1])
            best = mean if best is None else np.maximum(best, mean)
        assert best is not None  # (there is always the 1x hypothesis)
        return best / total


__all__ = ["FLOOR", "Calibration", "FabricMatcher", "ProductMatcher", "SimilarMatcher"]
