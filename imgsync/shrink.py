"""fit = "shrink": re-encode an image the gallery would refuse as is into one it accepts.

What gets re-encoded: a format other than JPEG/PNG/BMP (WebP, GIF — first frame —, TIFF, ...), a
longest side over 4096 px, or base64 over 4 MB. Everything else is uploaded byte for byte.

Choices (documented in the README's "fit" section):
- Never upscale, never crop: too-small images and aspect-ratio failures stay rejected (validate.py).
- Output format: PNG first for images with transparency or palette/1-bit images (graphics: keeps the
  alpha and the sharp edges, and is small); if that PNG is over the limit, or for everything else
  (photos), JPEG quality 90, transparency flattened onto white (JPEG has no alpha; white is what a
  viewer shows and what the local gallery matches on).
- Still over 4 MB base64 at q90: quality 80, then 70; then the picture is scaled down 20 % at a time
  (but never below the library's shortest side).
- EXIF orientation is applied before re-encoding: the re-encoded file carries no EXIF, so without it
  a portrait photo would go up lying on its side. Files uploaded unchanged keep their bytes (and
  their EXIF) exactly; whether the cloud honours the orientation tag is unconfirmed.
- The ICC profile is kept (colours stay as the file shows them).
- Pillow's encoders are deterministic for a given Pillow version, so the bytes the scan's trial
  shrink measured are the bytes prepare_upload sends.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from imgsync.errors import ImgsyncError
from imgsync.libraries import Library, get_library
from imgsync.pillow_warnings import caught_warnings
from imgsync.validate import (
    SHRINK_MAX_PIXELS,
    Fit,
    base64_fits,
    base64_size,
    describe_base64,
    fit_size,
    inspect_image,
    needs_shrink,
    pillow_says,
)

JPEG_QUALITIES = (90, 80, 70)
#: Each further step scales the picture to this fraction when no quality fits.
SCALE_STEP = 0.8


class ShrinkError(ImgsyncError):
    """The image could not be made to fit (it stays rejected); the message says why."""


class SourceChangedError(ImgsyncError):
    """The file's bytes are no longer those the scan hashed."""


@dataclass(frozen=True, slots=True)
class Shrunk:
    data: bytes
    format: str  # "JPEG" or "PNG"
    width: int
    height: int

    def note(self, original: str) -> str:
        """One line for the scan's verdict: what the upload will be."""
        return (
            f"will be shrunk: {original} → {self.format} {self.width}x{self.height} px, "
            f"{describe_base64(base64_size(len(self.data)))} base64"
        )


def shrink_image(data: bytes, library: str | Library) -> Shrunk:
    """Re-encode `data` so `library` accepts it (see the module doc). Raises ShrinkError."""
    lib = library if isinstance(library, Library) else get_library(library)
    with caught_warnings():  # odd-but-readable files, dropped: validate.py already judged them
        img = _load_upright(data, lib)
    graphic = _has_alpha(img) or img.mode in ("P", "1")
    width, height = fit_size(img.width, img.height, lib.max_side)
    while min(width, height) >= lib.min_side:
        sized = img if (width, height) == img.size else img.resize((width, height), Image.Resampling.LANCZOS)
        for candidate in _encodings(sized, graphic):
            if base64_fits(len(candidate.data)):
                return candidate
        width, height = round(width * SCALE_STEP), round(height * SCALE_STEP)
    raise ShrinkError(
        f"cannot get under the 4 MB base64 limit without the shortest side going below {lib.name}'s {lib.min_side} px"
    )


def _load_upright(data: bytes, lib: Library) -> Image.Image:
    try:
        img: Image.Image = Image.open(io.BytesIO(data))
        if img.width * img.height > SHRINK_MAX_PIXELS:
            raise ShrinkError(f"{img.width}x{img.height} px is too large to shrink safely")
        if img.format == "JPEG":
            # Decode straight at the smallest 1/2..1/8 scale that still covers the target size.
            img.draft(img.mode, fit_size(img.width, img.height, lib.max_side))
        img.load()
    except ShrinkError:
        raise
    except Exception as e:  # noqa: BLE001 - any Pillow failure means the bytes cannot be shrunk
        raise ShrinkError(f"cannot decode the image to shrink it ({pillow_says(e)})") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not block an otherwise good picture
        pass
    return img


