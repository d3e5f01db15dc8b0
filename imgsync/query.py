"""A search query as the gallery takes it: a file, bytes or an http(s) URL in; `image=` or `url=` out.

The cloud takes only JPEG, PNG and BMP, at most 4 MB base64 and within each library's size limits. An
upload in another format (WebP, GIF, TIFF) or too large is re-encoded when the mirror says
`fit = "shrink"`; a query is always converted the same way, since the user only wants an answer.
"""

from __future__ import annotations

from pathlib import Path

from imgsync.errors import UsageError


def prepare_query(image: bytes | str | Path, library: str) -> dict[str, bytes | str]:
    """{"url": ...} for an http(s) URL (the gallery fetches it), else {"image": bytes} ready to send."""
    if isinstance(image, str) and image.lower().startswith(("http://", "https://")):
        return {"url": image}
    data = image if isinstance(image, bytes) else _read(Path(image).expanduser(), str(image))
    return {"image": _fit(data, library)}


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
