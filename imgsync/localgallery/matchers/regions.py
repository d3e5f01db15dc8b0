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

from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image

#: A region must cover between these shares of the query frame.
MIN_AREA, MAX_AREA = 0.05, 0.92
#: At most this many regions per query (the best ranked first: Proposal.rank).
MAX_REGIONS = 2
#: Upright rectangles ranked and kept per query, at most.
MAX_PROPOSALS = 64
#: A side is edged when steps run along at least this share of it.
SIDE_SUPPORT = 0.5
#: A line inside a rectangle crosses it when steps run along this share of its width (height), at
#: least CROSS_MARGIN px (at the ≤ 320 px grid) from the sides parallel to it.
CROSS, CROSS_MARGIN = 0.8, 3
#: Of the MAX_REGIONS regions, at most this many may be crossed proposals.
MAX_CROSSED = 1
#: Rectified regions are resampled so that their longer side is this long.
SIDE = 256


def quads(rgb: np.ndarray, snapped: bool = True) -> list[np.ndarray]:
    """Convex quadrilaterals (float32 (4, 2), corners clockwise from top-left) outlined in the edge
    map of a uint8 RGB picture, at most MAX_REGIONS, best first (Proposal.rank: edged on all four
    sides, then the largest; at most MAX_CROSSED of them crossed by a line inside); with `snapped`,
    each side moved onto the step it lies near (snap). Without `snapped` (picturebook: a photographed
    page's blurred border), the proposals as before this ranking: the largest first, each step's
    rows of edge pixels lines of their own (its regions were not tuned with the ranking).

    Tuning part, contained in larger, seeds 1-20, the regions stage alone: the pasted picture's
    outline proposed 219 -> 258 of 280 times and the picture found 222 -> 260 (adjacent edge rows
    merged into one line: 113 -> 128 of the first 140; four-sided first: 132; at most one crossed
    proposal: 121 -> 128 of the next 140).

    Edges of every colour channel count (a dark blue picture on a dark red table has a weak edge in
    grey levels). Each contour proposes the 4-corner simplification of its convex hull and its
    minimum-area rectangle: a picture's own edges often touch its outline, so the contour itself is
    rarely a clean quadrilateral, but its hull is. A proposal is kept when edges run along at least
    MIN_SUPPORT of its border."""
    h, w = rgb.shape[:2]
    blur = cv2.GaussianBlur(rgb, (5, 5), 0)
    edges: np.ndarray = np.zeros((h, w), np.uint8)
    for channel in range(3):
        edges |= cv2.Canny(np.ascontiguousarray(blur[..., channel]), 30, 90)
    edges = cv2.dilate(edges, np.ones((3, 3), np.uint8))
    contours = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)[0]
    props: list[Proposal] = []
    for c in contours:
        _, _, bw, bh = cv2.boundingRect(c)
        if bw * bh < MIN_AREA * w * h:
            continue  # too small to outline a picture, whatever its shape
        # the contour itself, when it is a clean quadrilateral (a plain picture: nothing touches it)
        approx = cv2.approxPolyDP(c, 0.02 * cv2.arcLength(c, True), True)
        if len(approx) == 4 and cv2.isContourConvex(approx):
            q = _clockwise(approx.reshape(4, 2).astype(np.float32))
            a = cv2.contourArea(q)
            if MIN_AREA * w * h <= a <= MAX_AREA * w * h:
                props.append(Proposal(a, q, min(_side_support(edges, q)) >= SIDE_SUPPORT))
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
            if not MIN_AREA * w * h <= a <= MAX_AREA * w * h:
                continue
            sides = _side_support(edges, q)
            if np.mean(sides) >= MIN_SUPPORT:
                props.append(Proposal(a, q, min(sides) >= SIDE_SUPPORT))
    # upright rectangles are looked for at ≤ 320 px: a pasted picture's sides survive, the cost halves
    k = min(1.0, 320 / max(h, w))
    small = blur if k == 1.0 else cv2.resize(blur, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    props += [p._replace(area=p.area / k**2, quad=p.quad / k) for p in upright_rectangles(small, ranked=snapped)]
    # Both detectors place a side a few pixels off the step (blur, dilation, the 320 px grid): at a
    # pasted picture's size that shifts its hash out of reach (tuning part: the true box gives a
    # fine cosine of 0.88-1.0, the boxes found 0.27-0.7, snapped 0.85-0.99). So each side is
    # snapped to the step; two proposals snapped onto one outline are one.
    pixels = rgb.astype(np.float32) if snapped else None
    found: list[np.ndarray] = []
    outlines: list[np.ndarray] = []  # as proposed
    crossed = 0
    for p in sorted(props, key=Proposal.rank if snapped else Proposal.largest):
        if snapped and p.crossed and crossed >= MAX_CROSSED:
            continue
        if any(_same_outline(p.quad, f, w, h) for f in outlines):
            continue
        q = p.quad if pixels is None else snap(pixels, p.quad)
        if any(_same_outline(q, f, w, h) for f in found):
            continue
        outlines.append(p.quad)
        found.append(q)
        crossed += p.crossed
        if len(found) >= MAX_REGIONS:
            break
    return found


def _same_outline(a: np.ndarray, b: np.ndarray, w: int, h: int) -> bool:
    return bool(np.abs(a - b).max() < 0.03 * max(w, h))


def upright_rectangles(rgb: np.ndarray, keep: int = 10, ranked: bool = True) -> list[Proposal]:
    """Axis-aligned rectangles whose sides are step edges: a picture pasted into another one (a
    collage, a screenshot, a page layout), best first (Proposal.rank), at most MAX_PROPOSALS.

    Busy pictures have edges everywhere inside, so their outline is rarely a clean contour; but its
    sides are long straight runs of horizontal or vertical steps, which the inside of a picture
    seldom has. The `keep` longest lines of each direction (a step's adjacent rows of edge pixels
    merged into one line: they are one side) are paired into rectangles; those with MIN_SUPPORT of
    their border on such steps are kept. Each is marked for ranking: edged on all four sides
    (SIDE_SUPPORT each), and crossed (another line runs across most of its inside: two pictures
    side by side, or a picture and the box it touches, outlined as one). With ranked=False (picturebook): no
    lines merged, every proposal, the largest first."""
    h, w = rgb.shape[:2]
    img = rgb.astype(np.int16)
    gy = np.zeros((h, w), np.int16)
    gx = np.zeros((h, w), np.int16)
    gy[1:-1] = np.abs(img[2:] - img[:-2]).max(axis=2)
    gx[:, 1:-1] = np.abs(img[:, 2:] - img[:, :-2]).max(axis=2)
    horiz = cv2.dilate(((gy > 40) & (gy > 2 * gx)).astype(np.uint8), np.ones((3, 1), np.uint8))
    vert = cv2.dilate(((gx > 40) & (gx > 2 * gy)).astype(np.uint8), np.ones((1, 3), np.uint8))
    ys = np.array(sorted({r[0] for r in _runs(horiz, int(0.12 * w), keep, ranked)}), dtype=np.int64)
    xs = np.array(sorted({c[0] for c in _runs(vert.T, int(0.12 * h), keep, ranked)}), dtype=np.int64)
    if len(ys) < 2 or len(xs) < 2:
        return []
    # prefix sums along each row of `horiz` and each column of `vert`: a side's support in O(1)
    hsum = np.zeros((h, w + 1), np.int32)
    np.cumsum(horiz, axis=1, out=hsum[:, 1:])
    vsum = np.zeros((h + 1, w), np.int32)
    np.cumsum(vert, axis=0, out=vsum[1:])
    # every pair of lines of each direction, then every (row pair, column pair) at once: (P, Q) arrays
    i, j = np.triu_indices(len(ys), 1)
    y0, y1 = ys[i][:, None], ys[j][:, None]
    i, j = np.triu_indices(len(xs), 1)
    x0, x1 = xs[i][None, :], xs[j][None, :]
    bw, bh = (x1 - x0).astype(np.float32), (y1 - y0).astype(np.float32)
    top = hsum[y0, x1] - hsum[y0, x0]
    bottom = hsum[y1, x1] - hsum[y1, x0]
    left = vsum[y1, x0] - vsum[y0, x0]
    right = vsum[y1, x1] - vsum[y0, x1]
    area = bw * bh
    ok = (bw >= 0.15 * w) & (bh >= 0.15 * h) & (area >= MIN_AREA * w * h) & (area <= MAX_AREA * w * h)
    ok &= (top + bottom + left + right) >= MIN_SUPPORT * 2 * (bw + bh)
    if not ok.any():
        return []
    four = np.minimum(np.minimum(top, bottom) / bw, np.minimum(left, right) / bh) >= SIDE_SUPPORT
    # crossed: a line strictly inside (CROSS_MARGIN from the sides) with edges along CROSS of the
    # rectangle's width (height)
    m = CROSS_MARGIN
    inside_y = (ys[None, None, :] > y0[..., None] + m) & (ys[None, None, :] < y1[..., None] - m)  # (P, 1, R)
    along_y = hsum[ys[:, None], xs[None, :]]  # (R, X): prefix sums of each line at each column
    ia, ib = np.triu_indices(len(xs), 1)
    cover_y = (along_y[:, ib] - along_y[:, ia]).T[None]  # (1, Q, R)
    crossed = np.any(inside_y & (cover_y >= CROSS * bw[..., None]), axis=2)
    inside_x = (xs[None, None, :] > x0[..., None] + m) & (xs[None, None, :] < x1[..., None] - m)  # (1, Q, C)
    along_x = vsum[ys[:, None], xs[None, :]]  # (Y, C)
    ia, ib = np.triu_indices(len(ys), 1)
    cover_x = (along_x[ib] - along_x[ia])[:, None, :]  # (P, 1, C)
    crossed |= np.any(inside_x & (cover_x >= CROSS * bh[..., None]), axis=2)
    p, q = np.nonzero(ok)
    y0b, y1b = np.broadcast_to(y0, ok.shape)[p, q], np.broadcast_to(y1, ok.shape)[p, q]
    x0b, x1b = np.broadcast_to(x0, ok.shape)[p, q], np.broadcast_to(x1, ok.shape)[p, q]
    props = [
        Proposal(float(a), _box((int(a0), int(b0), int(a1), int(b1))), bool(f), bool(c))
        for a, a0, b0, a1, b1, f, c in zip(area[p, q], x0b, y0b, x1b, y1b, four[p, q], crossed[p, q], strict=True)
    ]
    if not ranked:  # every one: a step's adjacent rows make near-copies of one outline, many of them
        return sorted(props, key=Proposal.largest)
    return sorted(props, key=Proposal.rank)[:MAX_PROPOSALS]


class Proposal(NamedTuple):
    """A region proposal: its area (px²), its corners (float32 (4, 2), clockwise from top-left), whether
    steps run along each of its four sides, and whether a line crosses its inside."""

    area: float
    quad: np.ndarray
    four_sided: bool
    crossed: bool = False

    def rank(self) -> tuple[bool, float]:
        """Edged on all four sides first, then the largest first."""
        return (not self.four_sided, -self.area)

    def largest(self) -> float:
        return -self.area


def _runs(mask: np.ndarray, min_len: int, keep: int, merge: bool = True) -> list[tuple[int, int, int]]:
    """The `keep` longest lines of set pixels at least min_len long: per row its longest horizontal
    run (gaps ≤ 3 px bridged), adjacent rows with such runs merged into one line, the row with
    the longest run standing for it: (row, start, end)."""
    bridged = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((1, 5), np.uint8))
    h, w = bridged.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = bridged
    d = np.diff(padded, axis=1)
    ry, rx0 = np.nonzero(d == 1)
    _, rx1 = np.nonzero(d == -1)  # same row order: every start has its end
    length = rx1 - rx0
    ok = length >= min_len
    ry, rx0, rx1, length = ry[ok], rx0[ok], rx1[ok], length[ok]
    order = np.lexsort((-length, ry))  # per row, longest first
    first = np.ones(len(order), bool)
    first[1:] = ry[order][1:] != ry[order][:-1]
    best = order[first]  # one per row, by row
    # lines: runs of adjacent rows; each stood for by its longest run
    if not merge:
        line = np.arange(len(best))
    elif len(best):
        line = np.concatenate([[0], np.cumsum(np.diff(ry[best]) > 1)])
    else:
        line = np.zeros(0, np.int64)
    by_line = np.lexsort((-length[best], line))
    head = np.ones(len(by_line), bool)
    head[1:] = line[by_line][1:] != line[by_line][:-1]
    best = best[by_line[head]]
    best = best[np.argsort(-length[best], kind="stable")][:keep]
    return [(int(ry[k]), int(rx0[k]), int(rx1[k])) for k in best]


