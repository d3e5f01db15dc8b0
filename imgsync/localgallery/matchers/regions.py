"""Where in a query might a whole picture be? Quadrilateral regions, for pictures too plain for keypoints.

A smooth picture (a soft gradient, a dark sky, a blurred photo) has too few corners for keypoint
matching, so when it is pasted into a larger image, or photographed lying on a table, nothing
finds it. But exactly such a picture has a clean outline: its interior is smooth and its border
is a strong, straight-edged step. So the query's edge map is searched for convex quadrilaterals
(OpenCV contours simplified to 4 corners); each is rectified to a rectangle, and the hash stage
then compares that rectangle with the stored pictures as if it were the whole query. The
transform that rectified it gives the appearance check (appearance.py) an exact alignment.

Cheap (≈ 1 ms at the ≤ 512 px working size) and only searched when the keypoint stages found
nothing sure.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

#: A region must cover between these shares of the query frame.
MIN_AREA, MAX_AREA = 0.05, 0.92
#: At most this many regions per query (the largest first).
MAX_REGIONS = 3
#: Rectified regions are resampled so that their longer side is this long.
SIDE = 256


def quads(rgb: np.ndarray) -> list[np.ndarray]:
    """Convex quadrilaterals (float32 (4, 2), corners clockwise from top-left) outlined in the edge
    map of a uint8 RGB picture, largest first.

    Edges of every colour channel count (a dark blue picture on a dark red table has a weak edge in
    grey levels). Each contour proposes the 4-corner simplification of its convex hull and its
    minimum-area rectangle: a picture's own edges often touch its outline, so the contour itself is
    rarely a clean quadrilateral, but its hull is. A proposal is kept when edges run along at least
    MIN_SUPPORT of its border."""
    h, w = rgb.shape[:2]
    blur = cv2.GaussianBlur(rgb, (5, 5), 0)
    edges = np.zeros((h, w), np.uint8)
    for c in range(3):
        edges |= cv2.Canny(np.ascontiguousarray(blur[..., c]), 30, 90)
    edges = cv2.dilate(edges, np.ones((3, 3), np.uint8))
    contours = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)[0]
    props: list[tuple[float, np.ndarray]] = []
    for c in contours:
        # the contour itself, when it is a clean quadrilateral (a plain picture: nothing touches it)
        approx = cv2.approxPolyDP(c, 0.02 * cv2.arcLength(c, True), True)
        if len(approx) == 4 and cv2.isContourConvex(approx):
            q = _clockwise(approx.reshape(4, 2).astype(np.float32))
            a = cv2.contourArea(q)
            if MIN_AREA * w * h <= a <= MAX_AREA * w * h:
                props.append((a, q))
        hull = cv2.convexHull(c)
        area = cv2.contourArea(hull)
        if not MIN_AREA * w * h <= area <= MAX_AREA * w * h / 0.9:
            continue
        approx = cv2.approxPolyDP(hull, 0.03 * cv2.arcLength(hull, True), True)
        for q in (approx.reshape(-1, 2), cv2.boxPoints(cv2.minAreaRect(c))):
            if len(q) != 4:
                continue
            q = _clockwise(q.astype(np.float32))
            a = cv2.contourArea(q)
            if MIN_AREA * w * h <= a <= MAX_AREA * w * h and _support(edges, q) >= MIN_SUPPORT:
                props.append((a, q))
    found: list[np.ndarray] = []
    for _, q in sorted(props, key=lambda p: -p[0]):
        if not any(np.abs(q - f).max() < 0.03 * max(w, h) for f in found):   # the same outline twice
            found.append(q)
        if len(found) >= MAX_REGIONS:
            break
    return found


#: Share of a proposal's border that must lie on edges.
MIN_SUPPORT = 0.7


def _support(edges: np.ndarray, q: np.ndarray, per_side: int = 48) -> float:
    h, w = edges.shape
    t = np.linspace(0.0, 1.0, per_side, endpoint=False)[:, None]
    pts = np.concatenate([q[i] + t * (q[(i + 1) % 4] - q[i]) for i in range(4)])
    x = np.clip(np.round(pts[:, 0]).astype(np.int64), 0, w - 1)
    y = np.clip(np.round(pts[:, 1]).astype(np.int64), 0, h - 1)
    return float(np.mean(edges[y, x] > 0))


def rectify(img: Image.Image, quad: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """(the region as an upright picture, the 3x3 map from its pixels to the query's pixels)."""
    top, right = np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[2] - quad[1])
    bottom, left = np.linalg.norm(quad[2] - quad[3]), np.linalg.norm(quad[3] - quad[0])
    rw, rh = max(top, bottom), max(left, right)
    k = SIDE / max(rw, rh, 1.0)
    ow, oh = max(8, round(rw * k)), max(8, round(rh * k))
    rect = np.array([[0, 0], [ow, 0], [ow, oh], [0, oh]], dtype=np.float32)
    to_query = cv2.getPerspectiveTransform(rect, quad)
    out = cv2.warpPerspective(np.asarray(img.convert("RGB")), to_query, (ow, oh),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(out), to_query.astype(np.float64)


def _clockwise(q: np.ndarray) -> np.ndarray:
    """Corners ordered top-left, top-right, bottom-right, bottom-left."""
    s = q.sum(axis=1)
    d = q[:, 1] - q[:, 0]
    return np.array([q[np.argmin(s)], q[np.argmin(d)], q[np.argmax(s)], q[np.argmax(d)]], dtype=np.float32)
