"""Where is the page in a phone photo of it? The table's colours, read from the frame's border.

regions.py finds a picture by its outline in the edge map. A photographed page too plain for
keypoints (a colour gradient, a near-uniform background) on a striped or grained table defeats
that: the page's weak outline merges with the table's stripes where they touch it, so the edge
contours never close into a quadrilateral. But a photo of a page has the table all round it: the
frame's border strips show what the table looks like there, and the table between them is
predicted by interpolating those strips (a Coons patch: exact for light falling off across the
frame and for stripes or grain running along either axis, smooth elsewhere). The page is then
what differs from that prediction: its outline comes from colour, not from edges, and a page
of any texture stands out from the table as long as its colours differ from the table's there.

The largest such blob, its holes filled, is reduced to a quadrilateral: its convex hull
simplified to four corners, each side then refitted to the blob's outline points along it
(cv2.fitLine); the caller snaps the sides onto the page's step at full size (regions.snap), as
the rectified page's hash needs its corners to the pixel.

The border strips also tell how the page is lit (table_light): the lamp lights the table as it
lights the page, and a plain page's own gradient is faint beside the lamp's.
"""

from __future__ import annotations

import cv2
import numpy as np

from imgsync.localgallery.matchers import regions as R

#: The frame's border strips that are taken to be table: this share of each side.
STRIP = 0.025
#: Segmentation works at this longest side (cheap; the outline is snapped at full size).
SIDE = 192
#: A pixel is "page" when it differs from the predicted table by this many grey levels (max over
#: channels), and at least this many times the table's own spread about its prediction.
MIN_STEP, SPREAD_K = 16.0, 3.0
#: Gaps this wide (px at SIDE) in the page's mask are bridged.
CLOSE = 9
#: The difference from the table is averaged with this Gaussian sigma (px at SIDE).
AVERAGE = 2.0
#: The page blob must cover between these shares of the frame and fill this much of its hull.
MIN_AREA, MAX_AREA, MIN_SOLIDITY = 0.1, 0.85, 0.85


def table_prediction(rgb: np.ndarray, strip: int) -> np.ndarray:
    """The table under the whole frame predicted from its border strips (float32, like rgb): a
    Coons patch of the four strips' medians across their thickness."""
    img = rgb.astype(np.float32)
    h, w = img.shape[:2]
    top = np.median(img[:strip], axis=0)  # (w, 3)
    bottom = np.median(img[h - strip :], axis=0)
    left = np.median(img[:, :strip], axis=1)  # (h, 3)
    right = np.median(img[:, w - strip :], axis=1)
    u = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    v = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    # (1-v)T(u) + vB(u) + (1-u)L(v) + uR(v) minus the bilinear blend of the four corners, with the
    # corners' share folded into the side strips: four broadcasts into one buffer
    vv = v[:, 0]
    left = left - ((1 - vv) * top[0] + vv * bottom[0])
    right = right - ((1 - vv) * top[-1] + vv * bottom[-1])
    out = (1 - v) * top[None]
    out += v * bottom[None]
    out += (1 - u) * left[:, None]
    out += u * right[:, None]
    return out


def page_quad(rgb: np.ndarray) -> np.ndarray | None:
    """The page's quadrilateral (float32 (4, 2), clockwise from top-left, in rgb's pixels) in a
    photo of a page lying on a table, or None when nothing page-like stands out from the table."""
    h, w = rgb.shape[:2]
    k = min(1.0, SIDE / max(h, w))
    small = rgb if k == 1.0 else cv2.resize(rgb, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (3, 3), 0)
    sh, sw = small.shape[:2]
    strip = max(2, round(STRIP * min(sh, sw)))
    # signed difference, averaged over a few pixels: the table's stripes predicted under a plain
    # page average out, the page's step at its outline stays
    signed = small.astype(np.float32) - table_prediction(small, strip)
    diff = np.abs(cv2.GaussianBlur(signed, (0, 0), AVERAGE)).max(axis=2)
    border = np.ones((sh, sw), bool)
    border[strip:-strip, strip:-strip] = False
    spread = float(np.percentile(diff[border], 75))
    mask = (diff > max(MIN_STEP, SPREAD_K * spread)).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # the table's stripes, predicted under the page too, cut a plain page into strips where its
    # colour is close to the table's: bridge them, then fill what the outline encloses
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((CLOSE, CLOSE), np.uint8))
    outlines = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0]
    if not outlines:
        return None
    contour = max(outlines, key=cv2.contourArea)
    area = float(cv2.contourArea(contour))
    if not MIN_AREA * sh * sw <= area <= MAX_AREA * sh * sw:
        return None
    hull = cv2.convexHull(contour)
    if area < MIN_SOLIDITY * cv2.contourArea(hull):
        return None  # not one flat sheet: a blob of the table's own variation, or an object's shape
    corners = _four_corners(hull)
    if corners is None:
        return None
    q = _refit(corners, contour.reshape(-1, 2).astype(np.float32))
    if q is None:
        return None
    return (q + 0.5) / k - 0.5


def _four_corners(hull: np.ndarray) -> np.ndarray | None:
    """The hull simplified to 4 corners (the smallest tolerance that gets there)."""
    length = cv2.arcLength(hull, True)
    for eps in (0.02, 0.03, 0.04, 0.06, 0.08):
        approx = cv2.approxPolyDP(hull, eps * length, True)
        if len(approx) == 4:
            return R._clockwise(approx.reshape(4, 2).astype(np.float32))
        if len(approx) < 4:
            return None
    return None


def _refit(q: np.ndarray, pts: np.ndarray) -> np.ndarray | None:
    """Each side refitted (robust line fit) to the outline points nearest to it and away from the
    corners; the corners re-intersected."""
    lines = []
    for i in range(4):
        a, b = q[i], q[(i + 1) % 4]
        d = b - a
        length = float(np.linalg.norm(d))
        if length < 4:
            return None
        d = d / length
        rel = pts - a
        along = rel @ d
        off = np.abs(rel @ np.array([-d[1], d[0]], dtype=np.float32))
        near = (along > 0.1 * length) & (along < 0.9 * length) & (off < max(2.0, 0.04 * length))
        if near.sum() < 8:
            lines.append((a, d))
            continue
        vx, vy, x0, y0 = cv2.fitLine(pts[near], cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
        lines.append((np.array([x0, y0], np.float32), np.array([vx, vy], np.float32)))
    return R.corners_of(lines)


def table_light(rgb: np.ndarray, strip: float = STRIP) -> np.ndarray:
    """The light falling on the table, as a gain per pixel (float32 (h, w), mean 1): a plane fitted
    to the log-luminance of the frame's border strips, which are table. The lamp lights the page
    as it lights the table, and a plain page's own gradient is faint beside it; divided by this,
    the page keeps its own gradient (regions.even_light removes that too)."""
    h, w = rgb.shape[:2]
    s = max(2, round(strip * min(h, w)))
    border = np.ones((h, w), bool)
    border[s:-s, s:-s] = False
    ys, xs = np.nonzero(border)
    lum = np.log(rgb[ys, xs].astype(np.float32).mean(axis=1) + 8.0)
    a = np.c_[xs / w - 0.5, ys / h - 0.5, np.ones(len(xs))]
    coef, *_ = np.linalg.lstsq(a, lum, rcond=None)
    x = np.arange(w, dtype=np.float32) / w - 0.5
    y = np.arange(h, dtype=np.float32) / h - 0.5
    return np.exp(coef[0] * x[None, :] + coef[1] * y[:, None]).astype(np.float32)
