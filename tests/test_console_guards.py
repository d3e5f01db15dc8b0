"""The console's guards, without a server: the token, Host and Origin checks, paths confined to a mirror's
folder (real temp folders, real symlinks), thumbnails of real and broken pictures, the thumbnail cache's
bound, and the rules for editing gallery entries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import make_image
from imgsync.console.auth import Guard, is_loopback, parse_cookies, split_host
from imgsync.console.thumbs import PathRefused, ThumbCache, check_relative, make_thumbnail, open_in_folder
from imgsync.entries import ManagedEntryError, check_edit, refuse_managed, shown_endpoint
from imgsync.errors import UsageError

GUARD = Guard("s3cret-token", 8809, loopback=True)


# --------------------------------------------------------------------------- token, Host, Origin


def test_the_token_is_taken_from_the_port_named_cookie_only() -> None:
    assert GUARD.cookie_ok({"cookie": "imgsync-console-8809=s3cret-token"})
    assert GUARD.cookie_ok({"cookie": 'other=1; bad"cookie; imgsync-console-8809="s3cret-token"'})
    assert not GUARD.cookie_ok({})
    assert not GUARD.cookie_ok({"cookie": "imgsync-console-8809=s3cret-tokeN"})
    assert not GUARD.cookie_ok({"cookie": "imgsync-console-8810=s3cret-token"})  # another console's
    assert not GUARD.token_ok("")
    cookie = GUARD.cookie()
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and cookie.startswith("imgsync-console-8809=")


def test_parse_cookies_survives_other_sites_junk() -> None:
    assert parse_cookies('a=1; b; c="x"; a=2') == {"a": "1", "c": "x"}


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:8809", True),
        ("localhost:8809", True),
        ("[::1]:8809", True),
        ("127.0.0.2:8809", True),
        ("127.0.0.1:8810", False),
        ("evil.example:8809", False),
        ("127.0.0.1", False),
        ("", False),
        ("192.168.1.5:8809", False),
        ("127.0.0.1:x", False),
    ],
)
def test_on_loopback_the_host_header_must_name_loopback_and_the_port(host: str, ok: bool) -> None:
    assert GUARD.host_ok({"host": host} if host else {}) is ok


def test_a_console_served_beyond_loopback_takes_any_host() -> None:
    assert Guard("t", 8809, loopback=False).host_ok({"host": "pictures.lan:8809"})


def test_split_host_and_is_loopback() -> None:
    assert split_host("[::1]:80") == ("::1", 80)
    assert split_host("example.org") == ("example.org", 80)
    assert is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost") and is_loopback("127.9.9.9")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.org")


@pytest.mark.parametrize(
    ("method", "headers", "refused"),
    [
        ("GET", {}, False),
        ("HEAD", {"origin": "http://evil.example"}, False),
        ("POST", {"host": "127.0.0.1:8809", "origin": "http://127.0.0.1:8809"}, False),
        ("POST", {"host": "127.0.0.1:8809", "origin": "http://127.0.0.1:8809", "sec-fetch-site": "same-origin"}, False),
        ("POST", {"host": "127.0.0.1:8809"}, True),  # no Origin
        ("POST", {"host": "127.0.0.1:8809", "origin": "http://127.0.0.1:3000"}, True),  # same site, other port
        ("POST", {"host": "127.0.0.1:8809", "origin": "null"}, True),
        ("POST", {"host": "127.0.0.1:8809", "origin": "http://127.0.0.1:8809", "sec-fetch-site": "same-site"}, True),
        ("POST", {"host": "127.0.0.1:8809", "origin": "http://127.0.0.1:8809", "sec-fetch-site": "cross-site"}, True),
        ("DELETE", {"host": "127.0.0.1:8809", "origin": "https://127.0.0.1:8809"}, True),
    ],
)
def test_anything_but_get_must_come_from_the_console_itself(
    method: str, headers: dict[str, str], refused: bool
) -> None:
    assert (GUARD.origin_problem(method, headers) is not None) is refused


# --------------------------------------------------------------------------- paths inside a mirror


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """mirror/ with a picture, a subfolder, and symlinks in and out; outside/ with a secret picture."""
    mirror, outside = tmp_path / "mirror", tmp_path / "outside"
    (mirror / "sub").mkdir(parents=True)
    outside.mkdir()
    (mirror / "a.jpg").write_bytes(make_image(1))
    (mirror / "sub" / "b.jpg").write_bytes(make_image(2))
    (outside / "secret.jpg").write_bytes(make_image(3))
    (mirror / "inside-link.jpg").symlink_to(mirror / "sub" / "b.jpg")
    (mirror / "out-link.jpg").symlink_to(outside / "secret.jpg")
    (mirror / "out-dir").symlink_to(outside, target_is_directory=True)
    (mirror / "relative-out.jpg").symlink_to("../outside/secret.jpg")
    (mirror / "root-link").symlink_to("/")
    os.mkfifo(mirror / "fifo.jpg")
    return mirror, outside


def _read(folder: Path, path: str) -> bytes:
    fd = open_in_folder(folder, path)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def test_files_inside_the_folder_are_served(tree: tuple[Path, Path]) -> None:
    mirror, _ = tree
    assert _read(mirror, "a.jpg") == (mirror / "a.jpg").read_bytes()
    assert _read(mirror, "sub/b.jpg") == (mirror / "sub" / "b.jpg").read_bytes()
    assert _read(mirror, "inside-link.jpg") == (mirror / "sub" / "b.jpg").read_bytes()  # a symlink that stays in


@pytest.mark.parametrize(
    "path",
    [
        "../outside/secret.jpg",
        "sub/../../outside/secret.jpg",
        "sub/../a.jpg",
        "./a.jpg",
        "sub//b.jpg",
        "/etc/passwd",
        "",
        "a.jpg\x00",
        "..",
        ".",
    ],
)
def test_paths_that_could_leave_the_folder_are_refused_by_their_spelling(tree: tuple[Path, Path], path: str) -> None:
    mirror, outside = tree
    path = path.replace("OUT", str(outside))
    with pytest.raises(PathRefused):
        open_in_folder(mirror, path)
    with pytest.raises(PathRefused):
        check_relative(path)


@pytest.mark.parametrize(
    "path", ["out-link.jpg", "out-dir/secret.jpg", "relative-out.jpg", "root-link/etc/passwd", "fifo.jpg", "sub"]
)
def test_symlinks_out_of_the_folder_and_non_files_are_refused(tree: tuple[Path, Path], path: str) -> None:
    mirror, _ = tree
    with pytest.raises(PathRefused):
        open_in_folder(mirror, path)


def test_an_absolute_path_to_a_file_inside_the_folder_is_refused_too(tree: tuple[Path, Path]) -> None:
    mirror, _ = tree
    with pytest.raises(PathRefused):
        open_in_folder(mirror, str(mirror / "a.jpg"))


def test_a_missing_file_is_not_found(tree: tuple[Path, Path]) -> None:
    mirror, _ = tree
    with pytest.raises(FileNotFoundError):
        open_in_folder(mirror, "nope.jpg")


# --------------------------------------------------------------------------- thumbnails and their cache


def test_thumbnails_are_small_jpegs_and_broken_pictures_have_none() -> None:
    import io

    from PIL import Image

    thumb = make_thumbnail(make_image(7, (1200, 900)))
    assert thumb is not None
    with Image.open(io.BytesIO(thumb)) as img:
        assert img.format == "JPEG" and max(img.size) == 256 and img.size == (256, 192)
    png_alpha = io.BytesIO()
    Image.new("RGBA", (300, 300), (0, 0, 0, 0)).save(png_alpha, "PNG")
    assert make_thumbnail(png_alpha.getvalue()) is not None
    sixteen = io.BytesIO()
    Image.new("I;16", (300, 200), 4000).save(sixteen, "PNG")
    assert make_thumbnail(sixteen.getvalue()) is not None
    assert make_thumbnail(b"not a picture") is None
    assert make_thumbnail(make_image(8)[:400]) is None  # truncated JPEG


def test_thumbnail_cache_stays_within_its_bound_dropping_the_least_recently_used(tmp_path: Path) -> None:
    cache = ThumbCache(tmp_path / "thumbs", max_bytes=10_000)
    for i in range(30):
        cache.put(f"{i:064x}", bytes(1000))
        assert cache.get(f"{0:064x}") is not None  # used after every write: it stays
    assert cache.size() <= 10_000
    assert cache.get(f"{0:064x}") == bytes(1000)
    assert cache.get(f"{1:064x}") is None  # used once, long ago: gone
    cache.put("f" * 64, b"")  # "does not decode" is remembered too
    assert cache.get("f" * 64) == b""


# --------------------------------------------------------------------------- editing gallery entries


def test_edits_are_checked_as_the_gallery_would() -> None:
    assert check_edit("same_hq", "new brief", (3, 4)) == {"brief": "new brief", "tags": (3, 4)}
    assert check_edit("same_hq", None, (9,)) == {"tags": (9,)}
    for brief, tags, why in [
        ("", None, "empty"),
        ("x" * 257, None, "256"),
        (None, (), "cannot clear"),
        (None, (1, 2, 3), "at most"),
        (None, (0,), "at most"),
        (None, None, "nothing"),
    ]:
        with pytest.raises(UsageError, match=why):
            check_edit("same_hq", brief, tags)
    with pytest.raises(UsageError, match="class ids"):
        check_edit("product", None, (1,))


def test_a_mirrors_entry_is_refused_with_what_to_do_instead() -> None:
    refuse_managed("same_hq", "1,2", None, "edit")  # no mirror's: allowed
    with pytest.raises(ManagedEntryError, match="mirror 'photos'.*next reconcile would undo this delete"):
        refuse_managed("same_hq", "1,2", "photos", "delete")


def test_endpoints_are_shown_without_credentials() -> None:
    assert shown_endpoint("https://ak:sk@aip.baidubce.com/x?token=t#f") == "https://aip.baidubce.com/x"
    assert shown_endpoint("http://[::1]:8808") == "http://[::1]:8808"


def test_the_listing_reads_the_file_the_engine_writes() -> None:
    from imgsync.localgallery.engine import DB_NAME
    from imgsync.localgallery.listing import DB_NAME as LISTED

    assert LISTED == DB_NAME
