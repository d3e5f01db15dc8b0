"""Does the aligned picture look the same? A check of colour and detail once the geometry is known.

The hash stage and the keypoint stage both work on grey levels and on coarse structure, so they
cannot tell a red flag from a green one, nor a picture from the same clip-art recoloured, and a
keypoint-poor object on a plain background (a ball, a coin) can line up with another such object
well enough for either stage. Once a candidate's alignment is known (the crop pair of the hash
stage, or the keypoint transform), the query is warped into the stored picture's frame and the two
are compared cell by cell on a THUMB x THUMB grid:

- detail: the normalised cross-correlation of luma (brightness and contrast changes cancel);
- colour: how much of the stored picture's chroma (Cb, Cr) the aligned query fails to explain with
  one gain (so a saturation change passes, a hue change does not); grey pictures skip it.

Stored per entry: the YCbCr thumbnail (THUMB x THUMB x 3 uint8 = 3 KB), kept with the keypoints in
the entry's variable-length blob, read only for the few rows that are about to be called a match.
Per query: its working image reduced to at most QUERY_SIDE px (never stored).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

THUMB = 32
THUMB_BYTES = THUMB * THUMB * 3
#: Longest side of the query picture kept for the check (query features only).
QUERY_SIDE = 192
#: The aligned query is sampled at this resolution, then averaged down to THUMB (like the stored one).
_FINE = 4 * THUMB
#: At least this fraction of the stored grid must land inside the query to judge at all.
MIN_OVERLAP = 0.2
#: Below this chroma energy per cell (Cb/Cr units², mean over the grid) a picture counts as grey.
GREY_ENERGY = 12.0
#: Added to both mean lumas before Agreement.light takes their ratio.
LIGHT_OFFSET = 16.0


def thumbnail(img: Image.Image) -> np.ndarray:
    """The stored picture's YCbCr thumbnail, uint8 (THUMB, THUMB, 3), the whole frame squashed."""
    rgb = img if img.mode == "RGB" else img.convert("RGB")  # (convert would copy an RGB picture)
    small = rgb.resize((THUMB, THUMB), Image.Resampling.BOX, reducing_gap=None)
    return np.asarray(small.convert("YCbCr"), dtype=np.uint8)