def _box(r: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = r
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


#: Share of a proposal's border that must lie on edges.
MIN_SUPPORT = 0.7
#: A side is snapped to the strongest step within this many pixels of where it was found.
SNAP = 6


def _sample(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear samples (n, 3) of img at float (n, 2) points (x, y), clamped at the border."""
    m = pts.astype(np.float32).reshape(-1, 1, 2)
    out = cv2.remap(img, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, img.shape[2])


def snap(img: np.ndarray, q: np.ndarray, reach: int = SNAP, tilt: bool = False) -> np.ndarray:
    """The quadrilateral q with each side moved along its normal (by at most `reach` px, in half
    pixels) to where the picture steps most sharply across it, the corners then re-intersected.
    A pasted or photographed picture's border is a step all along its length; the step's mean
    size across the side peaks where the side lies on the border. With `tilt`, each half of a
    side is moved on its own and the side passes through both: a side found slightly turned
    (the outline of a blob with rounded corners) is turned back onto the border."""
    c = q.mean(axis=0)
    halves = ((0.1, 0.5), (0.5, 0.9)) if tilt else ((0.1, 0.9),)
    offsets = np.arange(-2 * reach, 2 * reach + 1, dtype=np.float32) / 2
    lines = []
    for i in range(4):
        a, b = q[i], q[(i + 1) % 4]
        d = b - a
        length = float(np.linalg.norm(d))
        if length < 8:
            return q
        n = np.array([d[1], -d[0]], dtype=np.float32) / length
        if float(np.dot(n, (a + b) / 2 - c)) < 0:
            n = -n  # outward
        points = []
        for t0, t1 in halves:
            t = np.linspace(t0, t1, 32 // len(halves), dtype=np.float32)[:, None]
            base = a + t * d  # (k, 2)
            pts = base[None, :, :] + offsets[:, None, None] * n  # (offsets, k, 2)
            inside = _sample(img, (pts - 0.5 * n).reshape(-1, 2))
            outside = _sample(img, (pts + 0.5 * n).reshape(-1, 2))
            step = np.abs(outside - inside).max(axis=1).reshape(len(offsets), -1).mean(axis=1)
            points.append(a + float(t.mean()) * d + offsets[int(np.argmax(step))] * n)
        lines.append((points[0], d) if len(points) == 1 else (points[0], points[1] - points[0]))
    corners = corners_of(lines)
    return q if corners is None else corners


def inset(q: np.ndarray, d: float = 1.0) -> np.ndarray:
    """The quadrilateral q with each side moved `d` px inwards (corners re-intersected)."""
    c = q.mean(axis=0)
    lines = []
    for i in range(4):
        a, b = q[i], q[(i + 1) % 4]
        n = np.array([b[1] - a[1], a[0] - b[0]], dtype=np.float32)
        n /= max(float(np.linalg.norm(n)), 1e-6)
        if float(np.dot(n, (a + b) / 2 - c)) > 0:
            n = -n  # inward
        lines.append((a + d * n, b - a))
    corners = corners_of(lines)
    return q if corners is None else corners


def corners_of(lines: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """The four corners where consecutive sides meet, each side a (point, direction) line: corner i is
    sides i-1 and i; None if two consecutive sides are parallel."""
    out = []
    for i in range(4):
        (p1, d1), (p2, d2) = lines[i - 1], lines[i]
        m = np.array([[d1[0], -d2[0]], [d1[1], -d2[1]]], dtype=np.float64)
        if abs(np.linalg.det(m)) < 1e-6:
            return None
        s = np.linalg.solve(m, (p2 - p1).astype(np.float64))
        out.append(p1 + s[0] * d1)
    return np.array(out, dtype=np.float32)


def _side_support(edges: np.ndarray, q: np.ndarray, per_side: int = 48) -> list[float]:
    """The share of each side of q that lies on edges."""
    h, w = edges.shape
    t = np.linspace(0.0, 1.0, per_side, endpoint=False)[:, None]
    pts = np.concatenate([q[i] + t * (q[(i + 1) % 4] - q[i]) for i in range(4)])
    x = np.clip(np.round(pts[:, 0]).astype(np.int64), 0, w - 1)
    y = np.clip(np.round(pts[:, 1]).astype(np.int64), 0, h - 1)
    return [float(v) for v in (edges[y, x] > 0).reshape(4, per_side).mean(axis=1)]


def rectify(img: Image.Image, quad: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """(the region as an upright picture, the 3x3 map from its pixels to the query's pixels)."""
    top, right = float(np.linalg.norm(quad[1] - quad[0])), float(np.linalg.norm(quad[2] - quad[1]))
    bottom, left = float(np.linalg.norm(quad[2] - quad[3])), float(np.linalg.norm(quad[3] - quad[0]))
    rw, rh = max(top, bottom), max(left, right)
    k = SIDE / max(rw, rh, 1.0)
    ow, oh = max(8, round(rw * k)), max(8, round(rh * k))
    rect = np.array([[0, 0], [ow, 0], [ow, oh], [0, oh]], dtype=np.float32)
    to_query = cv2.getPerspectiveTransform(rect, quad)
    out = cv2.warpPerspective(
        np.asarray(img.convert("RGB")),
        to_query,
        (ow, oh),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return Image.fromarray(out), to_query.astype(np.float64)


def even_light(img: Image.Image) -> Image.Image:
    """The picture with a linear light gradient divided out: a plane fitted to log-luminance
    (light falling off across a photographed page multiplies every channel alike). A picture's own
    gradient is removed too, so this is only ever tried beside the picture as it is."""
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    h, w = rgb.shape[:2]
    lum = np.log(rgb.mean(axis=2) + 8.0).astype(np.float64)
    # least squares of lum ~ a x + b y + c over the grid, by its 3 x 3 normal equations: on a grid
    # every sum they need is a product of per-row and per-column sums (what lstsq over all h * w
    # pixels gave, at a fifth of the cost)
    xs = np.arange(w, dtype=np.float64) / w - 0.5
    ys = np.arange(h, dtype=np.float64) / h - 0.5
    sx, sy = xs.sum(), ys.sum()
    normal = np.array(
        [
            [h * (xs @ xs), sx * sy, h * sx],
            [sx * sy, w * (ys @ ys), w * sy],
            [h * sx, w * sy, float(h * w)],
        ]
    )
    rhs = np.array([lum.sum(axis=0) @ xs, lum.sum(axis=1) @ ys, lum.sum()])
    coef = np.linalg.solve(normal, rhs)
    plane = (coef[0] * xs[None, :] + coef[1] * ys[:, None]).astype(np.float32)  # the slope only
    out = rgb * np.exp(-plane)[..., None]
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _clockwise(q: np.ndarray) -> np.ndarray:
    """Corners ordered top-left, top-right, bottom-right, bottom-left."""
    s = q.sum(axis=1)
    d = q[:, 1] - q[:, 0]
    return np.array([q[np.argmin(s)], q[np.argmin(d)], q[np.argmax(s)], q[np.argmax(d)]], dtype=np.float32)
