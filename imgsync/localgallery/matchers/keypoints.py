"""Local features: ORB keypoints, ratio-test matching and RANSAC geometric verification (OpenCV).

Pure functions of their arguments (numpy arrays in, numbers and arrays out), reusable by any
matcher that needs "is this the same flat thing, seen again?":

    kps = orb_keypoints(gray, n=500)            # gray: uint8 (h, w) array
    pairs = ratio_matches(query.desc, stored.desc)
    v = verify(query, stored, pairs, model="homography")   # or "similarity"
    v.inliers, v.coverage, v.transform

`Keypoints` serialise to a compact blob (`to_bytes` / `from_bytes`) for the store's per-entry
variable-length data. Coordinates are kept in 1/8 px fixed point (uint16): exact enough for a
RANSAC threshold of several pixels, 4 B per point instead of 8.

Why ORB: it is in opencv-python-headless 5 (AKAZE/BRISK moved to contrib, which we do not
depend on), fast (~2-3 ms for 500 points at 512 px on this machine) and its 256-bit binary
descriptors go straight into faiss binary indexes and Hamming voting. SIFT is 6x slower to extract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import faiss
import numpy as np

#: Bytes per ORB descriptor (256 bits).
DESC_BYTES = 32
#: Fixed-point scale of stored coordinates.
_XY_SCALE = 8.0
_HEADER = np.dtype([("n", "<u4"), ("w", "<u2"), ("h", "<u2")])

# OpenCV uses its own thread pool per call; on a shared 2-core machine with a threaded HTTP
# server, letting every request spawn more threads only adds contention.
cv2.setNumThreads(1)
faiss.omp_set_num_threads(1)


@dataclass(frozen=True, slots=True)
class Keypoints:
    """Keypoints of one image, strongest first: xy float32 (n, 2) in pixels of an image of
    `size` (w, h); desc uint8 (n, 32) ORB descriptors."""

    xy: np.ndarray
    desc: np.ndarray
    size: tuple[int, int]
    #: ORB pyramid level of each point (0: full size, level l: 1.2**l smaller), when just detected;
    #: not serialised (None after from_bytes)
    octave: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.xy)

    def to_bytes(self) -> bytes:
        head = np.array([(len(self.xy), self.size[0], self.size[1])], dtype=_HEADER)
        xy = np.round(self.xy * _XY_SCALE).clip(0, 65535).astype("<u2")
        return head.tobytes() + xy.tobytes() + np.ascontiguousarray(self.desc, dtype=np.uint8).tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Keypoints:
        head = np.frombuffer(blob, dtype=_HEADER, count=1)[0]
        n, at = int(head["n"]), _HEADER.itemsize
        xy = np.frombuffer(blob, dtype="<u2", count=2 * n, offset=at).reshape(n, 2).astype(np.float32) / _XY_SCALE
        desc = np.frombuffer(blob, dtype=np.uint8, count=DESC_BYTES * n, offset=at + 4 * n).reshape(n, DESC_BYTES)
        return cls(xy, desc, (int(head["w"]), int(head["h"])))

    @staticmethod
    def nbytes_of(blob: bytes) -> int:
        """Length of the serialised keypoints at the start of `blob` (data may follow them)."""
        n = int(np.frombuffer(blob, dtype=_HEADER, count=1)[0]["n"])
        return _HEADER.itemsize + n * (4 + DESC_BYTES)

    def flipped(self) -> Keypoints:
        """Not a mirror of the descriptors (ORB is not mirror-invariant): only for coordinates."""
        xy = self.xy.copy()
        xy[:, 0] = self.size[0] - 1 - xy[:, 0]
        return Keypoints(xy, self.desc, self.size)


EMPTY_DESC = np.zeros((0, DESC_BYTES), dtype=np.uint8)


def orb_keypoints(gray: np.ndarray, n: int = 500, *, fast_threshold: int = 12) -> Keypoints:
    """Up to `n` ORB keypoints of a uint8 greyscale image, strongest first.

    A lower FAST threshold than OpenCV's default (20) keeps low-contrast pictures (a faded page,
    a phone photo in dim light) from coming out with almost no points; ORB still keeps the `n`
    strongest, so high-contrast pictures are unaffected.
    """
    h, w = gray.shape
    orb = cv2.ORB.create(
        nfeatures=n, scaleFactor=1.2, nlevels=8, edgeThreshold=19, patchSize=19, fastThreshold=fast_threshold
    )
    kps, desc = orb.detectAndCompute(gray, None)
    if desc is None or not kps:
        return Keypoints(np.zeros((0, 2), np.float32), EMPTY_DESC, (w, h))
    resp = np.array([k.response for k in kps], dtype=np.float32)
    order = np.argsort(-resp, kind="stable")[:n]
    # the coordinates gathered in C (float32), not by a Python loop over the points
    xy = np.asarray(cv2.KeyPoint.convert(kps), dtype=np.float32).reshape(-1, 2)[order]
    octave = np.fromiter((k.octave for k in kps), dtype=np.int8, count=len(kps))[order]
    return Keypoints(xy, np.ascontiguousarray(desc[order]), (w, h), octave)


#: Fewer keypoints than this share of the budget marks a low-texture picture (smooth gradients,
#: dark skies, blur): it is detected again at LOW_TEXTURE_THRESHOLD.
LOW_TEXTURE_SHARE = 0.5
LOW_TEXTURE_THRESHOLD = 4


def adaptive_keypoints(gray: np.ndarray, n: int, *, spread: bool = False, low: int | None = None) -> Keypoints:
    """Up to `n` keypoints that do not leave a smooth picture, or a smooth part of one, without any.

    - A picture that yields fewer than LOW_TEXTURE_SHARE * n points at the usual FAST threshold is
      detected again at LOW_TEXTURE_THRESHOLD, keeping up to `low` points (default n): its faint
      corners are all it has. Each point costs every verification time, hence `low`.
    - spread=True (queries): up to n more points spread over the frame (spread_keypoints).
    """
    return spread_keypoints(gray, n)[0] if spread else _usual_keypoints(gray, n, low)


def spread_keypoints(gray: np.ndarray, n: int, first: Keypoints | None = None) -> tuple[Keypoints, int]:
    """(keypoints, u): the u usual points (as adaptive_keypoints), then up to n more, the strongest of
    each cell of a 6x6 grid in turn (spread_subset) among 3n detected at the low threshold. A smooth
    picture pasted into a busy frame then keeps points of its own instead of losing them all to
    the busy part. (The n strongest of one larger low-threshold detection are not the usual points:
    ORB shares its budget out over the pyramid levels, and a busy background takes other shares.)
    first: orb_keypoints(gray, n), when the caller has it already."""
    kps = _usual_keypoints(gray, n, first=first)
    cand = orb_keypoints(gray, 3 * n, fast_threshold=LOW_TEXTURE_THRESHOLD)
    idx = spread_subset(cand, n, grid=6)  # sorted indices = strongest first
    if len(kps) and len(idx):  # not the usual points again
        c = cand.xy[idx]  # Chebyshev distance to the nearest usual point (2-D arrays: a
        d = np.abs(c[:, :1] - kps.xy[None, :, 0])  # reduction over a length-2 axis is slow)
        np.maximum(d, np.abs(c[:, 1:] - kps.xy[None, :, 1]), out=d)
        idx = idx[d.min(axis=1) > 1.0]
    both = Keypoints(
        np.concatenate([kps.xy, cand.xy[idx]]),
        np.ascontiguousarray(np.concatenate([kps.desc, cand.desc[idx]])),
        kps.size,
    )
    return both, len(kps)


def _usual_keypoints(gray: np.ndarray, n: int, low: int | None = None, first: Keypoints | None = None) -> Keypoints:
    kps = orb_keypoints(gray, n) if first is None else first
    if len(kps) < LOW_TEXTURE_SHARE * n:
        kps = orb_keypoints(gray, n if low is None else max(low, len(kps)), fast_threshold=LOW_TEXTURE_THRESHOLD)
    return kps


def spread_subset(kps: Keypoints, k: int, grid: int = 4) -> np.ndarray:
    """Indices of at most `k` strong keypoints spread over a grid x grid layout: the strongest of
    each cell first, round-robin. A crop or a watermark then still leaves many of them visible,
    which a plain top-k by response (often clustered on one textured spot) does not."""
    if len(kps) <= k:
        return np.arange(len(kps))
    w, h = kps.size
    cell = (
        np.minimum(kps.xy[:, 1] * grid // max(h, 1), grid - 1) * grid
        + np.minimum(kps.xy[:, 0] * grid // max(w, 1), grid - 1)
    ).astype(np.int64)
    # rank of each point within its cell (points are strongest first, so rank 0 = strongest): its
    # place among its cell's points in a stable sort by cell, minus where that cell's run starts
    by_cell = np.argsort(cell, kind="stable")
    start = np.searchsorted(cell[by_cell], cell[by_cell], side="left")
    rank = np.empty(len(kps), dtype=np.int64)
    rank[by_cell] = np.arange(len(kps)) - start
    order = np.lexsort((np.arange(len(kps)), rank))
    return np.sort(order[:k])


#: ORB levels from this one up are "coarse": a point found there (at 1.2**4 ≈ 2x its size or more)
#: is found again at level 0 or above in a copy of the picture at half its size.
COARSE_OCTAVE = 4


def scale_spread_subset(kps: Keypoints, k: int, grid: int = 4, coarse_share: float = 0.5) -> np.ndarray:
    """Indices (sorted) of at most `k` keypoints: up to coarse_share of them from the coarse pyramid
    levels (octave ≥ COARSE_OCTAVE), spread over the frame (spread_subset), the rest spread_subset
    of the others. The strongest points of a detailed picture are mostly fine ones, which vanish
    when the picture is copied at half its size (pasted into a larger image, then shrunk with it);
    its coarse points are what that copy still shows. Without octaves (deserialised points): the
    plain spread_subset."""
    if kps.octave is None or len(kps) <= k or coarse_share <= 0:
        return spread_subset(kps, k, grid)
    coarse = np.flatnonzero(kps.octave >= COARSE_OCTAVE)
    take = coarse[spread_subset(_subset(kps, coarse), round(coarse_share * k), grid)]
    left = np.ones(len(kps), dtype=bool)
    left[take] = False
    rest = np.flatnonzero(left)  # (np.setdiff1d's answer, without its sorting: 4 instead of 30 µs)
    more = rest[spread_subset(_subset(kps, rest), k - len(take), grid)]
    return np.sort(np.concatenate([take, more]))


def _subset(kps: Keypoints, idx: np.ndarray) -> Keypoints:
    return Keypoints(kps.xy[idx], kps.desc[idx], kps.size, None if kps.octave is None else kps.octave[idx])


def ratio_matches(
    q_desc: np.ndarray, d_desc: np.ndarray, ratio: float = 0.8, max_dist: int = 80
) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, stored indices) of matches passing Lowe's ratio test, one per stored point.

    Each query descriptor's two nearest stored descriptors (Hamming); kept when the best is clearly
    better than the second and close in absolute terms. When several query points pick the same
    stored point only the closest stays, so repeated texture cannot inflate an inlier count.
    """
    if len(q_desc) == 0 or len(d_desc) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    # faiss's Hamming k-NN (popcount on 64-bit words): the same distances as cv2.batchDistance, ~5x
    # faster (800 x 256 descriptors: 0.5 vs 2.5 ms). Which of two equally near points comes first may
    # differ, but such a point fails the ratio test either way.
    dist, idx = faiss.knn_hamming(
        np.ascontiguousarray(q_desc, dtype=np.uint8), np.ascontiguousarray(d_desc, dtype=np.uint8), 2
    )
    d0, d1 = dist[:, 0].astype(np.float32), dist[:, 1].astype(np.float32)
    ok = np.flatnonzero((d0 < ratio * d1) & (d0 <= max_dist))
    qi, di, dd = ok, idx[ok, 0].astype(np.int64), d0[ok]
    order = np.lexsort((dd, di))  # by stored point, closest first
    first = np.ones(len(order), dtype=bool)
    first[1:] = di[order][1:] != di[order][:-1]
    keep = order[first]
    return qi[keep], di[keep]


