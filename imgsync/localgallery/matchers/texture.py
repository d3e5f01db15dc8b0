"""Texture descriptors for fabric / material search, numpy + OpenCV only (no scikit-image at run time).

A fabric photographed again is another patch of the same stationary texture: its local statistics
repeat, its layout does not. So every descriptor here is a histogram of local structure, pooled
over the whole picture (position-free), and rotation-tolerant:

- multi-scale LBP: rotation-invariant uniform 8-neighbour codes ("riu2", 10 bins) at dilations
  1, 2 and 4 px: fine weave, thread and pattern scale;
- GLCM: grey-level co-occurrence of 8 levels at distances 1, 2, 4, averaged over 4 directions;
  levels are the picture's own grey octiles, so brightness and contrast changes cancel out;
- HSV colour histogram 8x4x4 (the dye).

Each histogram is square-rooted and L2-normalised (Hellinger), so the dot product of two is their
Bhattacharyya coefficient in 0..1. Computed at the working size (≤ 512 px, images.py) without
upscaling, so two patches photographed at the same scale compare at the same scale.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

LBP_DILATIONS = (1, 2, 4)
LBP_BINS = 10  # riu2 with 8 neighbours: 9 uniform patterns (0..8 bits set) + "non-uniform"
GLCM_LEVELS = 8
GLCM_DISTANCES = (1, 2, 4)
HSV_BINS = (8, 4, 4)

LBP_DIM = LBP_BINS * len(LBP_DILATIONS)
GLCM_DIM = GLCM_LEVELS * GLCM_LEVELS * len(GLCM_DISTANCES)
HSV_DIM = int(np.prod(HSV_BINS))

# The 8 neighbours in circular order, as (dy, dx) unit steps.
_RING = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _riu2_table() -> np.ndarray:
    """8-bit LBP code → riu2 bin: bits set if the circular pattern has ≤ 2 transitions, else 9."""
    table = np.empty(256, dtype=np.uint8)
    for code in range(256):
        bits = [(code >> i) & 1 for i in range(8)]
        transitions = sum(bits[i] != bits[(i + 1) % 8] for i in range(8))
        table[code] = sum(bits) if transitions <= 2 else 9
    return table


_RIU2 = _riu2_table()


def _hellinger(h: np.ndarray) -> np.ndarray:
    r = np.sqrt(np.maximum(h.astype(np.float64), 0.0))
    n = np.linalg.norm(r)
    return (r / n if n > 0 else r).astype(np.float32)


def lbp_histogram(gray: np.ndarray) -> np.ndarray:
    """Multi-scale riu2 LBP histograms, concatenated (LBP_DIM,), each scale Hellinger-normalised."""
    g = gray.astype(np.int16)
    out = []
    for d in LBP_DILATIONS:
        h, w = g.shape
        centre = g[d : h - d, d : w - d]
        code = np.zeros(centre.shape, dtype=np.uint8)
        for bit, (dy, dx) in enumerate(_RING):
            nb = g[d + dy * d : h - d + dy * d, d + dx * d : w - d + dx * d]
            code |= (nb >= centre).astype(np.uint8) << bit
        hist = np.bincount(_RIU2[code].ravel(), minlength=LBP_BINS)
        out.append(_hellinger(hist))
    return np.concatenate(out) / np.sqrt(len(LBP_DILATIONS))


def glcm_histogram(gray: np.ndarray) -> np.ndarray:
    """Symmetric, direction-averaged co-occurrence matrices of octile grey levels (GLCM_DIM,)."""
    edges = _octile_edges(gray) if gray.dtype == np.uint8 else np.quantile(gray, _OCTILES)
    if gray.dtype == np.uint8:  # a level per grey value, looked up: the same as searching each pixel
        q = np.searchsorted(edges, np.arange(256), side="right").astype(np.int32)[gray]  # 0..7
    else:
        q = np.searchsorted(edges, gray, side="right").astype(np.int32)
    h, w = q.shape
    out = []
    for d in GLCM_DISTANCES:
        counts = np.zeros(GLCM_LEVELS * GLCM_LEVELS, dtype=np.int64)
        for dy, dx in ((0, d), (d, d), (d, 0), (d, -d)):  # 0°, 45°, 90°, 135°
            x0, x1 = max(0, -dx), w - max(0, dx)  # columns where both x and x + dx are inside
            a = q[0 : h - dy, x0:x1]
            b = q[dy:h, x0 + dx : x1 + dx]
            counts += np.bincount((a * GLCM_LEVELS + b).ravel(), minlength=GLCM_LEVELS**2)
        m = counts.reshape(GLCM_LEVELS, GLCM_LEVELS)
        out.append(_hellinger((m + m.T).ravel()))
    return np.concatenate(out) / np.sqrt(len(GLCM_DISTANCES))


_OCTILES = np.linspace(0, 1, GLCM_LEVELS + 1)[1:-1]


def _octile_edges(gray: np.ndarray) -> np.ndarray:
    """np.quantile(gray, _OCTILES) (its default, linear interpolation) of a uint8 picture, from its
    histogram instead of a partial sort of every pixel: the same numbers (the interpolation
    fractions are multiples of 1/8, exact in binary), ~10x faster."""
    n = gray.size
    cum = np.cumsum(np.bincount(gray.ravel(), minlength=256))
    at = _OCTILES * (n - 1)
    lo = np.floor(at).astype(np.int64)
    a = np.searchsorted(cum, lo, side="right")  # the lo-th smallest value
    b = np.searchsorted(cum, np.minimum(lo + 1, n - 1), side="right")
    return a + (b - a) * (at - lo)


def hsv_histogram(rgb: np.ndarray) -> np.ndarray:
    """HSV colour histogram (HSV_DIM,), Hellinger-normalised. rgb: uint8 (h, w, 3)."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # H in 0..179
    hist = cv2.calcHist([hsv], [0, 1, 2], None, list(HSV_BINS), [0, 180, 0, 256, 0, 256])
    return _hellinger(hist.ravel())


def texture_descriptors(img: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lbp, glcm, hsv) of an RGB picture, each unit length."""
    rgb = np.asarray(img.convert("RGB"))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return lbp_histogram(gray), glcm_histogram(gray), hsv_histogram(rgb)
