"""Real photos for the matching benchmarks, taken from files that ship inside PyPI wheels.

No network: scikit-image, scikit-learn and matplotlib carry these files in their wheels
(install them with `pip install '.[bench]'`). Each is returned as an RGB Pillow image with a
stable name. Groups: `photos()` (natural photos and graphics), `textures()` (CC0 textures for the
fabric library), `pages()` (printed-page-like images), `stereo_pair()` (the same object from two
viewpoints, for similar/product).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"benchmark data needs the {name!r} package: pip install '.[bench]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _open(path: Path) -> Image.Image:
    with Image.open(path) as im:
        if im.mode in ("RGBA", "LA", "P"):
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(bg, rgba).convert("RGB")
        return im.convert("RGB")


_SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "color.png",
    "logo.png",
    "horse.png",
    "camera.png",
    "coins.png",
    "moon.png",
    "cell.png",
    "text.png",
    "page.png",
)
_SKIMAGE_TEXTURES = ("brick.png", "grass.png", "gravel.png")


def photos() -> dict[str, Image.Image]:
    """About 25 distinct real images (photos, graphics, scans)."""
    sk = package_dir("skimage") / "data"
    out = {Path(n).stem: _open(sk / n) for n in _SKIMAGE_PHOTOS}
    sl = package_dir("sklearn") / "datasets" / "images"
    for n in ("china.jpg", "flower.jpg"):
        out[Path(n).stem] = _open(sl / n)
    mpl = package_dir("matplotlib") / "mpl-data" / "sample_data"
    out["grace_hopper"] = _open(mpl / "grace_hopper.jpg")
    return out


def textures() -> dict[str, Image.Image]:
    """Large uniform textures: patches of one are 'the same fabric'."""
    sk = package_dir("skimage") / "data"
    out = {Path(n).stem: _open(sk / n) for n in _SKIMAGE_TEXTURES}
    return out


def stereo_pair() -> tuple[Image.Image, Image.Image]:
    """The same motorcycle seen from two viewpoints (Middlebury 2014 stereo pair)."""
    sk = package_dir("skimage") / "data"
    return _open(sk / "motorcycle_left.png"), _open(sk / "motorcycle_right.png")


if __name__ == "__main__":
    for name, im in {**photos(), **textures()}.items():
        print(f"{name:24} {im.size[0]}x{im.size[1]}")