@dataclass(frozen=True, slots=True)
class Verification:
    """Outcome of geometric verification. transform maps stored-image pixels to query pixels
    (3x3), or is None when no sane transform was found; coverage is the fraction of the stored
    image that lands inside the query frame (1.0: all of it is visible in the query)."""

    inliers: int
    matches: int
    transform: np.ndarray | None
    coverage: float
    #: the inliers' query coordinates (inliers, 2), when a transform was found
    points: np.ndarray | None = None


NO_MATCH = Verification(0, 0, None, 0.0)


def verify(
    query: Keypoints,
    stored: Keypoints,
    pairs: tuple[np.ndarray, np.ndarray],
    *,
    model: Literal["homography", "similarity"] = "homography",
    threshold: float = 5.0,
    min_matches: int = 8,
    min_inliers: int | None = None,
) -> Verification:
    """RANSAC-fit a transform stored → query to the matched pairs; count its inliers.

    model "similarity" (rotation + uniform scale + shift) suits copies of a picture (same_hq): it
    has fewer degrees of freedom, so random matches agree with it far less often. "homography"
    suits a flat page photographed at an angle (picturebook). A transform failing the sanity check
    (sane_transform) counts as no match at all.

    min_inliers: only a transform with at least this many inliers matters to the caller, so fewer
    matches are not tried at all, and RANSAC stops after the iterations that find such a transform
    with its 99 % confidence (ransac_iterations). Without it, hopeless pairs (5 consistent of 18
    matches, say) ran all 500 iterations: 3-30 ms each on the loaded machine.
    """
    qi, di = pairs
    if min_inliers is not None:
        min_matches = max(min_matches, min_inliers)
    if len(qi) < min_matches:
        return Verification(0, len(qi), None, 0.0)
    src = stored.xy[di].reshape(-1, 1, 2)
    dst = query.xy[qi].reshape(-1, 1, 2)
    sample = 2 if model == "similarity" else 4
    iters = RANSAC_ITERS if min_inliers is None else ransac_iterations(min_inliers, len(qi), sample)
    if model == "similarity":
        m, inl = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold, maxIters=iters, confidence=RANSAC_CONFIDENCE
        )
        h = None if m is None else np.vstack([m, [0.0, 0.0, 1.0]])
    else:
        h, inl = cv2.findHomography(src, dst, cv2.RANSAC, threshold, maxIters=iters, confidence=RANSAC_CONFIDENCE)
    if h is None or inl is None or not sane_transform(h, stored.size, query.size):
        return Verification(0, len(qi), None, 0.0)
    mask = inl.ravel().astype(bool)
    n = int(mask.sum())
    if n and _spread(src[mask, 0]) < 0.02 * stored.size[0] * stored.size[1]:
        return Verification(0, len(qi), None, 0.0)  # all inliers on one spot: no real agreement
    return Verification(n, len(qi), h, coverage(h, stored.size, query.size), dst[mask, 0])


