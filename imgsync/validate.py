"""Would the gallery accept this image? `inspect_image` looks (Pillow, I/O); `judge_image` decides (pure).

Checks, in this order (the first failure is the one-line reason the file is rejected for):

1. unreadable: empty file, not an image, a header over Pillow's decompression-bomb guard, truncated or
   corrupt pixel data (every pixel is decoded, so truncation is caught)
2. shortest side below the library's minimum (never fixed: imgsync does not upscale)
3. long/short ratio beyond the library's limit (picturebook 10:1, materiel 20:1; never fixed: cropping
   would change the picture)
4. format other than JPEG/PNG/BMP, longest side over 4096 px, base64 over 4 MB: rejected with
   fit = "reject"; with fit = "shrink" they are fixable, unless scaling the longest side down to 4096 px
   would push the shortest side below the minimum, or the image has too many pixels to decode safely.

Decompression bombs are refused from their header: dimensions are read first and nothing is decoded
when the image has more than `max_pixels` (a 16.7 MP ceiling when shrinking is off, since anything larger
breaks the 4096 px rule anyway; `SHRINK_MAX_PIXELS` when it is on). Pillow's own guard (its
DecompressionBombError, raised from the header) becomes a rejection, never a crash.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

from imgsync.libraries import ACCEPTED_FORMATS, MAX_IMAGE_BASE64, MAX_SIDE, Library, get_library
from imgsync.pillow_warnings import caught_warnings

Fit = Literal["reject", "shrink"]

#: The most pixels decoded when the image will be uploaded as is: anything larger has a side over 4096.
REJECT_MAX_PIXELS = MAX_SIDE * MAX_SIDE
#: The most pixels decoded for shrinking (≈ a 60 MP camera; ~240 MB as RGBA while it is converted).
SHRINK_MAX_PIXELS = 60_000_000
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What Pillow saw. `problem` is set when the bytes cannot be used at all (reason for rejection)."""

    byte_size: int
    format: str | None = None  # Pillow's name: JPEG, PNG, BMP, GIF, WEBP, TIFF, ...; None if not an image
    width: int = 0
    height: int = 0
    mode: str = ""
    has_alpha: bool = False
    decoded: bool = False  # every pixel (of the first frame) decoded without error
    problem: str | None = None
    #: what Pillow warned about while reading ("Corrupt EXIF data", ...): told at -v as the file's own note
    warnings: tuple[str, ...] = ()

    @property
    def base64_size(self) -> int:
        return base64_size(self.byte_size)


def base64_size(byte_size: int) -> int:
    """Length of the base64 text of `byte_size` raw bytes (what the 4 MB limit is measured on)."""
    return 4 * math.ceil(byte_size / 3)


# --------------------------------------------------------------------------- looking (Pillow)


def inspect_image(source: bytes | str | Path, *, max_pixels: int = REJECT_MAX_PIXELS, decode: bool = True) -> ImageInfo:
    """Read the header, then (if it has at most `max_pixels` and `decode`) decode every pixel.

    Never raises for bad image data: problems end up in ImageInfo.problem. OSError from reading a
    path does propagate (the caller knows whether that means "vanished" or "unreadable").
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if not data:
        return ImageInfo(0, problem="empty file (0 bytes)")
    # Pillow warns about odd-but-readable files (bad EXIF, palette transparency, bomb-sized headers
    # under its hard limit); the checks below judge those files, so the warnings are kept as notes
    # (printed raw they would land on top of a progress bar).
    with caught_warnings() as caught:  # (catch_warnings is not thread-safe: see pillow_warnings)
        info = _inspect(data, max_pixels, decode)
    if caught:
        info = _with(info, warnings=tuple(dict.fromkeys(str(w.message) for w in caught)))
    return info


def _inspect(data: bytes, max_pixels: int, decode: bool) -> ImageInfo:
    try:
        img = Image.open(BytesIO(data))
    except Image.DecompressionBombError as e:
        return ImageInfo(len(data), problem=f"decompression bomb refused without decoding ({pillow_says(e)})")
    except UnidentifiedImageError:
        return ImageInfo(len(data), problem=f"not an image ({_what_it_looks_like(data)})")
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        return ImageInfo(len(data), problem=f"not a readable image ({pillow_says(e)})")
    with img:
        fmt = img.format or "unknown"
        base = ImageInfo(len(data), fmt, img.width, img.height, img.mode, _has_alpha(img))
        if img.width <= 0 or img.height <= 0:
            return _with(base, problem=f"corrupt {fmt} (header says {img.width}x{img.height} px)")
        if not decode or img.width * img.height > max_pixels:
            return base
        problem = _decode_all(img)
    if problem:
        return _with(base, problem=problem)
    return _with(base, decoded=True)


def _decode_all(img: Image.Image) -> str | None:
    """Decode every pixel of the first frame; a one-line reason if the data is truncated or corrupt."""
    fmt = img.format or "image"
    if fmt == "JPEG":
        # libjpeg still reads the whole stream at 1/8 scale (so truncation is caught) but does ~1/64
        # of the work: validation stays cheap for big photos.
        img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
    try:
        img.load()
    # Pillow's plugins raise many exception types on malformed data (OSError, SyntaxError,
    # struct.error, IndexError, zlib errors, ...): every one of them means "this image is broken".
    except Exception as e:  # noqa: BLE001
        text = pillow_says(e)
        kind = "truncated" if "truncated" in text.lower() else "corrupt"
        return f"{kind} {fmt} ({text})"
    return None


def _what_it_looks_like(data: bytes) -> str:
    """A hint for the user: a text file renamed .jpg is the usual case."""
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "Pillow does not recognise the bytes as any image format"
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return "it looks like text"
    return "Pillow does not recognise the bytes as any image format"


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def _with(info: ImageInfo, **changes: object) -> ImageInfo:
    return replace(info, **changes)  # type: ignore[arg-type]


def pillow_says(e: BaseException) -> str:
    """The first line of Pillow's words, without the in-memory file it names ("<_io.BytesIO object at …>")."""
    text = re.sub(r"\s*<_io\.\w+ object at 0x[0-9a-f]+>", "", str(e)).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


