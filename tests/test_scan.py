"""scan.py on a real temp filesystem with real Pillow images: what is listed, what is re-read, and what
each file's verdict is. Fault injection only through scan_folder's `read` seam."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import make_image
from imgsync.config import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, MirrorConfig
from imgsync.model import KnownFile, ScannedFile
from imgsync.scan import (
    MAX_READ_BYTES,
    SETTLE_NS,
    PathFilter,
    ScanResult,
    can_reuse,
    is_included,
    read_file,
    scan_folder,
)
from imgsync.shrink import prepare_upload

HOUR_NS = 3600 * 10**9


def mirror(root: Path, **kw: object) -> MirrorConfig:
    return MirrorConfig(name="t", folder=root, library=str(kw.pop("library", "same_hq")), **kw)  # type: ignore


def put(root: Path, rel: str, data: bytes, *, age_ns: int = HOUR_NS) -> Path:
    """Write a file whose mtime is `age_ns` in the past (old enough to be trusted, by default)."""
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    t = time.time_ns() - age_ns
    os.utime(p, ns=(t, t))
    return p


def scan(root: Path, known: dict[str, KnownFile] | None = None, **kw: object) -> ScanResult:
    read = kw.pop("read", read_file)
    now_ns = int(kw.pop("now_ns", time.time_ns()))  # type: ignore[call-overload]
    return scan_folder(root, mirror(root, **kw), known or {}, now_ns=now_ns, read=read)  # type: ignore[arg-type]


def as_known(files: dict[str, ScannedFile]) -> dict[str, KnownFile]:
    return {
        p: KnownFile(f.path, f.size, f.mtime_ns, f.inode, f.content_hash, f.verdict, f.reason, None, f.hashed_at_ns)
        for p, f in files.items()
    }


class CountingReader:
    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, path: str) -> bytes:
        self.paths.append(path)
        return read_file(path)


JPEG = make_image(1)
PNG = make_image(2, fmt="PNG")


# --------------------------------------------------------------------------- which files


def test_lists_images_with_relative_posix_paths_and_hashes(tmp_path: Path) -> None:
    put(tmp_path, "a.jpg", JPEG)
    put(tmp_path, "sub/deeper/b.png", PNG)
    put(tmp_path, "notes.txt", b"not an image, not included")
    res = scan(tmp_path)
    assert res.complete and res.errors == []
    assert sorted(res.files) == ["a.jpg", "sub/deeper/b.png"]
    a = res.files["a.jpg"]
    assert (a.verdict, a.reason, a.size) == ("ok", None, len(JPEG))
    assert a.content_hash == hashlib.sha256(JPEG).hexdigest()
    assert a.inode == os.stat(tmp_path / "a.jpg").st_ino


def test_globs_are_case_insensitive(tmp_path: Path) -> None:
    put(tmp_path, "IMG_0001.JPG", JPEG)
    put(tmp_path, "Scan.Png", PNG)
    assert sorted(scan(tmp_path).files) == ["IMG_0001.JPG", "Scan.Png"]


def test_hidden_and_temporary_files_are_excluded_by_default(tmp_path: Path) -> None:
    put(tmp_path, ".hidden.jpg", JPEG)
    put(tmp_path, ".thumbnails/x.jpg", JPEG)
    put(tmp_path, "draft.jpg~", JPEG)
    put(tmp_path, "upload.jpg.part", JPEG)
    put(tmp_path, "kept.jpg", JPEG)
    assert list(scan(tmp_path).files) == ["kept.jpg"]


def test_excluded_directory_prunes_its_subtree(tmp_path: Path) -> None:
    put(tmp_path, "raw/a.jpg", JPEG)
    put(tmp_path, "raw/deep/b.jpg", JPEG)
    put(tmp_path, "keep/raw.jpg", JPEG)  # a *file* named like the excluded dir is not a dir
    put(tmp_path, "2020/x.png", PNG)
    put(tmp_path, "2020/y.jpg", JPEG)
    res = scan(tmp_path, exclude=("RAW", "2020/*.png"))
    assert sorted(res.files) == ["2020/y.jpg", "keep/raw.jpg"]


def test_include_patterns_with_a_slash_match_the_path(tmp_path: Path) -> None:
    put(tmp_path, "best/a.jpg", JPEG)
    put(tmp_path, "rest/b.jpg", JPEG)
    assert list(scan(tmp_path, include=("best/*.jpg",)).files) == ["best/a.jpg"]


@pytest.mark.parametrize(
    ("path", "include", "exclude", "listed"),
    [
        ("a.JPEG", ("*.jpeg",), (), True),
        ("a.jpeg", ("*.jpg",), (), False),
        ("x/.git/a.jpg", ("*.jpg",), (".*",), False),
        ("x/y/a.jpg", ("*.jpg",), ("x/y",), False),
        ("x/y/a.jpg", ("*.jpg",), ("y",), False),
        ("x/yy/a.jpg", ("*.jpg",), ("y",), True),
        ("a b/c d.jpg", ("*.jpg",), (), True),
    ],
)
def test_is_included(path: str, include: tuple[str, ...], exclude: tuple[str, ...], listed: bool) -> None:
    assert is_included(path, include, exclude) is listed


NAMES = [
    "a.jpg",
    "A.JPG",
    ".a.jpg",
    "a.jpg~",
    "b.tmp",
    "x.crdownload",
    "abc.png",
    "abd.png",
    "ab.png",
    "ÄRGER.Jpeg",
    "photo.jpg.part",
    "no_ext",
    ".jpg",
    "a.gif",
    "b.tiff",
    "c.tif",
    "d.bmp",
    "e.webp",
]


@pytest.mark.parametrize(
    ("include", "exclude"),
    [
        (DEFAULT_INCLUDE, DEFAULT_EXCLUDE),
        (("a?c.png", "[a-b]*.png", "*.jpeg"), ("abd*", "*.PNG~")),
        (("*",), ()),
        ((), ("*",)),
        # suffix-only includes drop the exclude suffixes no included name can end with: these must stay
        (("*.jpg", "*.png"), ("*G", "*.pNg", "*b.png", "*~", "*.jpg.part")),
        (("*.jpg",), ("*.Jpeg", "*g", "a*", "*[e]g")),
    ],
)
def test_fast_name_filter_agrees_with_the_glob_rules(include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
    f = PathFilter(include, exclude)
    fast = f.file_matcher()
    assert [n for n in NAMES if fast(n, n)] == [n for n in NAMES if f.includes_file(n, n)]


def test_scan_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    put(tmp_path, "a.jpg", JPEG)
    assert gc.isenabled()
    scan(tmp_path)
    assert gc.isenabled()
    gc.disable()
    try:
        scan(tmp_path)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_odd_names_round_trip(tmp_path: Path) -> None:
    names = ["with space.jpg", "📷 émoji.jpg", "new\nline.jpg", "日本語/写真.jpg"]
    for i, n in enumerate(names):
        put(tmp_path, n, make_image(10 + i))
    # A name that is not valid UTF-8: made through the bytes API.
    raw = os.fsencode(tmp_path) + b"/bad\xff\xfename.jpg"
    with open(raw, "wb") as f:
        f.write(make_image(20))
    t = time.time_ns() - HOUR_NS
    os.utime(raw, ns=(t, t))
    res = scan(tmp_path)
    bad = "bad\udcff\udcfename.jpg"
    assert sorted(res.files) == sorted([*names, bad])
    for path, f in res.files.items():
        assert f.verdict == "ok", (path, f.reason)
        again = (tmp_path / path).read_bytes()  # the key opens the very same file again
        assert hashlib.sha256(again).hexdigest() == f.content_hash
    assert prepare_upload(tmp_path / bad, "same_hq", "reject", expected_hash=res.files[bad].content_hash)


# --------------------------------------------------------------------------- verdicts


def test_every_rejection_kind_is_named(tmp_path: Path) -> None:
    big = make_image(3, (4200, 300), "PNG")
    data = make_image(4, (800, 600))
    put(tmp_path, "empty.jpg", b"")
    put(tmp_path, "text.jpg", b"this is a text file\n")
    put(tmp_path, "cut.jpg", data[: len(data) // 2])
    put(tmp_path, "anim.gif", make_image(5, fmt="GIF"))
    put(tmp_path, "tiny.png", make_image(6, (40, 40), "PNG"))
    put(tmp_path, "huge.png", big)
    res = scan(tmp_path)
    reasons = {p: (f.verdict, f.reason) for p, f in res.files.items()}
    assert reasons == {
        "empty.jpg": ("rejected", "empty file (0 bytes)"),
        "text.jpg": ("rejected", "not an image (it looks like text)"),
        "cut.jpg": ("rejected", reasons["cut.jpg"][1]),
        "anim.gif": ("rejected", 'GIF is not accepted by same_hq (jpg/png/bmp only); set fit = "shrink" to convert'),
        "tiny.png": ("rejected", "40x40 px: shortest side is below same_hq's 50 px (images are never upscaled)"),
        "huge.png": (
            "rejected",
            '4200x300 px: longest side is over the 4096 px limit; set fit = "shrink" to scale it down',
        ),
    }
    assert reasons["cut.jpg"][1].startswith("truncated JPEG (image file is truncated")  # type: ignore[union-attr]
    assert all(f.content_hash for f in res.files.values())  # rejected files are hashed too


def test_shrink_turns_convertible_files_ok_with_a_note(tmp_path: Path) -> None:
    put(tmp_path, "anim.gif", make_image(5, fmt="GIF"))
    put(tmp_path, "photo.webp", make_image(6, (500, 400), "WEBP"))
    put(tmp_path, "tiny.gif", make_image(7, (40, 40), "GIF"))
    res = scan(tmp_path, fit="shrink")
    assert res.files["anim.gif"].verdict == "ok"
    assert res.files["anim.gif"].reason.startswith("will be shrunk: GIF 320x240 px → PNG 320x240 px")  # type: ignore
    assert res.files["photo.webp"].reason.startswith("will be shrunk: WEBP 500x400 px → JPEG")  # type: ignore
    assert res.files["tiny.gif"].verdict == "rejected"


def test_picturebook_aspect_and_size(tmp_path: Path) -> None:
    put(tmp_path, "strip.png", make_image(8, (2000, 150), "PNG"))
    put(tmp_path, "small.jpg", make_image(9, (600, 140)))
    res = scan(tmp_path, library="picturebook", fit="shrink")
    assert "aspect 13.3:1 is beyond picturebook's 10:1 limit" in res.files["strip.png"].reason  # type: ignore
    assert "below picturebook's 150 px" in res.files["small.jpg"].reason  # type: ignore


def test_file_too_large_to_read_is_rejected_from_its_size(tmp_path: Path) -> None:
    p = tmp_path / "sparse.jpg"
    with open(p, "wb") as f:
        f.truncate(MAX_READ_BYTES + 1)  # sparse: no disk used
    reader = CountingReader()
    f = scan(tmp_path, read=reader).files["sparse.jpg"]
    assert f.verdict == "rejected" and "MB file" in f.reason  # type: ignore[operator]
    assert reader.paths == []


# --------------------------------------------------------------------------- change detection


def test_unchanged_files_are_not_read_again(tmp_path: Path) -> None:
    put(tmp_path, "a.jpg", JPEG)
    put(tmp_path, "bad.jpg", b"text")
    first = scan(tmp_path)
    reader = CountingReader()
    second = scan(tmp_path, as_known(first.files), read=reader)
    assert reader.paths == []
    assert second.files == first.files  # same hash, verdict, reason and hashed_at


def test_changed_files_are_read_again(tmp_path: Path) -> None:
    put(tmp_path, "size.jpg", JPEG)
    put(tmp_path, "mtime.jpg", JPEG)
    put(tmp_path, "inode.jpg", JPEG)
    put(tmp_path, "same.jpg", JPEG)
    known = as_known(scan(tmp_path).files)
    put(tmp_path, "size.jpg", make_image(30))
    os.utime(tmp_path / "mtime.jpg", ns=(time.time_ns() - 2 * HOUR_NS,) * 2)
    st = os.stat(tmp_path / "inode.jpg")
    put(tmp_path, "inode.tmp", JPEG)  # an atomic save: same size and mtime, new inode
    os.utime(tmp_path / "inode.tmp", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp_path / "inode.tmp", tmp_path / "inode.jpg")
    reader = CountingReader()
    res = scan(tmp_path, known, read=reader)
    assert sorted(os.path.basename(p) for p in reader.paths) == ["inode.jpg", "mtime.jpg", "size.jpg"]
    assert res.files["size.jpg"].content_hash == hashlib.sha256(make_image(30)).hexdigest()


def test_hash_taken_too_soon_after_the_mtime_is_not_trusted(tmp_path: Path) -> None:
    put(tmp_path, "a.jpg", JPEG)
    f = scan(tmp_path).files["a.jpg"]
    racy = dataclasses.replace(f, hashed_at_ns=f.mtime_ns + SETTLE_NS - 1)
    reader = CountingReader()
    scan(tmp_path, as_known({"a.jpg": racy}), read=reader)
    assert len(reader.paths) == 1
    assert can_reuse(
        as_known({"a.jpg": dataclasses.replace(f, hashed_at_ns=f.mtime_ns + SETTLE_NS)})["a.jpg"],
        f.size,
        f.mtime_ns,
        f.inode,
    )


@pytest.mark.parametrize("verdict", ["unstable", "error"])
def test_unstable_and_error_verdicts_are_retried(tmp_path: Path, verdict: str) -> None:
    put(tmp_path, "a.jpg", JPEG)
    f = dataclasses.replace(scan(tmp_path).files["a.jpg"], verdict=verdict)  # type: ignore[arg-type]
    reader = CountingReader()
    assert scan(tmp_path, as_known({"a.jpg": f}), read=reader).files["a.jpg"].verdict == "ok"
    assert len(reader.paths) == 1


def test_too_recent_file_is_hashed_but_unstable(tmp_path: Path) -> None:
    p = put(tmp_path, "fresh.jpg", JPEG)
    mtime = os.stat(p).st_mtime_ns
    f = scan(tmp_path, now_ns=mtime + SETTLE_NS // 2).files["fresh.jpg"]
    assert f.verdict == "unstable" and "less than 2 s ago" in f.reason  # type: ignore[operator]
    assert f.content_hash == hashlib.sha256(JPEG).hexdigest()
    # Next run, once it has settled, it is read again (unstable is never reused) and is ok.
    reader = CountingReader()
    g = scan(tmp_path, as_known({"fresh.jpg": f}), now_ns=mtime + SETTLE_NS, read=reader).files["fresh.jpg"]
    assert (g.verdict, len(reader.paths)) == ("ok", 1)


def test_mtime_slightly_ahead_is_unstable_far_ahead_is_a_wrong_clock(tmp_path: Path) -> None:
    now = time.time_ns()
    for name, ahead in [("writing.jpg", 10 * 10**9), ("skewed.jpg", 2 * HOUR_NS)]:
        p = put(tmp_path, name, JPEG)
        os.utime(p, ns=(now + ahead, now + ahead))
    res = scan(tmp_path, now_ns=now)
    assert res.files["writing.jpg"].verdict == "unstable"  # written while the scan ran
    assert res.files["skewed.jpg"].verdict == "ok"  # never waiting two hours for a camera's clock
    reader = CountingReader()
    scan(tmp_path, as_known(res.files), now_ns=now, read=reader)
    assert len(reader.paths) == 2  # neither hash is trusted later: the racy rule cannot vouch for them


def test_file_vanishing_before_the_read_is_simply_absent(tmp_path: Path) -> None:
    put(tmp_path, "a.jpg", JPEG)
    put(tmp_path, "b.jpg", PNG)

    def delete_then_read(path: str) -> bytes:
        if path.endswith("a.jpg"):
            os.unlink(path)
        return read_file(path)

    res = scan(tmp_path, read=delete_then_read)
    assert list(res.files) == ["b.jpg"] and res.complete and res.errors == []


def test_file_vanishing_after_the_read_is_absent(tmp_path: Path) -> None:
    put(tmp_path, "a.jpg", JPEG)

    def read_then_delete(path: str) -> bytes:
        data = read_file(path)
        os.unlink(path)
        return data

    assert scan(tmp_path, read=read_then_delete).files == {}


def test_file_changing_while_read_is_unstable(tmp_path: Path) -> None:
    put(tmp_path, "a.jpg", JPEG)

    def append_while_reading(path: str) -> bytes:
        data = read_file(path)
        with open(path, "ab") as f:
            f.write(b"more bytes still being written")
        return data

    f = scan(tmp_path, read=append_while_reading).files["a.jpg"]
    assert (f.verdict, f.content_hash) == ("unstable", None)
    assert "changed while being read" in f.reason  # type: ignore[operator]


def test_read_error_is_an_error_verdict_not_an_incomplete_scan(tmp_path: Path) -> None:
    put(tmp_path, "a.jpg", JPEG)
    put(tmp_path, "b.jpg", PNG)

    def denied(path: str) -> bytes:
        if path.endswith("a.jpg"):
            raise PermissionError(13, "Permission denied")
        return read_file(path)

    res = scan(tmp_path, read=denied)
    assert (res.files["a.jpg"].verdict, res.files["a.jpg"].reason) == ("error", "cannot read: permission denied")
    assert res.files["b.jpg"].verdict == "ok" and res.complete


# --------------------------------------------------------------------------- real permissions


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A temp dir an unprivileged user can enter (pytest's tmp_path is private to its owner)."""
    d = Path(tempfile.mkdtemp(prefix="imgsync-scan-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for sub, dirs, _ in os.walk(d):  # top-down: each directory is opened up before it is entered
            for n in dirs:
                if not os.path.islink(os.path.join(sub, n)):
                    os.chmod(os.path.join(sub, n), 0o755)
        shutil.rmtree(d)


def scan_unprivileged(root: Path) -> dict[str, object]:
    """Run scan_folder in a forked child that, when we are root, drops to uid/gid 65534 for real
    (root ignores file modes, so a chmod 000 test would otherwise prove nothing)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(r)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            res = scan_folder(root, mirror(root), {}, now_ns=time.time_ns())
            out = {
                "files": {p: [f.verdict, f.reason] for p, f in res.files.items()},
                "errors": res.errors,
                "complete": res.complete,
            }
        except BaseException:
            out = {"crash": traceback.format_exc()}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    out = json.loads(b"".join(chunks))
    assert "crash" not in out, out.get("crash")
    return out


def test_permission_denied_file_and_directory(shared_dir: Path) -> None:
    for rel, data in [("ok.jpg", JPEG), ("locked.jpg", PNG), ("private/x.jpg", JPEG), ("open/y.jpg", JPEG)]:
        put(shared_dir, rel, data)
    for d in ("private", "open"):
        (shared_dir / d).chmod(0o755)
    for p in ("ok.jpg", "open/y.jpg", "private/x.jpg"):
        (shared_dir / p).chmod(0o644)
    (shared_dir / "locked.jpg").chmod(0o000)
    (shared_dir / "private").chmod(0o000)
    out = scan_unprivileged(shared_dir)
    assert out["files"] == {
        "ok.jpg": ["ok", None],
        "open/y.jpg": ["ok", None],
        "locked.jpg": ["error", "cannot read: permission denied"],
    }
    # The unreadable directory makes the scan incomplete (its files may still exist); a single
    # unreadable file does not.
    assert out["errors"] == [["private", "permission denied"]]
    assert out["complete"] is False


# --------------------------------------------------------------------------- symlinks, FIFOs


def test_symlinks_are_skipped_by_default(tmp_path: Path) -> None:
    put(tmp_path, "real/a.jpg", JPEG)
    (tmp_path / "link.jpg").symlink_to(tmp_path / "real/a.jpg")
    (tmp_path / "linkdir").symlink_to(tmp_path / "real")
    assert list(scan(tmp_path).files) == ["real/a.jpg"]


def test_followed_symlinks_are_listed_under_their_own_paths(tmp_path: Path) -> None:
    put(tmp_path, "real/a.jpg", JPEG)
    (tmp_path / "link.jpg").symlink_to(tmp_path / "real/a.jpg")
    (tmp_path / "linkdir").symlink_to(tmp_path / "real")
    res = scan(tmp_path, follow_symlinks=True)
    assert sorted(res.files) == ["link.jpg", "linkdir/a.jpg", "real/a.jpg"]
    assert len({f.content_hash for f in res.files.values()}) == 1


def test_symlink_loops_end(tmp_path: Path) -> None:
    put(tmp_path, "a/b/c.jpg", JPEG)
    (tmp_path / "a/b/up").symlink_to(tmp_path / "a")  # a/b/up/b/up/... forever without a guard
    (tmp_path / "a/self").symlink_to(".")
    res = scan(tmp_path, follow_symlinks=True)
    assert sorted(res.files) == ["a/b/c.jpg"] and res.complete


def test_a_link_to_itself_is_its_own_error_and_its_siblings_are_scanned(tmp_path: Path) -> None:
    names = ["a.jpg", "m.jpg", "zzz.jpg"]  # before and after the loop in any listing order
    for i, name in enumerate(names):
        put(tmp_path, name, make_image(i))
    (tmp_path / "zz.jpg").symlink_to("zz.jpg")  # ELOOP when followed
    res = scan(tmp_path, follow_symlinks=True)
    assert res.complete and res.errors == []  # the directory was read: deletes are not withheld for it
    assert sorted(p for p, f in res.files.items() if f.verdict == "ok") == names
    loop = res.files["zz.jpg"]
    assert loop.verdict == "error" and "too many levels of symbolic links" in (loop.reason or "")
    scoped = scan_folder(tmp_path, mirror(tmp_path, follow_symlinks=True), {}, now_ns=time.time_ns(), scope=["zz.jpg"])
    assert scoped.complete and scoped.files["zz.jpg"].verdict == "error"


def test_names_that_look_like_images_but_are_not_files_are_said_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "folder.jpg").mkdir()
    put(tmp_path, "folder.jpg/inside.jpg", JPEG)
    res = scan(tmp_path)
    assert list(res.files) == ["folder.jpg/inside.jpg"]
    assert dict(res.notes) == {
        "pipe.jpg": "a FIFO, not an image file: skipped",
        "folder.jpg": "a directory, not an image file (its files are scanned)",
    }


def test_dangling_symlink_is_an_error_when_following(tmp_path: Path) -> None:
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    assert scan(tmp_path).files == {}
    f = scan(tmp_path, follow_symlinks=True).files["gone.jpg"]
    assert (f.verdict, f.reason) == ("error", "broken symlink (its target does not exist)")


def test_fifo_named_like_an_image_is_never_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it for reading would block forever
    put(tmp_path, "a.jpg", JPEG)
    assert list(scan(tmp_path).files) == ["a.jpg"]


def test_read_file_refuses_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(OSError, match="not a regular file"):
        read_file(str(tmp_path / "pipe.jpg"))
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe.jpg").st_mode)


def test_missing_root_is_an_incomplete_scan(tmp_path: Path) -> None:
    res = scan(tmp_path / "nope")
    assert res.files == {} and not res.complete and res.errors[0][0] == "."


@pytest.mark.parametrize("library", ["same_hq", "picturebook", "product"])
def test_every_ok_verdict_uploads_bytes_the_gallery_accepts(tmp_path: Path, library: str) -> None:
    """The scan's "ok" is a promise: the local gallery's own checker takes what prepare_upload gives."""
    from imgsync.libraries import get_library
    from imgsync.localgallery.images import load_image

    put(tmp_path, "photo.jpg", make_image(40, (640, 480)))
    put(tmp_path, "wide.webp", make_image(41, (4600, 700), "WEBP"))
    put(tmp_path, "anim.gif", make_image(42, (400, 320), "GIF"))
    put(tmp_path, "alpha.png", make_image(43, (500, 400), "PNG", mode="RGBA"))
    put(tmp_path, "scan.tiff", make_image(44, (800, 600), "TIFF"))
    res = scan(tmp_path, library=library, fit="shrink")
    ok = {p: f for p, f in res.files.items() if f.verdict == "ok"}
    assert len(ok) >= 4, {p: f.reason for p, f in res.files.items()}
    for path, f in ok.items():
        data = prepare_upload(tmp_path / path, library, "shrink", expected_hash=f.content_hash)
        load_image(data, get_library(library))  # raises if the gallery would refuse it


# --- scoped scans -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_scoped_scan_of_the_changed_paths_equals_a_full_scan(tmp_path: Path, seed: int) -> None:
    """Whatever changed, a scan scoped to the changed paths (files, or their directories) sees exactly
    what a full scan sees — the promise the watch daemon relies on."""
    import random

    rnd = random.Random(seed)
    images = [make_image(i, size=(64, 64)) for i in range(6)]
    dirs = ["", "a/", "a/b/", "c/", ".hidden/"]
    for i in range(12):
        put(tmp_path, f"{rnd.choice(dirs)}f{i}.jpg", rnd.choice(images))
    before = scan(tmp_path)
    known = as_known(before.files)
    changed: set[str] = set()
    for _ in range(6):
        op = rnd.choice(["add", "modify", "delete", "move", "movedir"])
        paths = sorted(p for p in before.files if (tmp_path / p).exists())
        if op == "add" or not paths:
            rel = f"{rnd.choice(dirs)}n{rnd.randrange(1000)}.jpg"
            put(tmp_path, rel, rnd.choice(images))
            changed.add(rel)
        elif op == "modify":
            rel = rnd.choice(paths)
            put(tmp_path, rel, make_image(100 + rnd.randrange(100), size=(64, 64)))
            changed.add(rel)
        elif op == "delete":
            rel = rnd.choice(paths)
            (tmp_path / rel).unlink()
            changed.add(rel)
        elif op == "move":
            rel = rnd.choice(paths)
            dest = f"{rnd.choice(dirs)}m{rnd.randrange(1000)}.jpg"
            (tmp_path / dest).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_path / rel, tmp_path / dest)
            changed |= {rel, dest}
        elif (tmp_path / "a").exists() and not (tmp_path / "moved").exists():
            os.rename(tmp_path / "a", tmp_path / "moved")
            changed |= {"a", "moved"}
    now = time.time_ns()
    full = scan(tmp_path, known, now_ns=now)
    scoped = scan_folder(tmp_path, mirror(tmp_path), known, now_ns=now, scope=sorted(changed))
    assert scoped.files == full.files
    assert scoped.complete and set(scoped.examined or ()) <= set(full.files)
    dirs_scope = {p.rsplit("/", 1)[0] if "/" in p else "." for p in changed}
    by_dir = scan_folder(tmp_path, mirror(tmp_path), known, now_ns=now, scope=dirs_scope)
    assert by_dir.files == full.files


def test_scope_normalisation() -> None:
    from imgsync.scan import normalise_scope

    assert normalise_scope(None) is None
    assert normalise_scope(["a/b", "./a", "a//c", "x/y.jpg"]) == frozenset({"a", "x/y.jpg"})
    assert normalise_scope(["sub", "."]) is None
    assert normalise_scope([]) == frozenset()
    with pytest.raises(ValueError, match="leaves the folder"):
        normalise_scope(["../etc"])


def test_scope_in_an_unreadable_directory_is_an_incomplete_scan(shared_dir: Path) -> None:
    put(shared_dir, "locked/a.jpg", make_image(1))
    known = as_known(scan(shared_dir).files)
    os.chmod(shared_dir / "locked", 0)
    try:
        res = scan_folder(shared_dir, mirror(shared_dir), known, now_ns=time.time_ns(), scope=["locked"])
    finally:
        os.chmod(shared_dir / "locked", 0o755)
    if os.geteuid() == 0:
        pytest.skip("root reads any directory")
    assert not res.complete and res.errors[0][0] == "locked"


def test_stat_digest_matches_the_digest_of_a_scan_and_moves_with_any_change(tmp_path: Path) -> None:
    from imgsync.scan import digest_of, stat_digest

    for rel in ("a.jpg", "sub/b.jpg", "sub/deeper/c.png", "ü ñ/d.jpg", ".hidden/e.jpg"):
        put(tmp_path, rel, make_image(len(rel), size=(60, 60), fmt="PNG" if rel.endswith("png") else "JPEG"))
    (tmp_path / "empty").mkdir()
    m = mirror(tmp_path)
    listed = scan(tmp_path).files
    assert stat_digest(tmp_path, m) == digest_of(listed.values())
    before = stat_digest(tmp_path, m)
    os.utime(tmp_path / "sub" / "b.jpg", ns=(10**18, 10**18))
    touched = stat_digest(tmp_path, m)
    os.rename(tmp_path / "sub" / "b.jpg", tmp_path / "sub" / "b2.jpg")
    renamed = stat_digest(tmp_path, m)
    assert len({before, touched, renamed}) == 3
    put(tmp_path, ".hidden/f.jpg", make_image(9))  # excluded: no change
    assert stat_digest(tmp_path, m) == renamed


@pytest.mark.parametrize(
    ("include", "exclude"),
    [
        (("*.jpg", "*.png"), ("*b.png", "*.jpg~")),  # name rules, tested inline by the digest walk
        (("a?c.png", "[a-b]*.png", "*.jpeg"), ("abd*",)),  # a regex besides suffixes
        (("*.jpg", "*.png"), ("sub/*.png",)),  # a path pattern: the path-matching filter
    ],
)
def test_stat_digest_lists_the_files_a_scan_lists(
    tmp_path: Path, include: tuple[str, ...], exclude: tuple[str, ...]
) -> None:
    from imgsync.scan import digest_of, stat_digest

    for rel in ("a.jpg", "ab.png", "abc.png", "abd.png", "x.jpeg", "B.PNG", "c.jpg~", "sub/b.png", "sub/d.jpg"):
        put(tmp_path, rel, make_image(len(rel)))
    m = mirror(tmp_path, include=include, exclude=exclude)
    listed = scan(tmp_path, include=include, exclude=exclude).files
    assert 0 < len(listed) < 9
    assert stat_digest(tmp_path, m) == digest_of(listed.values())


def _child_first(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """forked.start, but this process waits until the child has walked: the child takes every unit, so
    the digest is the child's alone (its count and sum must come back whole). Returns the children's
    results as they came back."""
    from imgsync import forked

    results: list[object] = []

    class Recorded(forked.Child):
        def result(self) -> object:
            value = super().result()
            results.append(value)
            return value

    def start(fn):  # type: ignore[no-untyped-def]
        done_r, done_w = os.pipe()

        def walk_then_say() -> object:
            value = fn()
            os.write(done_w, b"x")
            return value

        child = Recorded(walk_then_say)
        os.close(done_w)
        os.read(done_r, 1)  # the child's share is done: every ticket is gone (EOF if it failed)
        os.close(done_r)
        return child

    monkeypatch.setattr(forked, "start", start)
    return results


def _tree_of_dirs(root: Path, dirs: int = 80) -> None:
    """More directories than the walk shares out (scan._SPLIT_UNITS), each with files one level down."""
    data = make_image(1, size=(40, 40))
    for d in range(dirs):
        for k in range(2):
            put(root, f"d{d:02d}/sub/f{k}.jpg", data + bytes([d, k]))
    put(root, "top.jpg", data)


def test_stat_digest_of_a_big_folder_is_shared_with_a_forked_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forkable: None
) -> None:
    """With a count at or above SPLIT_WALK_FILES (a big folder's last clean run), the walk is shared with a
    child process: the same digest whoever walks what, and a change anywhere still moves it."""
    from imgsync.scan import SPLIT_WALK_FILES, digest_of, stat_digest

    _tree_of_dirs(tmp_path)
    m = mirror(tmp_path)
    whole = stat_digest(tmp_path, m)
    assert whole == digest_of(scan(tmp_path).files.values())
    assert stat_digest(tmp_path, m, expect_files=SPLIT_WALK_FILES) == whole  # both take units as they can
    results = _child_first(monkeypatch)
    assert stat_digest(tmp_path, m, expect_files=SPLIT_WALK_FILES) == whole  # the child took every unit
    (count, _, clean), *_ = results  # type: ignore[misc]
    assert count == 160 and clean  # all but top.jpg, which the walk met before sharing out
    seen = set()
    for d in range(0, 80, 7):  # a file touched here and there: the child's walk sees it
        p = tmp_path / f"d{d:02d}" / "sub" / "f1.jpg"
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        seen.add(stat_digest(tmp_path, m, expect_files=SPLIT_WALK_FILES))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert len(seen) == len(range(0, 80, 7)) and whole not in seen
    assert len(results) == 1 + len(seen)
    assert stat_digest(tmp_path, m, expect_files=SPLIT_WALK_FILES - 1) == whole
    assert len(results) == 1 + len(seen)  # below the threshold: no child


def test_stat_digest_shared_is_none_when_either_process_meets_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forkable: None
) -> None:
    from imgsync import forked
    from imgsync.scan import SPLIT_WALK_FILES, stat_digest

    _tree_of_dirs(tmp_path)
    m = mirror(tmp_path, follow_symlinks=True)
    assert stat_digest(tmp_path, m, expect_files=SPLIT_WALK_FILES) is not None
    for child_first in (False, True):  # the problem met by either process
        if child_first:
            _child_first(monkeypatch)
        for d in range(0, 80, 9):
            link = tmp_path / f"d{d:02d}" / "sub" / "gone.jpg"
            link.symlink_to(tmp_path / "nowhere.jpg")  # a broken link: no settled folder holds one
            assert stat_digest(tmp_path, m, expect_files=SPLIT_WALK_FILES) is None
            link.unlink()
    monkeypatch.setattr(forked, "start", lambda fn: forked.Child(_raise))
    assert stat_digest(tmp_path, m, expect_files=SPLIT_WALK_FILES) is None  # a failed child: unknown


def _raise() -> None:
    raise OSError("the child's walk failed")
