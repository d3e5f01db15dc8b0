"""images.py: every refusal code with a message that says what and why; decoding; cont_sign."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import make_image
from imgsync.libraries import get_library
from imgsync.localgallery.errors import (
    EMPTY_IMAGE,
    IMAGE_DECODE_ERROR,
    IMAGE_FORMAT_ERROR,
    IMAGE_SIZE_ERROR,
    ApiError,
)
from imgsync.localgallery.images import (
    COPY_QUALITY,
    EXACT_SHRINK_MAX,
    WORK_SIDE,
    _draft_size,
    _thumb_size,
    cont_sign_of,
    decode_copy,
    encode_copy,
    load_image,
    size_problem,
)

SAME = get_library("same_hq")
PICTUREBOOK = get_library("picturebook")
PRODUCT = get_library("product")
MATERIEL = get_library("materiel")


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a tiny (bogus) data chunk: a decompression bomb
    stand-in that must be refused from its header, without decoding anything."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _code(data: bytes, library=SAME) -> ApiError:
    with pytest.raises(ApiError) as info:
        load_image(data, library)
    return info.value


# --- refusals --------------------------------------------------------------------------------------


def test_empty_bytes_are_216200() -> None:
    e = _code(b"")
    assert e.code == EMPTY_IMAGE and "0 bytes" in e.message


@pytest.mark.parametrize("data", [b"not an image at all", b"\xff\xd8\xff" + b"\0" * 10, b"\x89PNG\r\n\x1a\nxx"])
def test_unidentifiable_bytes_are_216203(data: bytes) -> None:
    e = _code(data)
    assert e.code == IMAGE_DECODE_ERROR and "not a readable image" in e.message


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP"])
def test_truncated_image_is_216203(fmt: str) -> None:
    data = make_image(1, (400, 300), fmt)
    e = _code(data[: len(data) * 2 // 3])
    assert e.code == IMAGE_DECODE_ERROR and "truncated or corrupt" in e.message


def test_too_small_names_the_size_and_the_library_minimum() -> None:
    e = _code(make_image(2, (40, 600), "PNG"), PICTUREBOOK)
    assert e.code == IMAGE_SIZE_ERROR
    assert "40x600 px" in e.message and "picturebook" in e.message and "150 px" in e.message


def test_product_needs_300_px_but_same_hq_takes_50() -> None:
    data = make_image(3, (299, 400), "JPEG")
    assert _code(data, PRODUCT).code == IMAGE_SIZE_ERROR
    assert load_image(data, SAME).width == 299


def test_too_long_is_216202() -> None:
    e = _code(make_image(4, (4097, 60), "PNG"))
    assert e.code == IMAGE_SIZE_ERROR and "4097x60" in e.message and "4096" in e.message


def test_aspect_ratio_beyond_library_limit_is_216202() -> None:
    e = _code(make_image(5, (160, 1700), "PNG"), PICTUREBOOK)  # 10.6:1 > 10:1
    assert e.code == IMAGE_SIZE_ERROR and "10.6:1" in e.message and "10:1" in e.message
    assert load_image(make_image(5, (160, 1500), "PNG"), PICTUREBOOK).height == 1500  # 9.4:1 is fine
    assert load_image(make_image(5, (60, 1700), "PNG"), SAME).height == 1700  # no limit there


@pytest.mark.parametrize("size", [(10_000, 10_000), (20_000, 20_000), (100_000, 100_000)])
def test_decompression_bombs_are_refused_from_the_header(size: tuple[int, int]) -> None:
    # 1e8 px (Pillow only warns), 4e8 and 1e10 px (Pillow refuses): all must be a size error, fast.
    e = _code(_png_header_only(*size))
    assert e.code == IMAGE_SIZE_ERROR and "4096" in e.message


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "WEBP"])
def test_other_formats_are_216201(fmt: str) -> None:
    data = _encode(Image.open(io.BytesIO(make_image(6))), fmt)
    e = _code(data)
    assert e.code == IMAGE_FORMAT_ERROR and fmt in e.message and "JPEG, PNG and BMP" in e.message


def test_size_is_checked_before_format() -> None:
    # A 30x30 GIF is refused for its size first: the order documented in images.py.
    tiny_gif = _encode(Image.new("RGB", (30, 30), "red"), "GIF")
    assert _code(tiny_gif).code == IMAGE_SIZE_ERROR


@pytest.mark.parametrize(
    "dims, problem",
    [
        ((50, 50), None),
        ((4096, 50), None),
        ((49, 100), "shortest side"),
        ((4097, 100), "longest side"),
        ((1500, 150), None),
        ((1501, 150), "aspect"),
    ],
)
def test_size_problem_table(dims: tuple[int, int], problem: str | None) -> None:
    lib = PICTUREBOOK if dims[1] == 150 else SAME
    got = size_problem(*dims, lib)
    assert (got is None) if problem is None else (got is not None and problem in got)


# --- decoding ----------------------------------------------------------------------------------------


def test_jpeg_is_decoded_at_reduced_size_but_reports_the_header_size() -> None:
    data = make_image(7, (1152, 864), "JPEG")
    d = load_image(data, SAME)
    assert (d.format, d.width, d.height) == ("JPEG", 1152, 864)
    assert d.pixels.mode == "RGB" and max(d.pixels.size) <= WORK_SIDE
    assert d.pixels.size == (512, 384)


def _pillow_working_copy(data: bytes, draft: bool) -> Image.Image:
    """What the loader made of `data` before it shrank by OpenCV: Pillow's draft, then its thumbnail."""
    with Image.open(io.BytesIO(data)) as img:
        if draft:
            img.draft("RGB", _draft_size(img.width, img.height))
        rgb = img.convert("RGB")
    rgb.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return rgb


