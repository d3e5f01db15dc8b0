"""validate.py: every rejection kind, on real bytes made with Pillow; the pure judge, table-driven."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image

from conftest import make_image
from imgsync.libraries import MAX_IMAGE_BASE64, get_library
from imgsync.validate import (
    ImageInfo,
    base64_size,
    describe_base64,
    fit_size,
    inspect_image,
    judge_image,
    needs_shrink,
)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height over a few bytes of data: a decompression bomb stand-in."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 16)) + _chunk(b"IEND", b"")
    )


def noise_png(side: int) -> bytes:
    """Incompressible pixels: a PNG far over 4 MB at a modest size."""
    import numpy as np

    px = np.random.default_rng(side).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px, "RGB").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def judge(data: bytes, library: str = "same_hq", fit: str = "reject") -> str | None:
    return judge_image(inspect_image(data), library, fit)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- accepted


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP"])
def test_good_images_are_accepted(fmt: str) -> None:
    info = inspect_image(make_image(1, (320, 240), fmt))
    assert (info.format, info.width, info.height, info.decoded) == (fmt, 320, 240, True)
    assert judge_image(info, "same_hq", "reject") is None


def test_inspect_reads_a_path_too(tmp_path) -> None:
    p = tmp_path / "a.png"
    p.write_bytes(make_image(2, (300, 300), "PNG"))
    assert inspect_image(p).format == "PNG"


def test_alpha_is_noticed() -> None:
    assert inspect_image(make_image(3, (300, 300), "PNG", mode="RGBA")).has_alpha
    assert not inspect_image(make_image(3, (300, 300), "PNG")).has_alpha


# --------------------------------------------------------------------------- unreadable


def test_zero_byte_file() -> None:
    assert judge(b"") == "empty file (0 bytes)"


def test_text_file_named_jpg() -> None:
    assert judge(b"holiday photos, see the other folder\n") == "not an image (it looks like text)"


def test_corrupt_bytes() -> None:
    reason = judge(bytes(range(256)) * 10)
    assert reason is not None and reason.startswith("not an image")


def test_truncated_jpeg_is_caught_by_the_full_decode() -> None:
    data = make_image(4, (800, 600))
    info = inspect_image(data[: len(data) // 2])
    assert (info.format, info.width) == ("JPEG", 800)  # the header is fine ...
    assert info.problem is not None and info.problem.startswith("truncated JPEG (image file is truncated")


def test_jpeg_missing_its_tail_is_truncated() -> None:
    data = make_image(5, (800, 600))
    assert judge(data[:-300]).startswith("truncated JPEG")  # type: ignore[union-attr]


def test_truncated_png() -> None:
    data = make_image(6, (400, 300), "PNG")
    assert judge(data[: len(data) // 2]).startswith("truncated PNG")  # type: ignore[union-attr]


def test_corrupt_png_data() -> None:
    data = bytearray(make_image(7, (400, 300), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start : start + 64] = bytes(64)  # zeroed deflate stream
    reason = judge(bytes(data))
    assert reason is not None and (
        reason.startswith("corrupt PNG")
        or reason.startswith("truncated PNG")
        or reason.startswith("not a readable image")
    )


def test_decompression_bomb_header_is_refused_without_decoding() -> None:
    # 10^10 pixels: over Pillow's hard guard, which fires while the header is read.
    reason = judge(png_header_only(100_000, 100_000), fit="shrink")
    assert reason is not None and reason.startswith("decompression bomb refused without decoding")


@pytest.mark.parametrize("fit", ["reject", "shrink"])
def test_bomb_below_pillows_hard_guard_is_refused_from_its_header(fit: str) -> None:
    # 10^8 pixels: Pillow only warns here (pytest turns warnings into errors, so a warning would fail
    # this test); our own pixel cap refuses it before any decode.
    info = inspect_image(png_header_only(10_000, 10_000), max_pixels=60_000_000)
    assert not info.decoded and info.problem is None
    reason = judge_image(info, "same_hq", fit)  # type: ignore[arg-type]
    assert reason is not None and "10000x10000 px" in reason


# --------------------------------------------------------------------------- wrong format, size, aspect


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "TIFF"])
def test_other_formats_are_rejected_with_a_hint(fmt: str) -> None:
    assert judge(make_image(8, (320, 240), fmt)) == (
        f'{fmt} is not accepted by same_hq (jpg/png/bmp only); set fit = "shrink" to convert'
    )


def test_tiny_image_for_picturebook() -> None:
    assert judge(make_image(9, (150, 150)), "picturebook") is None
    assert judge(make_image(9, (40, 600)), "picturebook") == (
        "40x600 px: shortest side is below picturebook's 150 px (images are never upscaled)"
    )


def test_product_needs_300_px() -> None:
    assert "below product's 300 px" in judge(make_image(10, (299, 400)), "product")  # type: ignore[operator]


def test_huge_image() -> None:
    assert judge(make_image(13, (4200, 300), "PNG")) == (
        '4200x300 px: longest side is over the 4096 px limit; set fit = "shrink" to scale it down'
    )


def test_size_is_judged_from_the_header_alone() -> None:
    info = inspect_image(png_header_only(5000, 3000), decode=False)
    assert not info.decoded
    assert judge_image(info, "same_hq", "reject") == (
        '5000x3000 px: longest side is over the 4096 px limit; set fit = "shrink" to scale it down'
    )


@pytest.mark.parametrize(
    ("library", "size", "ok"),
    [
        ("picturebook", (1500, 150), True),  # exactly 10:1
        ("picturebook", (1600, 150), False),
        ("materiel", (2000, 100), True),  # exactly 20:1
        ("materiel", (2100, 100), False),
        ("same_hq", (4000, 50), True),  # no aspect limit
    ],
)
def test_aspect_limits(library: str, size: tuple[int, int], ok: bool) -> None:
    reason = judge(make_image(11, size, "PNG"), library)
    assert (reason is None) == ok
    if not ok:
        assert f"beyond {library}'s" in reason  # type: ignore[operator]


def test_aspect_failure_stays_rejected_when_shrinking() -> None:
    assert "aspect 16.0:1" in judge(make_image(12, (2400, 150), "PNG"), "picturebook", "shrink")  # type: ignore


def test_over_4mb_base64() -> None:
    data = noise_png(1300)
    assert base64_size(len(data)) > MAX_IMAGE_BASE64
    reason = judge(data)
    assert reason is not None and reason.endswith('base64 is over the 4 MB limit; set fit = "shrink" to re-encode it')
    assert reason.startswith(f"{describe_base64(base64_size(len(data)))} base64")


# --------------------------------------------------------------------------- pure pieces


def test_base64_size_matches_the_encoder() -> None:
    for n in (0, 1, 2, 3, 4, 3 * 1024 * 1024, 3 * 1024 * 1024 + 1):
        assert base64_size(n) == len(base64.b64encode(b"x" * n))


def test_3_mib_raw_is_exactly_the_limit() -> None:
    assert base64_size(3 * 1024 * 1024) == MAX_IMAGE_BASE64


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (int(5.1 * 2**20), "5.1 MB"),
        (MAX_IMAGE_BASE64 + 4, "4.000 MB"),  # never "4.0 MB base64 is over the 4 MB limit"
    ],
)
def test_describe_base64(size: int, text: str) -> None:
    assert describe_base64(size) == text


@pytest.mark.parametrize(
    ("w", "h", "out"),
    [
        (300, 200, (300, 200)),  # never enlarged
        (8192, 4096, (4096, 2048)),
        (4096, 8192, (2048, 4096)),
        (5000, 3001, (4096, 2459)),  # short side rounded up: ratio never grows
        (41000, 4100, (4096, 410)),  # exactly 10:1 stays ≤ 10:1
    ],
)
def test_fit_size(w: int, h: int, out: tuple[int, int]) -> None:
    got = fit_size(w, h, 4096)
    assert got == out
    assert max(got) <= 4096 and max(got) / min(got) <= max(w, h) / min(w, h) + 1e-9


def test_judge_table_for_shrink() -> None:
    same = get_library("same_hq")
    big = ImageInfo(10_000, "JPEG", 6000, 4000, "RGB", decoded=True)
    assert needs_shrink(big, same)
    assert judge_image(big, same, "shrink") is None
    thin = ImageInfo(10_000, "JPEG", 10_000, 60, "RGB", decoded=True)
    assert judge_image(thin, same, "shrink") == (
        "10000x60 px: scaling the longest side down to 4096 px would make the shortest side 25 px, "
        "below same_hq's 50 px"
    )
    gif_small = ImageInfo(10_000, "GIF", 40, 40, "P", decoded=True)
    assert "below same_hq's 50 px" in judge_image(gif_small, same, "shrink")  # type: ignore[operator]
    undecoded = ImageInfo(10_000, "PNG", 9000, 9000, "RGB", decoded=False)
    assert "too large to shrink safely" in judge_image(undecoded, same, "shrink")  # type: ignore[operator]
    fine = ImageInfo(10_000, "PNG", 900, 900, "RGB", decoded=True)
    assert not needs_shrink(fine, same) and judge_image(fine, same, "shrink") is None


def test_problem_wins_over_everything() -> None:
    info = ImageInfo(10, "JPEG", 10, 10, "RGB", problem="truncated JPEG (x)")
    assert judge_image(info, "same_hq", "shrink") == "truncated JPEG (x)"