def query_picture(img: Image.Image) -> np.ndarray:
    """The query's YCbCr picture, at most QUERY_SIDE px, uint8 (h, w, 3); its size is the frame."""
    k = QUERY_SIDE / max(img.size)
    small = img.convert("RGB")
    if k < 1:
        small = small.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.Resampling.BOX)
    return np.asarray(small.convert("YCbCr"), dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class Agreement:
    """overlap: fraction of the stored grid seen in the query; detail: luma NCC (-1..1);
    colour: unexplained share of the stored chroma energy (0 = same colours, ≥ 1 = unrelated),
    or 0.0 when the stored picture is grey; tint: when it is grey, how coloured the query is there
    (the median cell's chroma, Cb/Cr units; a grey stored picture explains no colour), else 0.0;
    light: the query's mean luma over the stored picture's there (offset by LIGHT_OFFSET, so that
    dark pictures do not make a ratio of noise), 1.0 when nothing was compared."""

    overlap: float
    detail: float
    colour: float
    tint: float = 0.0
    light: float = 1.0


NOT_SEEN = Agreement(0.0, 0.0, 0.0)


def compare_near(
    stored: np.ndarray,
    stored_size: tuple[int, int],
    query: np.ndarray,
    query_size: tuple[int, int],
    h: np.ndarray,
    step: float = 0.03,
) -> Agreement:
    """compare() at the best of a 3x3 set of shifts of the alignment by ±step of the stored picture:
    for alignments that are only approximate (the hash stage assumes centred crops, a crop is
    rarely centred exactly). The best shift is the one that disagrees least (colour + 1 - detail)."""
    best = NOT_SEEN
    sw, sh = stored_size
    for dy in (0.0, -step, step):
        for dx in (0.0, -step, step):
            t = np.array([[1, 0, dx * sw], [0, 1, dy * sh], [0, 0, 1]], dtype=np.float64)
            a = compare(stored, stored_size, query, query_size, h @ t)
            if a.overlap >= MIN_OVERLAP and (best.overlap < MIN_OVERLAP or _cost(a) < _cost(best)):
                best = a
            if best.overlap >= MIN_OVERLAP and _cost(best) < GOOD_ENOUGH:
                return best  # lined up already (a resized or re-compressed copy): no need to look around
    return best


#: A comparison this close (colour residual + 1 - luma correlation) ends the search for a better shift.
GOOD_ENOUGH = 0.15


def _cost(a: Agreement) -> float:
    return a.colour + (1.0 - a.detail)


def compare(
    stored: np.ndarray, stored_size: tuple[int, int], query: np.ndarray, query_size: tuple[int, int], h: np.ndarray
) -> Agreement:
    """Compare the stored thumbnail with the query warped into its frame.

    h: 3x3, stored-picture pixels → query-picture pixels (both in working-image pixels of the given
    sizes); `query` is query_picture() of the query whose working size is query_size.
    """
    sw, sh = stored_size
    qw, qh = query_size
    qpx_h, qpx_w = query.shape[:2]
    grid_to_stored = np.diag([sw / _FINE, sh / _FINE, 1.0])
    query_to_small = np.diag([qpx_w / qw, qpx_h / qh, 1.0])
    # pixel centres: a grid cell (u, v) covers stored [u, u+1) * sw/_FINE; sample at its centre
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]], dtype=np.float64)
    unshift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]], dtype=np.float64)
    m = unshift @ query_to_small @ h @ grid_to_stored @ shift
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    try:
        warped = cv2.warpPerspective(
            query.astype(np.float32), m, (_FINE, _FINE), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
        seen = cv2.warpPerspective(
            np.ones((qpx_h, qpx_w), np.float32),
            m,
            (_FINE, _FINE),
            flags=flags,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    except cv2.error:
        return NOT_SEEN
    k = _FINE // THUMB
    seen_c = seen.reshape(THUMB, k, THUMB, k).mean(axis=(1, 3))
    ok = seen_c > 0.99
    if ok.mean() < MIN_OVERLAP:
        return Agreement(float(ok.mean()), 0.0, 0.0)
    q = warped.reshape(THUMB, k, THUMB, k, 3).mean(axis=(1, 3))[ok]
    s = stored.astype(np.float32)[ok]
    sc, qc = s[:, 1:] - 128, q[:, 1:] - 128
    light = (float(q[:, 0].mean()) + LIGHT_OFFSET) / (float(s[:, 0].mean()) + LIGHT_OFFSET)
    return Agreement(float(ok.mean()), _ncc(s[:, 0], q[:, 0]), _colour_residual(sc, qc), _tint(sc, qc), light)


#: The detail correlation ignores this share of cells that disagree most (a watermark, a caption box).
OUTLIERS = 0.2


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Luma correlation over the cells left after dropping the OUTLIERS that a linear fit
    (brightness, contrast) explains worst: an opaque box over a smooth picture would otherwise
    dominate its variance."""
    r = _plain_ncc(a, b)
    if len(a) < 20 or r <= 0:
        return r
    da, db = a - a.mean(), b - b.mean()
    k = float((da * db).sum() / max(float((da * da).sum()), 1e-6))
    resid = np.abs(db - k * da)
    keep = resid <= np.quantile(resid, 1 - OUTLIERS)
    return max(r, _plain_ncc(a[keep], b[keep]))


def _plain_ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if den < 1e-6:
        # a flat region on either side: "the same" only if both are flat
        return 1.0 if float(np.abs(a).max(initial=0) + np.abs(b).max(initial=0)) < 4.0 else 0.0
    return float((a * b).sum() / den)


def _tint(s: np.ndarray, q: np.ndarray) -> float:
    """For a grey stored picture: the query's median cell chroma (a coloured logo or caption over a
    part of it does not move the median); 0.0 when the stored picture has colours of its own."""
    if not _grey(s):
        return 0.0
    return float(np.sqrt(np.median((q * q).sum(axis=1))))


def _grey(chroma: np.ndarray) -> bool:
    """Chroma (Cb, Cr about 0) this weak per cell is a grey picture's."""
    return float((chroma * chroma).sum()) / len(chroma) < GREY_ENERGY


def _colour_residual(s: np.ndarray, q: np.ndarray) -> float:
    """Share of the stored chroma energy that the query's chroma, times its best gain in
    [0.5, 2], leaves unexplained: a saturation change is explained by the gain, a hue change is not."""
    if _grey(s):
        return 0.0
    es = float((s * s).sum())
    eq = float((q * q).sum())
    g = float(np.clip((s * q).sum() / eq, 0.5, 2.0)) if eq > 1e-6 else 0.5
    r = s - g * q
    return float((r * r).sum() / es)
