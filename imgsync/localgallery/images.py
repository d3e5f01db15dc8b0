"""Image bytes → a checked, decoded picture, with the cloud's error codes; and the cont_sign.

Checks, in this order (each raises ApiError with the cloud's code and a message saying what and why):

1. no bytes at all                                   → 216200 empty image
2. Pillow cannot identify the bytes                  → 216203
3. header dimensions (read before any pixel is decoded, so decompression bombs are never
   decoded): longest side > 4096 px, shortest side < the library's minimum, or a long/short
   ratio beyond the library's limit                  → 216202
4. a recognised format other than JPEG/PNG/BMP       → 216201
5. full decode (truncated or corrupt pixel data)     → 216203

The format check (4) comes before the full decode (5) so that we never spend time decoding a
format the gallery refuses; a truncated GIF therefore answers 216201, not 216203. Which code the
cloud gives for that combination is unconfirmed.

cont_sign: the cloud's signature is "u32,u32" and its derivation is unpublished. Ours is the first
8 bytes of sha256(image bytes) as two big-endian uint32. "Identical image" therefore means
*identical bytes*: a re-encoded copy of the same picture is a different image (it has another
cont_sign and may be added again); the same bytes cannot be added twice to one library.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from imgsync.libraries import ACCEPTED_FORMATS, Library
from imgsync.localgallery.errors import (
    EMPTY_IMAGE,
    IMAGE_DECODE_ERROR,
    IMAGE_FORMAT_ERROR,
    IMAGE_SIZE_ERROR,
    ApiError,
)
from imgsync.pillow_warnings import caught_warnings

#: Extraction works on pictures no larger than this (longest side); matchers resize further.
WORK_SIDE = 512
#: Quality of the working copy the store keeps of each added image (for re-extraction).
COPY_QUALITY = 90
#: The largest shrink done by OpenCV's bilinear (see _shrink); beyond it Pillow's antialiased filter.
EXACT_SHRINK_MAX = 1.5
#: JPEG draft mode may decode at 1/2, 1/4 or 1/8 scale as long as both sides stay ≥ this.
DRAFT_MIN_SIDE = 256


@dataclass(frozen=True, slots=True)
class Decoded:
    """A checked image: its file format and header size, and an RGB working copy (≤ WORK_SIDE)."""

    format: str
    width: int
    height: int
    pixels: Image.Image


log = logging.getLogger(__name__)


def cont_sign_of(data: bytes) -> str:
    """The image's signature: sha256 of the bytes, first 8 bytes read as two big-endian uint32."""
    a, b = struct.unpack(">II", hashlib.sha256(data).digest()[:8])
    return f"{a},{b}"


def size_problem(width: int, height: int, library: Library) -> str | None:
    """Why the library refuses an image of this size, or None. Pure, so it is table-tested."""
    long_side, short_side = max(width, height), min(width, height)
    if long_side > library.max_side:
        return f"image is {width}x{height} px; the longest side may be at most {library.max_side} px"
    if short_side < library.min_side:
        return f"image is {width}x{height} px; {library.name} needs the shortest side ≥ {library.min_side} px"
    if library.max_aspect is not None and long_side > library.max_aspect * short_side:
        return (
            f"image is {width}x{height} px (aspect {long_side / short_side:.1f}:1); "
            f"{library.name} accepts at most {library.max_aspect:g}:1"
        )
    return None


def load_image(data: bytes, library: Library) -> Decoded:
    """Check `data` against `library`'s limits and decode it; raises ApiError (see module doc)."""
    if not data:
        raise ApiError(EMPTY_IMAGE, "the image has 0 bytes")
    # Pillow warns about odd-but-readable files ("Corrupt EXIF data", "malformed MPO file"): the answer
    # is the same either way, so they go to the debug log, never raw onto a server's stderr.
    with caught_warnings() as caught:  # (catch_warnings is not thread-safe: the server decodes on several)
        img = _open(data)
        problem = size_problem(img.width, img.height, library)
        if problem:
            raise ApiError(IMAGE_SIZE_ERROR, problem)
        if img.format not in ACCEPTED_FORMATS:
            raise ApiError(IMAGE_FORMAT_ERROR, f"image is {img.format}; only JPEG, PNG and BMP are accepted")
        decoded = Decoded(img.format, img.width, img.height, _decode(img))
    for w in caught:
        log.debug("image %dx%d %s: Pillow: %s", img.width, img.height, img.format, w.message)
    return decoded


