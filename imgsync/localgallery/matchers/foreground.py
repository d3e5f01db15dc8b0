"""Which of two keypoint matches is in front? An object photographed in front of a picture that is
itself in the library (a product held up before a poster, a sticker on a photo).

Both stored pictures then match the query: the picture behind (A) over most of the frame, the
object in front (B) over a part of it. A search for "this object" must put B first; as the query is
mostly A, A's embedding and its many keypoints would rank it above B. The geometry tells them apart:
where B is seen (the hull of its inliers in the query) lies on A's frame projected into the query,
and there A has no inliers although the rest of A has them at a density that would put some
there: B hides that part of A. (B's whole frame is not used: an object photographed on a plain
background has a frame larger than the object.) (When B is a
crop of A instead, e.g. a detail of the same picture, A's inliers continue inside B's frame and
nothing changes.)

Only rows with keypoint evidence (a transform and the inliers' query coordinates) take part.
"""

from __future__ import annotations

import cv2
import numpy as np

from imgsync.localgallery.matchers import keypoints as K

#: B counts as an object in front only with this many inliers at least: a weak match (a detail of A
#: found with 12 inliers, say) has too small a hull to say where A should have had points.
MIN_FRONT_INLIERS = 20
#: B counts as an object in front only when its hull covers at most this share of the query.
MAX_FRONT_SHARE = 0.8
#: ... and at least this share of it lies on A's frame.
ON_BEHIND = 0.8
#: A is hidden there when it has at most this share of the inliers its density elsewhere predicts,
#: and the prediction is at least MIN_EXPECTED inliers (otherwise the test says nothing).
HIDDEN_SHARE = 0.35
MIN_EXPECTED = 1.5
#: Inliers of the picture behind are counted in this central share (linear) of the front hull.
CORE = 0.85


def frame_in_query(v: K.Verification, stored_size: tuple[int, int], query_size: tuple[int, int]) -> np.ndarray | None:
    """The stored picture's outline projected into the query and clipped to its frame (float32 (n, 2))."""
    if v.transform is None:
        return None
    w, h = stored_size
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    p = np.c_[corners, np.ones(4)] @ np.asarray(v.transform, dtype=np.float64).T
    if np.any(p[:, 2] <= 1e-9):
        return None
    poly = (p[:, :2] / p[:, 2:]).astype(np.float32)
    qw, qh = query_size
    frame = np.array([[0, 0], [qw, 0], [qw, qh], [0, qh]], dtype=np.float32)
    area, clipped = cv2.intersectConvexConvex(_convex(poly), frame)
    return None if clipped is None or area <= 1.0 else clipped.reshape(-1, 2)


def seen(v: K.Verification) -> np.ndarray | None:
    """Where a match is seen in the query: the convex hull of its inliers (float32 (n, 2))."""
    if v.points is None or len(v.points) < 3:
        return None
    hull = _convex(v.points)
    return hull if len(hull) >= 3 and cv2.contourArea(hull) > 1.0 else None


def hides(
    front: K.Verification,
    front_poly: np.ndarray,
    behind: K.Verification,
    behind_poly: np.ndarray,
    query_size: tuple[int, int],
) -> bool:
    """Whether `front` (seen in front_poly of the query, see seen()) hides a part of `behind` (its
    frame in the query behind_poly, see frame_in_query())."""
    if behind.points is None or behind.inliers == 0 or front.inliers < MIN_FRONT_INLIERS:
        return False
    qw, qh = query_size
    a_front = float(cv2.contourArea(front_poly))
    if a_front > MAX_FRONT_SHARE * qw * qh:
        return False
    a_behind = float(cv2.contourArea(behind_poly))
    overlap, _ = cv2.intersectConvexConvex(_convex(front_poly), _convex(behind_poly))
    if a_front <= 0 or a_behind <= a_front or overlap < ON_BEHIND * a_front:
        return False
    # counted inside the front hull shrunk a little: the picture behind keeps points along the
    # object's outline (its corners there are half background)
    core = (front_poly - front_poly.mean(axis=0)) * CORE + front_poly.mean(axis=0)
    inside = sum(cv2.pointPolygonTest(core, (float(x), float(y)), False) >= 0 for x, y in behind.points)
    outside = behind.inliers - inside
    expected = outside * overlap / max(a_behind - overlap, 1.0)  # the density elsewhere, over B's area
    return expected >= MIN_EXPECTED and inside <= HIDDEN_SHARE * expected


def _convex(poly: np.ndarray) -> np.ndarray:
    return cv2.convexHull(np.ascontiguousarray(poly, dtype=np.float32)).reshape(-1, 2)