# --------------------------------------------------------------------------- deciding (pure)


def judge_image(info: ImageInfo, library: str | Library, fit: Fit) -> str | None:
    """The one-line reason `library` would refuse this image (after shrinking, if fit="shrink"), or None."""
    lib = library if isinstance(library, Library) else get_library(library)
    if info.problem:
        return info.problem
    w, h = info.width, info.height
    long_side, short_side = max(w, h), min(w, h)
    if short_side < lib.min_side:
        return f"{w}x{h} px: shortest side is below {lib.name}'s {lib.min_side} px (images are never upscaled)"
    if lib.max_aspect is not None and long_side > lib.max_aspect * short_side:
        return f"{w}x{h} px: aspect {long_side / short_side:.1f}:1 is beyond {lib.name}'s {lib.max_aspect:g}:1 limit"
    if fit == "reject":
        return _reject_reason(info, lib)
    if not needs_shrink(info, lib):
        return None if info.decoded else f"{w}x{h} px: not decoded ({_mp(w * h)} over the decode limit)"
    if w * h > SHRINK_MAX_PIXELS or not info.decoded:
        return f"{w}x{h} px: too large to shrink safely ({_mp(w * h)}, limit {_mp(SHRINK_MAX_PIXELS)})"
    tw, th = fit_size(w, h, lib.max_side)
    if min(tw, th) < lib.min_side:
        return (
            f"{w}x{h} px: scaling the longest side down to {lib.max_side} px would make the shortest "
            f"side {min(tw, th)} px, below {lib.name}'s {lib.min_side} px"
        )
    return None


def _reject_reason(info: ImageInfo, lib: Library) -> str | None:
    shrink_hint = 'set fit = "shrink" to'
    if info.format not in ACCEPTED_FORMATS:
        return f"{info.format} is not accepted by {lib.name} (jpg/png/bmp only); {shrink_hint} convert"
    if max(info.width, info.height) > lib.max_side:
        return (
            f"{info.width}x{info.height} px: longest side is over the {lib.max_side} px limit; "
            f"{shrink_hint} scale it down"
        )
    if info.base64_size > MAX_IMAGE_BASE64:
        return f"{describe_base64(info.base64_size)} base64 is over the 4 MB limit; {shrink_hint} re-encode it"
    if not info.decoded:
        return f"{info.width}x{info.height} px: not decoded ({_mp(info.width * info.height)})"
    return None


def needs_shrink(info: ImageInfo, library: Library) -> bool:
    """True when the bytes cannot go up as they are but re-encoding could fix them."""
    return (
        info.format not in ACCEPTED_FORMATS
        or max(info.width, info.height) > library.max_side
        or info.base64_size > MAX_IMAGE_BASE64
    )


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longest side is at most `max_side`; never enlarged.

    The short side is rounded up so the long/short ratio never grows past the original's (an image
    exactly at a library's aspect limit stays within it).
    """
    long_side = max(width, height)
    if long_side <= max_side:
        return width, height
    scale = max_side / long_side
    if width >= height:
        return max_side, max(1, min(max_side, math.ceil(height * scale - 1e-9)))
    return max(1, min(max_side, math.ceil(width * scale - 1e-9))), max_side


def describe_base64(size: int) -> str:
    """ "5.1 MB" (MiB, as the cloud's "4M" is read); more digits when one would round onto the limit."""
    mb = size / _MIB
    text = f"{mb:.1f}"
    if text == f"{MAX_IMAGE_BASE64 / _MIB:.1f}":
        text = f"{mb:.3f}"
    return f"{text} MB"


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def base64_fits(byte_size: int) -> bool:
    return base64_size(byte_size) <= MAX_IMAGE_BASE64


__all__ = [
    "ImageInfo",
    "inspect_image",
    "judge_image",
    "needs_shrink",
    "fit_size",
    "base64_size",
    "base64_fits",
    "describe_base64",
    "REJECT_MAX_PIXELS",
    "SHRINK_MAX_PIXELS",
]