@pytest.mark.parametrize(
    ("size", "fmt"),
    [((1152, 864), "JPEG"), ((1400, 1000), "JPEG"), ((700, 500), "PNG"), ((500, 760), "PNG")],
)
def test_a_small_shrink_is_opencvs_at_pillows_size_and_nearly_its_pixels(size: tuple[int, int], fmt: str) -> None:
    """576 → 512 px (a 1 MP JPEG's half-scale draft) and the like: OpenCV's bilinear, without the GIL.
    Its filter is not widened as Pillow's is, so the pixels differ a little, never the size."""
    data = make_image(11, size, fmt)
    got = load_image(data, SAME).pixels
    want = _pillow_working_copy(data, draft=fmt == "JPEG")
    with Image.open(io.BytesIO(data)) as img:
        if fmt == "JPEG":
            img.draft("RGB", _draft_size(img.width, img.height))
        drafted = img.size
    assert 1.0 < max(drafted) / WORK_SIDE <= EXACT_SHRINK_MAX, drafted  # the case this test is about
    assert got.mode == "RGB" and got.size == want.size
    diff = np.abs(np.asarray(got, dtype=np.int16) - np.asarray(want, dtype=np.int16))
    assert 0 < diff.mean() < 1.5, diff.mean()


def test_a_large_shrink_is_pillows_thumbnail_exactly() -> None:
    data = make_image(12, (1600, 900), "PNG")
    got = load_image(data, SAME).pixels
    assert np.array_equal(np.asarray(got), np.asarray(_pillow_working_copy(data, draft=False)))


def test_the_working_size_is_the_one_pillows_thumbnail_gives() -> None:
    rng = np.random.default_rng(5)
    for w, h in [(513, 1), (1, 513), (777, 512), (513, 513), *rng.integers(1, 3000, size=(300, 2)).tolist()]:
        if max(w, h) <= WORK_SIDE:
            continue
        im = Image.new("1", (w, h))
        im.thumbnail((WORK_SIDE, WORK_SIDE))
        assert _thumb_size(w, h) == im.size, (w, h)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    data = make_image(8, (200, 150), fmt, mode=mode)
    d = load_image(data, SAME)
    assert d.pixels.mode == "RGB" and d.pixels.size == (200, 150)


def test_sixteen_bit_greyscale_is_stretched_not_clipped() -> None:
    ramp = (np.linspace(0, 65535, 200)[None, :] * np.ones((100, 1))).astype(np.uint16)
    data = _encode(Image.fromarray(ramp), "PNG")
    px = np.asarray(load_image(data, SAME).pixels)
    assert px[..., 0].min() == 0 and px[..., 0].max() == 255 and len(np.unique(px[..., 0])) > 100


def test_transparent_pixels_become_white() -> None:
    img = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    px = np.asarray(load_image(_encode(img, "PNG"), SAME).pixels)
    assert (px == 255).all()


def _with_orientation(data: bytes, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue()


def test_exif_orientation_turns_the_picture_and_its_absence_does_not() -> None:
    """The same JPEG data under three EXIF orientations: 1 (as stored), 3 (turned 180°) and 6 (90°
    clockwise), read as a viewer shows them."""
    plain = _encode(Image.open(io.BytesIO(make_image(12, (300, 200)))), "JPEG")
    upright = np.asarray(load_image(_with_orientation(plain, 1), SAME).pixels)
    turned = np.asarray(load_image(_with_orientation(plain, 3), SAME).pixels)
    side = load_image(_with_orientation(plain, 6), SAME)
    assert upright.shape == (200, 300, 3) and side.pixels.size == (200, 300)
    assert np.array_equal(turned, upright[::-1, ::-1])
    assert np.array_equal(np.asarray(side.pixels), np.rot90(upright, -1))


@pytest.mark.parametrize(
    ("seed", "size", "mode"), [(13, (512, 384), "RGB"), (14, (255, 301), "RGB"), (15, (320, 240), "L")]
)
def test_working_copy_holds_the_pixels_pillows_jpeg_held(seed: int, size: tuple[int, int], mode: str) -> None:
    """The stored working copy (encoded by OpenCV) decodes to exactly the pixels that Pillow's
    save(quality=COPY_QUALITY), the earlier encoder, gave: re-extraction from copies stored by either
    version gives the same features."""
    pixels = load_image(make_image(seed, size, "PNG", mode=mode), SAME).pixels
    pillow = io.BytesIO()
    pixels.save(pillow, "JPEG", quality=COPY_QUALITY)
    assert np.array_equal(np.asarray(decode_copy(encode_copy(pixels))), np.asarray(decode_copy(pillow.getvalue())))


def test_bmp_is_accepted() -> None:
    assert load_image(make_image(9, (120, 90), "BMP"), SAME).format == "BMP"


# --- cont_sign ---------------------------------------------------------------------------------------


def test_cont_sign_is_two_uint32_from_the_bytes() -> None:
    a, b = make_image(10), make_image(11)
    s = cont_sign_of(a)
    x, y = s.split(",")
    assert 0 <= int(x) < 2**32 and 0 <= int(y) < 2**32
    assert cont_sign_of(a) == s and cont_sign_of(b) != s
    # Same pixels, other bytes (a text chunk): another image as far as cont_sign is concerned.
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("k", "v")
    img = Image.open(io.BytesIO(a))
    assert cont_sign_of(_encode(img, "PNG")) != cont_sign_of(_encode(img, "PNG", pnginfo=info))
