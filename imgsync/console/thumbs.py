"""Thumbnails: of files inside a mirror's folder, and of the local gallery's stored working copies.

A thumbnail is asked for by (mirror, path relative to its folder). The path is refused unless it
names a regular file inside the folder: no absolute path, no `..`, no empty or `.` component, and no
symlink that leads out of the folder (the path is resolved, must stay inside, and the resolved path is
then opened one component at a time with O_NOFOLLOW, so a symlink swapped in meanwhile fails instead
of being followed). A mirror with follow_symlinks = true still gets no thumbnail for a file outside
its folder. Only the decoded, reduced picture is ever sent, never the file's bytes.

Thumbnails are made with Pillow (JPEG draft mode decodes at 1/2 … 1/8 scale, so a 24-megapixel photo
costs a few milliseconds) and kept in <state_dir>/console/thumbs, keyed by what the picture came from
(the file's identity, size and times; an entry's library and cont_sign), within a size bound: past it,
the least recently used are removed. A file that does not decode is remembered as such (an empty
cache file) and shown as "no preview".
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import stat
import threading
import typing
from pathlib import Path
from typing import IO, TYPE_CHECKING

from imgsync.pillow_warnings import caught_warnings

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("imgsync.console")

#: Longest side of a thumbnail, in pixels (shown at half that on a 2x screen's CSS size).
SIDE = 256
#: Default bound on the thumbnail cache (bytes): ~20,000 thumbnails of ~10 KB.
CACHE_BYTES = 200 * 1024 * 1024
#: When the cache is over its bound it is cut down to this fraction of it (not one file per write).
CACHE_LOW_WATER = 0.8


class PathRefused(Exception):
    """The path does not name a file inside the mirror's folder (HTTP 403)."""


def check_relative(path: str) -> list[str]:
    """The components of a mirror-relative POSIX path, or PathRefused when it could leave the folder."""
    if not path or "\x00" in path:
        raise PathRefused("an empty path, or one with a NUL byte")
    if path.startswith("/"):
        raise PathRefused("an absolute path: only paths inside the mirror's folder are served")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise PathRefused(
            "a path with '..', '.' or an empty component: only paths inside the mirror's folder are served"
        )
    return parts


def open_in_folder(folder: Path, path: str) -> int:
    """A read-only descriptor of the regular file `path` names inside `folder` (the caller closes it).
    PathRefused: outside the folder (syntax or a symlink out), or not a regular file;
    FileNotFoundError: no such file."""
    check_relative(path)
    root = Path(os.path.realpath(folder.expanduser()))
    target = Path(os.path.realpath(root / path))
    if target == root or not target.is_relative_to(root):
        raise PathRefused("a symlink that leads out of the mirror's folder")
    parts = target.relative_to(root).parts
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_NONBLOCK if last else os.O_DIRECTORY)
            try:
                nxt = os.open(part, flags, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise PathRefused("a path that changed into a symlink while being opened") from None
                raise
            os.close(fd)
            fd = nxt
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PathRefused("not a regular file")
        os.set_blocking(fd, True)
        out, fd = fd, -1
        return out
    finally:
        if fd >= 0:
            os.close(fd)


def file_key(mirror: str, fd: int) -> str:
    """Cache key of an open file: what it is (device, inode) and which version (size, times)."""
    st = os.fstat(fd)
    return _key("file", mirror, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def entry_key(gallery: str, library: str, cont_sign: str) -> str:
    return _key("entry", gallery, library, cont_sign)


def _key(*parts: object) -> str:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode("utf-8", "surrogatepass")).hexdigest()


def make_thumbnail(data: io.BufferedIOBase | bytes, side: int = SIDE) -> bytes | None:
    """A JPEG of at most side×side pixels, or None when the picture does not decode (corrupt, not an
    image, or a decompression bomb, told by Pillow's warning when the header is read)."""
    from PIL import Image, ImageOps

    source: IO[bytes] = io.BytesIO(data) if isinstance(data, bytes) else typing.cast(IO[bytes], data)
    try:
        with caught_warnings() as caught, Image.open(source) as img:
            if any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught):
                log.debug("no thumbnail: a decompression bomb (%d x %d px)", img.width, img.height)
                return None  # refused from the header, before any pixel is decoded
            img.draft("RGB", (side, side))  # JPEG: decode at the smallest scale still ≥ side
            pic = ImageOps.exif_transpose(img)
            pic.thumbnail((side, side), Image.Resampling.LANCZOS)
            pic = _rgb(pic)
            out = io.BytesIO()
            pic.save(out, "JPEG", quality=82, optimize=True)
            return out.getvalue()
    except Exception as e:  # noqa: BLE001 - any decoder failure means "no preview", never a crash
        log.debug("no thumbnail: %s: %s", type(e).__name__, e)
        return None


def _rgb(img: Image.Image) -> Image.Image:
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        back = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(back, rgba).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16/32-bit or float: stretched to 8 bits
        grey = img.convert("F")
        lo, hi = (float(v) for v in grey.getextrema())  # type: ignore[arg-type]  # one band: (min, max)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return grey.point(lambda v: (v - lo) * scale).convert("L").convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


class ThumbCache:
    """Thumbnails on disk, at most about `max_bytes` in all (least recently used go first). An empty file
    means "does not decode". Thread-safe; several consoles may share the directory."""

    def __init__(self, root: Path, max_bytes: int = CACHE_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._total: int | None = None  # measured on the first write

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.jpg"

    def get(self, key: str) -> bytes | None:
        """The cached thumbnail, b"" for "does not decode", None when not cached."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            os.utime(path)  # recently used
        except OSError:
            pass
        return data

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as e:  # a full disk must not break the page: the thumbnail is just not kept
            log.info("thumbnail not cached (%s)", e.strerror or e)
            return
        with self._lock:
            if self._total is None:
                self._total = self.size()
            else:
                self._total += len(data)
            if self._total > self.max_bytes:
                self._total = self._shrink(int(self.max_bytes * CACHE_LOW_WATER))

    def size(self) -> int:
        return sum(size for _, size, _ in self._files())

    def _files(self) -> list[tuple[float, int, Path]]:
        out = []
        for sub in self.root.glob("??"):
            try:
                with os.scandir(sub) as it:
                    for e in it:
                        if e.name.endswith(".jpg") and not e.name.startswith("."):
                            st = e.stat()
                            out.append((st.st_mtime, st.st_size, Path(e.path)))
            except OSError:
                continue
        return out

    def _shrink(self, target: int) -> int:
        """Remove the least recently used thumbnails until at most `target` bytes remain; the total."""
        files = sorted(self._files())
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= target:
                break
            try:
                path.unlink()
                total -= size
            except OSError:
                pass
        return total
