"""shrink.py: each convertible case gives bytes the library accepts; never upscales; the hash guard.

Every output is also fed to the local gallery's own checker (imgsync.localgallery.images.load_image),
an independent implementation of the cloud's rules, so "fits" is not judged by the code under test.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from conftest import make_image
from imgsync.libraries import MAX_IMAGE_BASE64, get_library
from imgsync.localgallery.images import load_image
from imgsync.shrink import ShrinkError, SourceChangedError, prepare_upload, shrink_image
from imgsync.validate import base64_size, inspect_image, judge_image

SAME = get_library("same_hq")


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def picture(seed: int, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    return Image.open(io.BytesIO(make_image(seed, size, "PNG", mode=mode)))


def accepted(data: bytes, library: str = "same_hq") -> Image.Image:
    """The bytes pass the local gallery's checks; returns them decoded."""
    load_image(data, get_library(library))  # raises ApiError if the gallery would refuse them
    assert base64_size(len(data)) <= MAX_IMAGE_BASE64
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "TIFF"])
def test_other_formats_are_converted(fmt: str) -> None:
    data = make_image(1, (400, 300), fmt)
    out = prepare_upload(data, "same_hq", "shrink")
    img = accepted(out)
    assert img.format in ("JPEG", "PNG") and img.size == (400, 300)  # converted, not resized


def test_photo_formats_become_jpeg_and_palette_gifs_png() -> None:
    assert Image.open(io.BytesIO(prepare_upload(make_image(2, (400, 300), "WEBP"), SAME, "shrink"))).format == "JPEG"
    assert Image.open(io.BytesIO(prepare_upload(make_image(2, (400, 300), "GIF"), SAME, "shrink"))).format == "PNG"