RANSAC_ITERS = 500
RANSAC_CONFIDENCE = 0.99


def ransac_iterations(inliers: int, matches: int, sample: int) -> int:
    """Iterations after which RANSAC has drawn an all-inlier sample with RANSAC_CONFIDENCE, if
    `inliers` of `matches` agree with one transform: OpenCV's own stopping rule
    (RANSACUpdateNumIters), with that ratio in place of the best one found so far. At most
    RANSAC_ITERS."""
    good = min(1.0, inliers / max(matches, 1)) ** sample
    if good >= 1.0:
        return 1
    n = np.log(1.0 - RANSAC_CONFIDENCE) / np.log1p(-good)
    return int(min(RANSAC_ITERS, max(1, np.ceil(n))))


def sane_transform(h: np.ndarray, stored_size: tuple[int, int], query_size: tuple[int, int]) -> bool:
    """Does `h` (stored → query) look like a view of a flat picture? Rejects the degenerate fits
    RANSAC produces from random matches: mirror images (negative determinant; mirrored copies are
    searched with a flipped query instead), extreme scale, strong perspective, and a stored frame
    that lands as a non-convex or tiny quadrilateral."""
    if not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-9:
        return False
    h = h / h[2, 2]
    det = float(h[0, 0] * h[1, 1] - h[0, 1] * h[1, 0])
    if not 1 / 64 < det < 64:
        return False
    w, ht = stored_size
    corners = np.array([[0, 0], [w, 0], [w, ht], [0, ht]], dtype=np.float64)
    proj = _project(h, corners)
    if proj is None:
        return False
    edges = np.roll(proj, -1, axis=0) - proj
    cross = edges[:, 0] * np.roll(edges[:, 1], -1) - edges[:, 1] * np.roll(edges[:, 0], -1)
    if not (np.all(cross > 0) or np.all(cross < 0)):
        return False
    area = 0.5 * abs(float(np.sum(proj[:, 0] * np.roll(proj[:, 1], -1) - proj[:, 1] * np.roll(proj[:, 0], -1))))
    qw, qh = query_size
    # the stored picture must appear at a plausible size: ≥ 1 % of the query frame, and not so
    # blown up that the query would show less than ~3 % of it.
    if area < 0.01 * qw * qh or area > 36 * qw * qh:
        return False
    sides = np.hypot(edges[:, 0], edges[:, 1])
    return bool(sides.min() > 0.15 * sides.max())


