"""Global image descriptors computed with numpy + Pillow only. Pure functions of the pixels.

Every function takes the RGB working image (≤ 512 px, see images.py) and returns fixed-size arrays.
The same-image descriptors are computed on a few centred crops, so that a copy cropped by up to
~10-20 % still lines up with one of the stored crops (a global hash alone fails at ~5 % crops; see
shared/reference/matching.md §1).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: Centred crops (fraction of each side kept) at which the same-image descriptors are computed.
CROPS = (1.0, 0.9, 0.8)
#: Query-crop / stored-crop pairs compared: "same framing", "the query is a crop of the stored
#: image" and "the stored image is a crop of the query".
CROP_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 0), (2, 0))

_DCT_N = 32
_HASH_N = 8  # 8x8 low frequencies → 64-bit pHash
_FINE_N = 12  # 12x12 low frequencies minus DC → 143-d fine descriptor
FINE_DIM = _FINE_N * _FINE_N - 1


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    return np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)).astype(np.float32)


_DCT = _dct_matrix(_DCT_N)
_u, _v = np.meshgrid(np.arange(_FINE_N), np.arange(_FINE_N), indexing="ij")
# Natural images put most energy in the lowest frequencies; weighting by sqrt(frequency) spreads the
# descriptor over more effective dimensions, so unrelated pictures correlate less (measured: the 99th
# percentile cosine between unrelated images falls from 0.41 to 0.36) at almost no cost to copies.
_FINE_WEIGHT = (np.hypot(_u, _v) ** 0.5).astype(np.float32).ravel()[1:]
#: The fine descriptor's dimensions from the lowest frequency up (where a plain picture's energy lies).
FINE_BY_FREQUENCY = np.argsort(np.hypot(_u, _v).ravel()[1:], kind="stable")


def _crop_box(size: tuple[int, int], keep: float) -> tuple[float, float, float, float]:
    w, h = size
    dx, dy = w * (1 - keep) / 2, h * (1 - keep) / 2
    return (dx, dy, w - dx, h - dy)


def same_image_descriptors(img: Image.Image, gray: Image.Image | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(phash uint64[len(CROPS)], fine float32[len(CROPS), FINE_DIM] L2-normalised).

    pHash: DCT of a 32x32 greyscale thumbnail, 8x8 lowest frequencies, bit = coefficient > median.
    Fine: the 12x12 lowest DCT coefficients without DC (so brightness offsets vanish and a
    brightness gain only scales the vector, which the cosine ignores).
    gray: img.convert("L"), when the caller has it already.
    """
    if gray is None:
        gray = img.convert("L")
    hashes = np.empty(len(CROPS), dtype=np.uint64)
    fine = np.empty((len(CROPS), FINE_DIM), dtype=np.float32)
    for i, keep in enumerate(CROPS):
        g = np.asarray(
            gray.resize((_DCT_N, _DCT_N), Image.Resampling.BOX, box=_crop_box(gray.size, keep)), dtype=np.float32
        )
        c = _DCT @ g @ _DCT.T
        low = c[:_HASH_N, :_HASH_N].ravel()
        hashes[i] = np.packbits(low > _median(low)).view(">u8")[0]
        f = c[:_FINE_N, :_FINE_N].ravel()[1:] * _FINE_WEIGHT
        fine[i] = f / (np.linalg.norm(f) + 1e-6)
    return hashes, fine


_MID = (_HASH_N * _HASH_N // 2 - 1, _HASH_N * _HASH_N // 2)


def _median(low: np.ndarray) -> np.float32:
    """np.median of the 64 (an even count) finite float32 coefficients, bit for bit: the mean of the
    two middle values, added and halved in float32 as np.mean does; without np.median's generic
    machinery (axis handling, NaN check, mean's reduction): 3 µs instead of 25-45 µs, three times per picture."""
    part = np.partition(low, _MID)
    return (part[_MID[0]] + part[_MID[1]]) / np.float32(2)


# --- descriptors for visual similarity ---------------------------------------------------------

_HUE_BINS, _SAT_BINS, _VAL_BINS = 8, 3, 3
_ORI_BINS, _ORI_GRID = 8, 4
_LAYOUT_N = 8
SIMILAR_DIM = _HUE_BINS * _SAT_BINS * _VAL_BINS + _ORI_BINS * _ORI_GRID**2 + 3 * _LAYOUT_N**2


def colour_histogram(img: Image.Image) -> np.ndarray:
    """HSV 8x3x3 histogram, square-rooted (Hellinger) and L2-normalised."""
    hsv = np.asarray(img.resize((64, 64), Image.Resampling.BOX).convert("HSV"), dtype=np.int32)
    h = hsv[..., 0] * _HUE_BINS // 256
    s = hsv[..., 1] * _SAT_BINS // 256
    v = hsv[..., 2] * _VAL_BINS // 256
    idx = (h * _SAT_BINS + s) * _VAL_BINS + v
    hist = np.bincount(idx.ravel(), minlength=_HUE_BINS * _SAT_BINS * _VAL_BINS).astype(np.float32)
    h = np.sqrt(hist)
    return _unit(h - h.mean())


def orientation_histogram(img: Image.Image) -> np.ndarray:
    """Gradient-orientation histograms (8 unsigned bins) on a 4x4 grid, magnitude-weighted,
    square-rooted and L2-normalised: a coarse HOG that describes edges and texture direction."""
    g = np.asarray(img.convert("L").resize((128, 128), Image.Resampling.BOX), dtype=np.float32)
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    gx[:, 1:-1] = g[:, 2:] - g[:, :-2]
    gy[1:-1, :] = g[2:, :] - g[:-2, :]
    mag = np.hypot(gx, gy)
    ang = np.mod(np.arctan2(gy, gx), np.pi)
    obin = np.minimum((ang * (_ORI_BINS / np.pi)).astype(np.int32), _ORI_BINS - 1)
    cell = 128 // _ORI_GRID
    rows, cols = np.indices(g.shape) // cell
    idx = (rows * _ORI_GRID + cols) * _ORI_BINS + obin
    hist = np.bincount(idx.ravel(), weights=mag.ravel(), minlength=_ORI_GRID**2 * _ORI_BINS)
    h = np.sqrt(hist.astype(np.float32))
    return _unit(h - h.mean())


def layout(img: Image.Image) -> np.ndarray:
    """8x8 YCbCr thumbnail minus its mean, L2-normalised: where the light, dark and colours are."""
    t = np.asarray(img.resize((_LAYOUT_N, _LAYOUT_N), Image.Resampling.BOX).convert("YCbCr"), dtype=np.float32)
    t = t - t.mean(axis=(0, 1), keepdims=True)
    return _unit(t.ravel())


def similarity_descriptor(img: Image.Image, weights: tuple[float, float, float]) -> np.ndarray:
    """Colour, edges and layout, each unit-length, weighted and concatenated to one unit vector,
    so its dot product is the weighted mean of the three cosines."""
    parts = (colour_histogram(img), orientation_histogram(img), layout(img))
    total = sum(weights)
    v = np.concatenate([p * np.sqrt(w / total) for p, w in zip(parts, weights, strict=True)])
    return v.astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / (np.linalg.norm(v) + 1e-6)).astype(np.float32)