def _encodings(img: Image.Image, graphic: bool) -> list[Shrunk]:
    """Encodings tried in order, stopping at the first that fits (the last one is returned either way)."""
    out: list[Shrunk] = []
    if graphic:
        out.append(_encode(_png_ready(img), "PNG"))
        if base64_fits(len(out[0].data)):
            return out
    rgb = _jpeg_ready(img)
    for q in JPEG_QUALITIES:
        out.append(_encode(rgb, "JPEG", quality=q))
        if base64_fits(len(out[-1].data)):
            break
    return out


def _encode(img: Image.Image, fmt: str, **kw: object) -> Shrunk:
    buf = io.BytesIO()
    icc = img.info.get("icc_profile")
    if icc:
        kw["icc_profile"] = icc
    img.save(buf, format=fmt, **kw)
    return Shrunk(buf.getvalue(), fmt, img.width, img.height)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def _png_ready(img: Image.Image) -> Image.Image:
    if img.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
        return img
    return img.convert("RGBA" if _has_alpha(img) else "RGB")


def _jpeg_ready(img: Image.Image) -> Image.Image:
    """Any mode → L or RGB; transparency flattened onto white; 16-bit/float stretched to 8 bits."""
    icc = img.info.get("icc_profile")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return stretch_to_8bit(img)
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(white, rgba).convert("RGB")
        if icc:
            out.info["icc_profile"] = icc
        return out
    if img.mode in ("L", "RGB"):
        return img
    out = img.convert("RGB")  # P, 1, CMYK, YCbCr, LAB, HSV: RGB is what every JPEG reader handles
    if img.mode == "CMYK":
        out.info.pop("icc_profile", None)  # a CMYK profile does not describe RGB pixels
    return out


def stretch_to_8bit(img: Image.Image) -> Image.Image:
    """A 16/32-bit integer or float image → L, its darkest pixel 0 and its brightest 255 (a flat one: all 0).

    In 32-bit float, as (v - lo) * float32(255 / (hi - lo)) truncated to 0..255: bit for bit what this
    module computed with numpy before, so the engine needs no numpy and a file shrinks to the same bytes.
    """
    f = img if img.mode == "F" else img.convert("F")
    lo, hi = (float(v) for v in f.getextrema())  # type: ignore[arg-type]  # one band: (min, max) numbers
    if not hi > lo:  # flat, or NaN somewhere
        return Image.new("L", img.size, 0)
    # point() on "F" computes v * scale + offset in double and stores float32: subtracting lo is exact,
    # and a float32 scale makes the product the float32 product.
    scale = struct.unpack("f", struct.pack("f", 255.0 / (hi - lo)))[0]
    return f.point(lambda v: v - lo).point(lambda v: v * scale).convert("L")  # F → L truncates and clips


def prepare_upload(
    source: bytes | str | Path, library: str | Library, fit: Fit, *, expected_hash: str | None = None
) -> bytes:
    """The bytes to upload for a file the scan judged "ok": the file itself, or its shrunk re-encoding.

    `source` is the file's bytes or its path (then read here). With `expected_hash`, the bytes must
    still hash (sha256 hex) to it, else SourceChangedError: a file that changed since the scan is
    uploaded only after a scan has judged the new content.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if expected_hash is not None and hashlib.sha256(data).hexdigest() != expected_hash:
        raise SourceChangedError(
            "the file changed since the scan; it will be uploaded once a scan has checked the new content"
        )
    if fit != "shrink":
        return data
    lib = library if isinstance(library, Library) else get_library(library)
    info = inspect_image(data, decode=False)  # the header says whether it must be re-encoded
    if info.problem is None and not needs_shrink(info, lib):
        return data
    return shrink_image(data, lib).data
