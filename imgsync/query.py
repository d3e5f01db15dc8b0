"""A search query as the gallery takes it: a file, bytes or an http(s) URL in; `image=` or `url=` out.

The cloud takes only JPEG, PNG and BMP, at most 4 MB base64 and within each library's size limits. An
upload in another format (WebP, GIF, TIFF) or too large is re-encoded when the mirror says
`fit = "shrink"`; a query is always converted the same way, since the user only wants an answer. A query
below the library's minimum side (product 300 px, picturebook 150 px: the cloud answers 216202) is
enlarged just enough, with a note; an *entry* that small is still refused (docs/fidelity.md).
"""

from __future__ import annotations

import io
from pathlib import Path

from imgsync.errors import UsageError
from imgsync.libraries import LIBRARIES, MAX_TAGS, TAG_RANGE


def parse_tags(text: str | None) -> tuple[int, ...]:
    """ "1,2" → (1, 2): at most two integers in 1..65535."""
    if not text or not text.strip():
        return ()
    lo, hi = TAG_RANGE
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > MAX_TAGS or not all(p.isascii() and p.isdecimal() and lo <= int(p) <= hi for p in parts):
        raise UsageError(f"--tags: expected at most {MAX_TAGS} comma-separated integers in {lo}..{hi}, got {text!r}")
    return tuple(int(p) for p in parts)


def prepare_query(image: bytes | str | Path, library: str) -> tuple[dict[str, bytes | str], str | None]:
    """({"url": ...}, None) for an http(s) URL (the gallery fetches it), else ({"image": bytes}, note)
    ready to send; the note says what was done to a too-small picture (None: nothing)."""
    if isinstance(image, str) and image.lower().startswith(("http://", "https://")):
        return {"url": image}, None
    shown = "the query image" if isinstance(image, bytes) else str(image)
    data = image if isinstance(image, bytes) else _read(Path(image).expanduser(), shown)
    _check(data, shown)
    data, note = enlarge_small_query(_fit(data, library), library)
    return {"image": data}, note


def _check(data: bytes, shown: str) -> None:
    """What is no picture at all (empty, text, truncated) is the user's input to fix: a usage error here,
    not the gallery's 216200/216203 in a line of its own (the same reasons a sync gives its files)."""
    from imgsync.validate import inspect_image

    problem = inspect_image(data).problem
    if problem:
        raise UsageError(f"{shown}: {problem}; nothing was searched")


def _read(path: Path, shown: str) -> bytes:
    if not path.exists():
        raise UsageError(f"{shown}: no such file (give an image file or an http(s) URL)")
    if not path.is_file():
        raise UsageError(f"{shown}: not a file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"{shown}: cannot read it: {e.strerror}") from None


def _fit(data: bytes, library: str) -> bytes:
    """Re-encode what the gallery would refuse for its format or size (as fit = "shrink" does for uploads);
    anything else is sent as it is, and a picture that cannot be decoded is the gallery's to refuse."""
    from imgsync.shrink import ShrinkError, prepare_upload

    try:
        return prepare_upload(data, library, "shrink")
    except ShrinkError:
        return data


def enlarge_small_query(data: bytes, library: str) -> tuple[bytes, str | None]:
    """A query image whose shortest side is below what `library` accepts (product 300 px,
    picturebook 150 px: the cloud answers 216202), enlarged just enough, with a note saying so.

    Only the *query* is enlarged: the gallery, like the cloud, still refuses such an image as an
    entry (docs/fidelity.md). Anything else (not an image, big enough, or too long to enlarge
    within the longest side allowed) is returned unchanged for the gallery to judge."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    lib = LIBRARIES[library]
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            k = lib.min_side / min(w, h)
            if k <= 1 or max(w, h) * k > lib.max_side:
                return data, None
            img = ImageOps.exif_transpose(im).convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
            fmt = "PNG" if im.format in ("PNG", "GIF", "BMP") else "JPEG"
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return data, None
    if img.width != w:  # EXIF said the picture is turned: its sides swapped
        w, h = img.size
    size = (max(lib.min_side, round(w * k)), max(lib.min_side, round(h * k)))
    out = io.BytesIO()
    big = img.resize(size, Image.Resampling.LANCZOS)
    if fmt == "JPEG":
        big.convert("RGB").save(out, "JPEG", quality=95)
    else:
        big.save(out, "PNG")
    return out.getvalue(), (
        f"{w}x{h} px is below the {lib.min_side} px {library} accepts; searched with a copy "
        f"enlarged to {size[0]}x{size[1]}"
    )