def encode_copy(pixels: Image.Image) -> bytes:
    """The working copy the store keeps: the decoded RGB picture (≤ WORK_SIDE) as a JPEG.
    ~1 ms and ~30-60 kB for 512 px; enough to re-extract any matcher's features later.

    Encoded by OpenCV, which lets go of the GIL while it works, with the libjpeg settings of
    Pillow's save(quality=COPY_QUALITY) (4:2:0, standard tables): the same pixels
    (tests/test_localgallery_images.py pins them) and the same bytes, but for a source JPEG's
    comment, which Pillow copied into the copy and OpenCV does not."""
    rgb = pixels if pixels.mode == "RGB" else pixels.convert("RGB")
    # Pillow keeps RGB as 4 bytes a pixel: exporting them as they are ("RGBX") is a copy, while plain
    # tobytes()/np.asarray packs them to 3 (0.15 vs 0.06 ms for 512 px, with the GIL held); cvtColor
    # drops the 4th byte as it swaps red and blue, without the GIL.
    rgbx = np.frombuffer(rgb.tobytes("raw", "RGBX"), dtype=np.uint8).reshape(rgb.height, rgb.width, 4)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgbx, cv2.COLOR_RGBA2BGR), [cv2.IMWRITE_JPEG_QUALITY, COPY_QUALITY])
    if not ok:  # pragma: no cover - OpenCV refuses only sizes and modes a working copy never has
        buf = io.BytesIO()
        pixels.save(buf, "JPEG", quality=COPY_QUALITY)
        return buf.getvalue()
    return jpeg.tobytes()


def decode_copy(jpeg: bytes) -> Image.Image:
    """A stored working copy back to RGB pixels (no library limits: it was checked when added)."""
    with Image.open(io.BytesIO(jpeg)) as img:
        return img.convert("RGB")


def _open(data: bytes) -> Image.Image:
    """Read the header only. Pillow's own bomb guard fires here for absurd sizes: that is a size error."""
    try:
        # Between MAX_IMAGE_PIXELS and twice that Pillow only warns (caught by load_image, logged at
        # debug level); our size check refuses such images anyway (4096² is far below the limit).
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ApiError(
            IMAGE_SIZE_ERROR, f"image is far too large ({e}); the longest side may be at most 4096 px"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ApiError(IMAGE_DECODE_ERROR, f"the bytes are not a readable image ({_why(e)})") from None


def _decode(img: Image.Image) -> Image.Image:
    """Decode every pixel (catching truncation) at the smallest scale extraction can use."""
    if img.format == "JPEG":
        # draft() lets libjpeg decode at 1/2..1/8 scale: a 1 MP JPEG decodes ~4x faster.
        img.draft("RGB", _draft_size(img.width, img.height))
    try:
        img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ApiError(IMAGE_DECODE_ERROR, f"the image data is truncated or corrupt ({_why(e)})") from None
    try:
        # match what a viewer shows, not the sensor's orientation; exif_transpose copies the whole
        # picture even when it has nothing to turn, so it is called only when there is
        if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not reject an otherwise good picture
        pass
    return _shrink(_to_rgb(img))


def _shrink(img: Image.Image) -> Image.Image:
    """The RGB picture at most WORK_SIDE px, at the size Pillow's thumbnail() gives.

    A shrink by at most EXACT_SHRINK_MAX (a 1 MP JPEG's 1/2-scale draft, 576 px → 512) is OpenCV's
    bit-exact bilinear: 0.6 instead of Pillow's 2.6 ms, without the GIL. It does not widen its
    filter as Pillow's antialiased one does, which at this ratio keeps the picture a little sharper
    and never aliases. A larger shrink (a PNG, a JPEG that drafted poorly) keeps Pillow's filter."""
    if max(img.size) <= WORK_SIDE:
        return img
    size = _thumb_size(img.width, img.height)
    if max(img.width / size[0], img.height / size[1]) > EXACT_SHRINK_MAX:
        img.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
        return img
    # "RGBX": Pillow's own 4 bytes a pixel, exported without packing (see encode_copy)
    rgbx = np.frombuffer(img.tobytes("raw", "RGBX"), dtype=np.uint8).reshape(img.height, img.width, 4)
    small = cv2.resize(rgbx, size, interpolation=cv2.INTER_LINEAR_EXACT)
    return Image.frombytes("RGB", size, small.tobytes(), "raw", "RGBX")


def _thumb_size(width: int, height: int) -> tuple[int, int]:
    """The size img.thumbnail((WORK_SIDE, WORK_SIDE)) makes of width x height (its aspect rounding)."""
    aspect = width / height
    x = y = WORK_SIDE
    if x / y >= aspect:
        x = _round_aspect(y * aspect, lambda n: abs(aspect - n / y))
    else:
        y = _round_aspect(x / aspect, lambda n: 0 if n == 0 else abs(aspect - x / n))
    return x, y


def _round_aspect(number: float, key: Callable[[int], float]) -> int:
    return max(min(math.floor(number), math.ceil(number), key=key), 1)


def _draft_size(width: int, height: int) -> tuple[int, int]:
    """The size to request from draft(): keep the shortest side ≥ DRAFT_MIN_SIDE."""
    scale = DRAFT_MIN_SIDE / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode → RGB; transparency is flattened onto white, as a viewer would show it."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit and float greyscale: stretch to 8 bits instead of clipping at 255.
        a = np.asarray(img, dtype=np.float32)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _why(e: BaseException) -> str:
    """Pillow's words, without the in-memory file it names ("cannot identify image file <_io.BytesIO …>")."""
    text = re.sub(r"\s*<_io\.\w+ object at 0x[0-9a-f]+>", "", str(e)).strip()
    return text[:120] if text else type(e).__name__