def coverage(h: np.ndarray, stored_size: tuple[int, int], query_size: tuple[int, int]) -> float:
    """Fraction of the stored image's area that `h` maps inside the query frame."""
    # cv2, not np.linalg: numpy's LAPACK call for a 3x3 matrix took ~8 ms on the shared, loaded
    # machine (its BLAS threads contending), more than the rest of a verification
    ok, inv = cv2.invert(np.asarray(h, dtype=np.float64), flags=cv2.DECOMP_LU)
    if not ok:
        return 0.0
    qw, qh = query_size
    frame = _project(inv, np.array([[0, 0], [qw, 0], [qw, qh], [0, qh]], dtype=np.float64))
    if frame is None:
        return 0.0
    w, ht = stored_size
    rect = np.array([[0, 0], [w, 0], [w, ht], [0, ht]], dtype=np.float32)
    poly = frame.astype(np.float32)
    if _signed_area(poly) < 0:
        poly = poly[::-1].copy()
    inter, _ = cv2.intersectConvexConvex(rect, poly)
    return float(np.clip(inter / (w * ht), 0.0, 1.0))


def logistic(n: float, mid: float, width: float) -> float:
    """A 0..1 confidence from an evidence count: 0.5 at `mid`, 0.88 at mid + 2*width."""
    return float(1.0 / (1.0 + np.exp(-(n - mid) / width)))


def _project(h: np.ndarray, pts: np.ndarray) -> np.ndarray | None:
    p = np.c_[pts, np.ones(len(pts))] @ h.T
    if np.any(p[:, 2] <= 1e-9):
        return None  # part of the picture maps behind the camera
    return p[:, :2] / p[:, 2:3]


def _signed_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - y * np.roll(x, -1)))


def _spread(pts: np.ndarray) -> float:
    """Area of the bounding box of points (a cheap 'are they spread out' measure)."""
    if len(pts) < 2:
        return 0.0
    span = pts.max(axis=0) - pts.min(axis=0)
    return float(span[0] * span[1])