def test_animated_gif_uses_its_first_frame() -> None:
    red, blue = Image.new("RGB", (200, 200), (255, 0, 0)), Image.new("RGB", (200, 200), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    img = accepted(prepare_upload(data, SAME, "shrink")).convert("RGB")
    r, g, b = img.getpixel((100, 100))
    assert r > 200 and b < 50


def test_oversize_jpeg_is_scaled_to_4096() -> None:
    data = encode(picture(3, (5000, 1000)), "JPEG", quality=90)
    img = accepted(prepare_upload(data, SAME, "shrink"))
    assert (img.format, img.size) == ("JPEG", (4096, 820))


def test_over_4mb_png_becomes_a_fitting_jpeg_at_the_same_size() -> None:
    px = np.random.default_rng(4).integers(0, 256, size=(1300, 1300, 3), dtype=np.uint8)
    data = encode(Image.fromarray(px), "PNG", compress_level=1)
    assert base64_size(len(data)) > MAX_IMAGE_BASE64
    img = accepted(prepare_upload(data, SAME, "shrink"))
    assert (img.format, img.size) == ("JPEG", (1300, 1300))


def test_lower_quality_then_smaller_when_q90_does_not_fit() -> None:
    px = np.random.default_rng(5).integers(0, 256, size=(2500, 2500, 3), dtype=np.uint8)
    shrunk = shrink_image(encode(Image.fromarray(px), "BMP"), SAME)
    accepted(shrunk.data)
    assert shrunk.format == "JPEG" and (shrunk.width, shrunk.height) == (2000, 2000)  # one 0.8 step


def test_alpha_stays_png_when_it_fits() -> None:
    data = encode(picture(6, (4500, 300), mode="RGBA"), "PNG")
    img = accepted(prepare_upload(data, SAME, "shrink"))
    assert (img.format, img.mode, img.size) == ("PNG", "RGBA", (4096, 274))


def test_alpha_is_flattened_on_white_when_png_is_too_big() -> None:
    rng = np.random.default_rng(7)
    px = rng.integers(0, 256, size=(1200, 1200, 4), dtype=np.uint8)
    px[:100, :100, 3] = 0  # a fully transparent corner
    data = encode(Image.fromarray(px, "RGBA"), "PNG", compress_level=1)
    assert base64_size(len(data)) > MAX_IMAGE_BASE64
    img = accepted(prepare_upload(data, SAME, "shrink")).convert("RGB")
    assert img.size == (1200, 1200)
    assert all(c > 240 for c in img.getpixel((50, 50)))  # transparent → white


def test_exif_orientation_is_applied_when_shrinking() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = encode(picture(8, (5000, 1000)), "JPEG", exif=exif.tobytes())
    img = accepted(prepare_upload(data, SAME, "shrink"))
    assert img.size == (820, 4096)  # portrait, as a viewer shows it
    assert img.getexif().get(0x0112) is None


def test_files_that_fit_are_uploaded_byte_for_byte() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(picture(9, (600, 400)), "JPEG", exif=exif.tobytes())
    assert prepare_upload(data, SAME, "shrink") == data
    assert prepare_upload(make_image(9, (600, 400), "GIF"), SAME, "reject") == make_image(9, (600, 400), "GIF")


def test_never_upscales_a_small_image() -> None:
    data = make_image(10, (40, 40), "GIF")
    assert "never upscaled" in judge_image(inspect_image(data), SAME, "shrink")  # type: ignore[operator]
    with pytest.raises(ShrinkError, match="below same_hq's 50 px"):
        shrink_image(data, SAME)


def test_too_thin_to_scale_down_stays_rejected() -> None:
    data = encode(picture(11, (6000, 60)), "PNG")
    assert "would make the shortest side 41 px" in judge_image(inspect_image(data), SAME, "shrink")  # type: ignore
    with pytest.raises(ShrinkError):
        shrink_image(data, SAME)


def test_picturebook_output_keeps_its_minimum_side() -> None:
    data = encode(picture(12, (5000, 800)), "WEBP")
    img = accepted(prepare_upload(data, "picturebook", "shrink"), "picturebook")
    assert img.size == (4096, 656)


def test_shrinking_is_deterministic() -> None:
    data = make_image(13, (700, 500), "WEBP")
    assert prepare_upload(data, SAME, "shrink") == prepare_upload(data, SAME, "shrink")


def test_prepare_upload_reads_the_path_and_checks_the_hash(tmp_path) -> None:
    p = tmp_path / "a.gif"
    p.write_bytes(make_image(14, (300, 300), "GIF"))
    good = hashlib.sha256(p.read_bytes()).hexdigest()
    accepted(prepare_upload(p, SAME, "shrink", expected_hash=good))
    p.write_bytes(make_image(15, (300, 300), "GIF"))  # changed after the scan
    with pytest.raises(SourceChangedError, match="changed since the scan"):
        prepare_upload(p, SAME, "shrink", expected_hash=good)


def test_undecodable_bytes_raise_a_clear_error() -> None:
    with pytest.raises(ShrinkError, match="cannot decode"):
        shrink_image(make_image(16, (400, 300), "WEBP")[:200], SAME)


# --------------------------------------------------------------------------- 16/32-bit and float rasters


def _former_numpy_stretch(img: Image.Image) -> Image.Image:
    """What shrink.py did with numpy before the engine dropped it: the reference for stretch_to_8bit."""
    a = np.asarray(img, dtype=np.float32)
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(a.astype(np.uint8), "L")


def _real_rasters() -> dict[str, bytes]:
    """Measured data and photos that ship in wheels (no network), as the TIFFs a scanner or a camera
    pipeline writes: 16-bit (both byte orders), 32-bit integer and 32-bit float."""
    import gzip

    from benchmarks.photos import package_dir

    mpl = package_dir("matplotlib") / "mpl-data" / "sample_data"
    sk = package_dir("skimage") / "data"
    mri = np.frombuffer(gzip.decompress((mpl / "s1045.ima.gz").read_bytes()), ">u2").reshape(256, 256)
    with np.load(mpl / "jacksboro_fault_dem.npz") as dem, np.load(mpl / "topobathy.npz") as topo:
        elevation, depth = dem["elevation"].astype(np.int32), topo["topo"].astype(np.float32)
    camera = np.asarray(Image.open(sk / "camera.png").convert("L"), dtype=np.uint16)
    moon = np.asarray(Image.open(sk / "moon.png").convert("L"), dtype=np.float32)
    images = {
        "mri I;16B": Image.frombytes("I;16B", (256, 256), mri.tobytes()),
        "camera I;16": Image.fromarray(camera * 257 + np.uint16(100)),  # 16-bit, not starting at 0
        "dem I": Image.fromarray(elevation, "I"),
        "topobathy F": Image.fromarray(depth, "F"),  # below and above sea level
        # The DEM in feet, as metres: where computing v * s - lo * s in one step (not the former float32
        # (v - lo) * s) already misses the former output on 438 pixels.
        "dem-metres F": Image.fromarray(elevation.astype(np.float32) * np.float32(0.3048), "F"),
        "moon F": Image.fromarray(moon / 255.0 + 0.25, "F"),
    }
    return {name: encode(img, "TIFF") for name, img in images.items()}


@pytest.fixture(scope="module")
def real_rasters() -> dict[str, bytes]:
    return _real_rasters()


def test_wide_rasters_stretch_to_8_bits_exactly_as_before(real_rasters: dict[str, bytes]) -> None:
    from imgsync.shrink import stretch_to_8bit

    for name, data in real_rasters.items():
        img = Image.open(io.BytesIO(data))
        assert img.mode == name.split()[1], name  # the TIFF kept the mode under test
        got, want = stretch_to_8bit(img), _former_numpy_stretch(img)
        assert got.mode == "L" and got.size == img.size
        assert np.array_equal(np.asarray(got), np.asarray(want)), name
        assert got.getextrema() == (0, 255), name  # stretched over the whole range


def test_wide_rasters_shrink_to_the_same_bytes_as_before(real_rasters: dict[str, bytes]) -> None:
    for name, data in real_rasters.items():
        out = shrink_image(data, SAME)
        former = encode(_former_numpy_stretch(Image.open(io.BytesIO(data))), "JPEG", quality=90)
        assert (out.format, out.data) == ("JPEG", former), name
        accepted(out.data)


def test_a_flat_wide_raster_becomes_black() -> None:
    from imgsync.shrink import stretch_to_8bit

    flat = Image.new("I;16", (80, 60), 1234)
    assert stretch_to_8bit(flat).getextrema() == (0, 0)
    assert stretch_to_8bit(Image.new("F", (80, 60), float("nan"))).getextrema() == (0, 0)
