"""A held-out picture set for the matchers, built from real images that ship inside PyPI wheels and
that neither the tests nor the calibration (benchmarks/photos.py) ever used.

    python -m benchmarks.heldout [--sheet out.png]     # list the set (and draw a contact sheet)

Sources (all offline, installed by the `bench`/`test` extra): glymur's JPEG 2000 samples (a snowy
street, a glass of beer, the Sun), mahotas' demo photos (a crowd drawing, a portrait, nuclei under a
microscope), pygame's example sprites and documentation pictures (a fist on a blue screen, aliens,
a chimp, a ball, piano keys, bricks, game screenshots, a webcam view of a wall and a tree, a nearly
uniform webcam background), matplotlib's sample data (a present, its logo, two elevation models and
an MRI slice, rendered), and scikit-image files that photos.py leaves out (a motion-blurred clock,
a chessboard, a retina detail).

Every picture gets a *part*: "tune" or "held". Matching was tuned on "tune" only; figures are
reported on "held" only. The split is by source picture (sorted names, alternating within each
kind), so no held-out picture, nor any edit of it, was ever looked at while tuning.

Kinds, each the hard case of one goal of issue #14:
- object: a simple object on a plain background (cut out by its alpha channel or a colour key and
  centred on white). Their `lookalikes` (the same object recoloured, its sibling sprites) are
  *outside* queries that must not score "the same".
- lowtex: low-texture pictures (smooth gradients, dark skies, blurred photos, rendered terrain).
- photo: ordinary photos and screenshots.
- texture: stationary textures, periodic (tiled) and stochastic, for materiel at several scales.
- pairs: natural viewpoint pairs: an object alone vs the same object in a cluttered scene (both
  directions), and a logo against its low-fidelity rendering.

tune_pairs() adds, for the tuning part only, more natural pairs: its objects and more (sprites,
logos, a silhouette, crops of photos as boxes) pasted into scenes at other sizes and angles, half
of them in front of the part's own library photos; sparse_pairs() the same objects in front of those
photos where each has the fewest of its own keypoints.
"""

from __future__ import annotations

import argparse
import gzip
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFilter, ImageOps

from benchmarks.photos import package_dir as _pkg

TUNE, HELD = "tune", "held"


def _rgba(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.convert("RGBA")


def _rgb(im: Image.Image, bg: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    im = im.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", im.size, (*bg, 255)), im).convert("RGB")


def _at_least(im: Image.Image, side: int) -> Image.Image:
    """Enlarged (Lanczos) until the shorter side is at least `side`: sprites are tiny."""
    k = side / min(im.size)
    return im if k <= 1 else im.resize((round(im.width * k), round(im.height * k)), Image.Resampling.LANCZOS)


def _key(im: Image.Image, test: Callable[[np.ndarray], np.ndarray]) -> Image.Image:
    """RGBA with alpha = 0 where `test(rgb)` says background; the mask is cleaned up a little."""
    rgb = np.asarray(im.convert("RGB")).astype(np.int32)
    fg = (~test(rgb)).astype(np.uint8) * 255
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    out = im.convert("RGBA")
    out.putalpha(Image.fromarray(fg))
    return out


def _trim(im: Image.Image) -> Image.Image:
    box = im.getchannel("A").getbbox()
    return im.crop(box) if box else im


# --- raw sources ----------------------------------------------------------------------------------


def _cutouts() -> dict[str, Image.Image]:
    """Objects with a transparent background (RGBA), trimmed to the object."""
    pg, pgd = _pkg("pygame") / "examples" / "data", _pkg("pygame") / "docs" / "generated" / "_images"
    mpl = _pkg("matplotlib") / "mpl-data" / "sample_data"
    gly = _pkg("glymur") / "data"
    out = {
        "alien1": _rgba(pg / "alien1.png"),
        "ball": _rgba(pgd / "intro_ball.gif"),
        "present": _rgba(mpl / "Minduka_Present_Blue_Pack.png"),
        "mpl_logo": _rgba(mpl / "logo2.png"),
        "pygame_logo": _rgba(pgd / "pygame_logo.png"),
        "joystick": _rgba(pgd / "joystick_calls.png"),
        "fist": _key(_rgba(pg / "fist.png"), lambda c: (c[..., 2] > 150) & (c[..., 2] > c[..., 0] + 60)),
        "sun": _key(_rgba(gly / "heliov.jpx"), lambda c: c.sum(axis=-1) < 60),
        "chimp": _key(_rgba(pg / "chimp.png"), lambda c: (c[..., 0] > 180) & (c[..., 1] < 80)),
        "danger": _rgba(pg / "danger.gif"),
    }
    return {n: _trim(im) for n, im in out.items()}


def _siblings() -> dict[str, Image.Image]:
    """Sprites that are *another* picture of the same kind as an object (never in a library)."""
    pg = _pkg("pygame") / "examples" / "data"
    return {"alien1~alien2": _trim(_rgba(pg / "alien2.png")), "alien1~alien3": _trim(_rgba(pg / "alien3.png"))}


def on_plain(
    obj: Image.Image, side: int = 480, fill: float = 0.7, bg: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """The object centred on a plain square canvas, its longer side `fill` of the canvas."""
    k = side * fill / max(obj.size)
    o = obj.resize((max(1, round(obj.width * k)), max(1, round(obj.height * k))), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (side, side), (*bg, 255))
    canvas.alpha_composite(o, ((side - o.width) // 2, (side - o.height) // 2))
    return canvas.convert("RGB")


def recolour(im: Image.Image, hue_shift: int) -> Image.Image:
    """The same picture in other colours (a red flag → a green flag): hue rotated, alpha kept."""
    alpha = im.getchannel("A") if im.mode == "RGBA" else None
    h, s, v = im.convert("RGB").convert("HSV").split()
    h = h.point(lambda x: (x + hue_shift) % 256)
    out = Image.merge("HSV", (h, s, v)).convert("RGBA")
    if alpha is not None:
        out.putalpha(alpha)
    return out


def _colourful(im: Image.Image) -> bool:
    hsv = np.asarray(im.convert("RGB").convert("HSV"))
    alpha = np.asarray(im.getchannel("A")) > 128 if im.mode == "RGBA" else np.ones(hsv.shape[:2], bool)
    return float(np.mean(hsv[..., 1][alpha] > 60)) > 0.1


def _terrain(z: np.ndarray, azimuth: float, cmap: str) -> Image.Image:
    from matplotlib import colormaps
    from matplotlib.colors import LightSource

    z = np.asarray(z, dtype=np.float64)
    rgb = LightSource(azdeg=azimuth, altdeg=40).shade(z, cmap=colormaps[cmap], blend_mode="soft", vert_exag=1.0)
    return Image.fromarray((rgb[..., :3] * 255).astype(np.uint8))


def _lowtex() -> dict[str, Image.Image]:
    """Smooth, low-contrast or dark pictures: what keypoints barely see."""
    pgd = _pkg("pygame") / "docs" / "generated" / "_images"
    mpl = _pkg("matplotlib") / "mpl-data" / "sample_data"
    mh = _pkg("mahotas") / "demos" / "data"
    sk = _pkg("skimage") / "data"
    gly = _pkg("glymur") / "data"
    dem = np.load(mpl / "jacksboro_fault_dem.npz")["elevation"]
    topo = np.load(mpl / "topobathy.npz")["topo"]
    with gzip.open(mpl / "s1045.ima.gz") as f:
        mri = np.frombuffer(f.read(), np.uint16).astype(np.float32).reshape(256, 256)
    mri_img = Image.fromarray((255 * mri / mri.max()).clip(0, 255).astype(np.uint8)).convert("RGB")
    nemo = _rgb(_rgba(gly / "nemo.jp2"))
    out = {
        "webcam_background": _rgb(_rgba(pgd / "camera_background.jpg")),
        "nuclei": _rgb(_rgba(mh / "nuclear.png")).crop((0, 0, 672, 1024)),
        "clock_blur": _rgb(_rgba(sk / "clock_motion.png")),
        "retina_detail": _at_least(_rgb(_rgba(sk / "microaneurysms.png")), 320),
        "dem_terrain": _terrain(dem, 315, "gist_earth"),
        "dem_dunes": _terrain(dem[::-1], 200, "copper"),
        "topo_smooth": _terrain(
            cv2.resize(topo.astype(np.float32), (600, 455), interpolation=cv2.INTER_CUBIC), 315, "terrain"
        ),
        "mri_slice": _at_least(mri_img, 400),
        "snow_defocused": nemo.crop((1296, 0, 2592, 1456)).resize((600, 674)).filter(ImageFilter.GaussianBlur(9)),
        "portrait_defocused": _rgb(_rgba(mh / "luispedro.jpg")).filter(ImageFilter.GaussianBlur(7)),
        "sky_gradient": _sky(),
    }
    return out


def _sky() -> Image.Image:
    """A dusk-sky gradient taken from a real photo's colours: nemo's sky rows stretched to a frame."""
    gly = _pkg("glymur") / "data"
    nemo = np.asarray(_rgb(_rgba(gly / "nemo.jp2")).resize((640, 360))).astype(np.float32)
    top = nemo[:40].mean(axis=(0, 1))
    bottom = nemo[200:240].mean(axis=(0, 1)) * np.array([1.1, 0.8, 0.6])
    t = np.linspace(0, 1, 360, dtype=np.float32)[:, None, None] ** 1.5
    img = top * (1 - t) + bottom * t + np.linspace(-12, 12, 640, dtype=np.float32)[None, :, None]
    return Image.fromarray(np.broadcast_to(img, (360, 640, 3)).clip(0, 255).astype(np.uint8))


def _photos() -> dict[str, Image.Image]:
    pg = _pkg("pygame") / "examples" / "data"
    pgd = _pkg("pygame") / "docs" / "generated" / "_images"
    mh = _pkg("mahotas") / "demos" / "data"
    gly = _pkg("glymur") / "data"
    return {
        "snowy_street": _rgb(_rgba(gly / "nemo.jp2")).crop((0, 0, 1296, 1456)),
        "beer": _rgb(_rgba(gly / "goodstuff.j2k")),
        "crowd_drawing": _rgb(_rgba(mh / "DepartmentStore.jpg")),
        "portrait": _rgb(_rgba(mh / "luispedro.jpg")),
        "wall_and_tree": _at_least(_rgb(_rgba(pgd / "camera_rgb.jpg")), 320),
        "game_blade": _at_least(_rgb(_rgba(pgd / "intro_blade.jpg")), 300),
        "game_freedom": _at_least(_rgb(_rgba(pgd / "intro_freedom.jpg")), 300),
        "game_tps": _rgb(_rgba(pgd / "introduction-TPS.png")),
        "game_puyo": _rgb(_rgba(pgd / "introduction-PuyoPuyo.png")),
        "game_battleship": _rgb(_rgba(pgd / "introduction-Battleship.png")),
        "liquid_banner": _at_least(_rgb(_rgba(pg / "liquid.bmp")), 300),
        "draw_shapes": _rgb(_rgba(pgd / "draw_module_example.png")),
    }


# --- textures -------------------------------------------------------------------------------------


def _tile(patch: Image.Image, size: int = 1400) -> Image.Image:
    out = Image.new("RGB", (size, size))
    for y in range(0, size, patch.height):
        for x in range(0, size, patch.width):
            out.paste(patch, (x, y))
    return out


def _textures() -> dict[str, Image.Image]:
    """Large stationary textures (≥ 1000 px), periodic ones tiled from real pictures."""
    pg = _pkg("pygame") / "examples" / "data"
    pgd = _pkg("pygame") / "docs" / "generated" / "_images"
    mh = _pkg("mahotas") / "demos" / "data"
    gly = _pkg("glymur") / "data"
    sk = _pkg("skimage") / "data"
    crowd = _rgb(_rgba(mh / "DepartmentStore.jpg"))
    nemo = _rgb(_rgba(gly / "nemo.jp2"))
    wall = _rgb(_rgba(pgd / "camera_rgb.jpg"))
    keys = _rgb(_rgba(pg / "midikeys.png"))
    beer = _rgb(_rgba(gly / "goodstuff.j2k"))
    portrait = _rgb(_rgba(mh / "luispedro.jpg"))
    sun = _rgb(_rgba(gly / "heliov.jpx"))
    dem = np.load(_pkg("matplotlib") / "mpl-data" / "sample_data" / "jacksboro_fault_dem.npz")["elevation"]
    return {
        "tiled_chessboard": _tile(_rgb(_rgba(sk / "chessboard_RGB.png")).crop((0, 0, 50, 50)).resize((36, 36))),
        "tiled_piano": _tile(keys.crop((100, 0, 232, 160)).resize((99, 120))),
        "tiled_bricks": _tile(_rgb(_rgba(pg / "brick.png")).resize((180, 52))),
        "tiled_wallbricks": _tile(wall.crop((8, 40, 72, 104))),
        "tiled_crowd": _tile(crowd.crop((300, 300, 364, 364))),
        "tiled_branches": _tile(nemo.crop((900, 200, 990, 290))),
        "tiled_foam": _tile(beer.crop((150, 90, 230, 150))),
        "tiled_jacket": _tile(portrait.crop((20, 300, 76, 356)).transpose(Image.Transpose.ROTATE_90)),
        "nuclei_field": _rgb(_rgba(mh / "nuclear.png")).crop((672, 0, 1344, 1024)),
        "tiled_sunspots": _tile(sun.crop((300, 420, 380, 500))),
        "tiled_terrain": _tile(_terrain(dem, 135, "terrain").crop((100, 100, 196, 196))),
        "tiled_puyo": _tile(_rgb(_rgba(pgd / "introduction-PuyoPuyo.png")).crop((40, 40, 112, 112))),
        "tiled_tree": _tile(wall.crop((200, 20, 270, 90))),
    }


def texture_patch(tex: Image.Image, where: tuple[float, float], side: int, scale: float) -> Image.Image:
    """A `side` x `side` photo of the texture at `scale` (1.5: photographed 1.5x closer), its
    centre at `where` (fractions of the texture)."""
    src = side / scale
    # the centre moved inwards as far as needed for the patch to fit
    cx = min(max(where[0] * tex.width, src / 2), tex.width - src / 2)
    cy = min(max(where[1] * tex.height, src / 2), tex.height - src / 2)
    box = (cx - src / 2, cy - src / 2, cx + src / 2, cy + src / 2)
    return tex.resize((side, side), Image.Resampling.BICUBIC, box=box)


# --- natural pairs --------------------------------------------------------------------------------


def in_scene(
    obj: Image.Image,
    scene: Image.Image,
    rng: np.random.Generator,
    scale: float = 0.45,
    angle: float = 8.0,
    sparse: bool = False,
) -> Image.Image:
    """`obj` (RGBA) photographed again in a cluttered scene: smaller, turned, warmer light, other
    background all around. At a random place, or (`sparse`) where the scene has the fewest of its
    own keypoints (sparse_spot)."""
    sw, sh = 640, 480
    bg = scene.convert("RGB").resize((sw, sh))
    k = sw * scale / max(obj.size)
    o = obj.resize((max(1, round(obj.width * k)), max(1, round(obj.height * k))), Image.Resampling.LANCZOS)
    o = o.rotate(float(rng.uniform(-angle, angle)), Image.Resampling.BICUBIC, expand=True)
    r, g, b, a = o.split()
    o = Image.merge("RGBA", (r.point(lambda x: min(255, int(x * 1.08))), g, b.point(lambda x: int(x * 0.9)), a))
    if sparse:
        x, y = sparse_spot(bg, o.size, rng)
    else:
        x = int(rng.integers(0, max(1, sw - o.width)))
        y = int(rng.integers(0, max(1, sh - o.height)))
    canvas = bg.convert("RGBA")
    canvas.alpha_composite(o, (x, y))
    return canvas.convert("RGB")


def sparse_spot(scene: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    """Where an object of `size` px hides the fewest of the scene's own keypoints (ORB, 512, as a
    stored picture has them): one of the 5 best of a 16 px grid of places, at random. A picture
    matched behind the object then has next to none of its points there to miss (the held part's
    danger sign on wall_and_tree is such a case); tuning needs its own cases of that shape."""
    grey = cv2.cvtColor(np.asarray(scene.convert("RGB")), cv2.COLOR_RGB2GRAY)
    kps = cv2.ORB_create(nfeatures=512).detect(grey, None)
    counts = np.zeros((grey.shape[0] + 1, grey.shape[1] + 1), np.float64)
    for kp in kps:
        x, y = kp.pt
        counts[int(y) + 1, int(x) + 1] += 1.0
    sums = counts.cumsum(axis=0).cumsum(axis=1)  # summed-area table
    w, h = size
    places = []
    for y in range(0, max(1, grey.shape[0] - h + 1), 16):
        for x in range(0, max(1, grey.shape[1] - w + 1), 16):
            y1, x1 = min(y + h, grey.shape[0]), min(x + w, grey.shape[1])
            places.append((sums[y1, x1] - sums[y, x1] - sums[y1, x] + sums[y, x], y, x))
    places.sort()
    _, y, x = places[int(rng.integers(0, min(5, len(places))))]
    return x, y


def _more_cutouts() -> dict[str, Image.Image]:
    """More objects for the tuning part's extra natural pairs (tune_pairs): sprites, logos with text, a
    smooth silhouette, and rectangular crops of photos (a box or a print photographed as a product).
    None of them is, or is cut from, a picture of the held part."""
    pg, sk = _pkg("pygame") / "examples" / "data", _pkg("skimage") / "data"
    coffee, astronaut = _rgba(sk / "coffee.png"), _rgba(sk / "astronaut.png")
    chelsea, rocket = _rgba(sk / "chelsea.png"), _rgba(sk / "rocket.jpg")
    out = {
        "player1": _rgba(pg / "player1.gif"),
        "explosion": _rgba(pg / "explosion1.gif"),
        "skimage_logo": _key(_rgba(sk / "logo.png"), lambda c: c.min(axis=-1) > 235),
        "horse": _key(_rgba(sk / "horse.png"), lambda c: c.min(axis=-1) > 128),
        "coffee_box": coffee.crop((150, 20, 480, 330)),
        "astronaut_box": astronaut.crop((140, 20, 400, 300)),
        "cat_box": chelsea.crop((60, 10, 330, 270)),
        "rocket_box": rocket.crop((200, 0, 420, 427)),
        "camera_box": _rgba(sk / "camera.png").crop((100, 40, 400, 400)),
        "page_box": _rgba(sk / "page.png").crop((0, 0, 300, 191)),
    }
    return {n: _trim(im) for n, im in out.items()}


def _more_scenes() -> dict[str, Image.Image]:
    """Cluttered scenes that are in no library of the extra pairs (the library's own photos are the
    other kind of scene: an object in front of a library picture)."""
    sk, sl = _pkg("skimage") / "data", _pkg("sklearn") / "datasets" / "images"
    return {
        "china": _rgb(_rgba(sl / "china.jpg")),
        "flower": _rgb(_rgba(sl / "flower.jpg")),
        "motorcycle": _rgb(_rgba(sk / "motorcycle_left.png")),
        "hubble": _rgb(_rgba(sk / "hubble_deep_field.jpg")),
    }


def tune_pairs(h: HeldOut, rounds: int = 6, seed: int = 41) -> list[list[Pair]]:
    """Extra natural pairs for tuning only (the tuning part is 5 objects): the tuning part's objects
    and _more_cutouts(), each pasted into a scene at another size and angle per round. Scenes
    alternate between the part's own photos (in the library: the object is in front of a library
    picture) and _more_scenes() (not in it). Pair names: "<object>@<round>~alone->scene" or
    "~scene->alone". One list of pairs per round (a round's stored views share one library)."""
    assert all(h.part[n] == TUNE for n in h.photos), "tune_pairs() is for the tuning part only"
    rng = np.random.default_rng(seed)
    objs = {**{n: o for n, o in _cutouts().items() if h.part[n] == TUNE}, **_more_cutouts()}
    library_scenes, other_scenes = sorted(h.photos.items()), sorted(_more_scenes().items())
    sizes, angles = (0.45, 0.35, 0.6, 0.3), (8.0, 15.0, 4.0, 20.0)
    out = []
    for r in range(rounds):
        pairs = []
        for i, (n, o) in enumerate(sorted(objs.items())):
            scenes = library_scenes if (i + r) % 2 == 0 else other_scenes
            scene = scenes[(i + 3 * r) % len(scenes)][1]
            q = in_scene(o, scene, rng, scale=sizes[(i + r) % len(sizes)], angle=angles[r % len(angles)])
            pairs.append(Pair(f"{n}@{r}~alone->scene", on_plain(o), q))
            pairs.append(Pair(f"{n}@{r}~scene->alone", q, on_plain(o, fill=0.6)))
        out.append(pairs)
    return out


def sparse_pairs(h: HeldOut, rounds: int = 3, seed: int = 43) -> list[list[Pair]]:
    """More extra pairs for tuning only, of one shape: the objects of tune_pairs() in front of the part's
    own library photos, each placed where that photo has the fewest of its own keypoints
    (sparse_spot): the picture behind has almost no points there, so what hides it cannot be seen
    from points it misses. Names as in tune_pairs(), with "sparse" before the round."""
    assert all(h.part[n] == TUNE for n in h.photos), "sparse_pairs() is for the tuning part only"
    rng = np.random.default_rng(seed)
    objs = {**{n: o for n, o in _cutouts().items() if h.part[n] == TUNE}, **_more_cutouts()}
    scenes = sorted(h.photos.items())
    sizes, angles = (0.45, 0.3, 0.6), (6.0, 12.0, 3.0)
    out = []
    for r in range(rounds):
        pairs = []
        for i, (n, o) in enumerate(sorted(objs.items())):
            scene = scenes[(i + 2 * r) % len(scenes)][1]
            q = in_scene(o, scene, rng, scale=sizes[(i + r) % len(sizes)], angle=angles[r % len(angles)], sparse=True)
            pairs.append(Pair(f"{n}@sparse{r}~alone->scene", on_plain(o), q))
            pairs.append(Pair(f"{n}@sparse{r}~scene->alone", q, on_plain(o, fill=0.6)))
        out.append(pairs)
    return out


def plain_gradients(h: HeldOut, seed: int, n: int = 16) -> dict[str, Image.Image]:
    """Smooth colour gradients for tuning only (same_hq's plain pictures): vertical, slanted and radial,
    in colours drawn from the part's own photos (a pair too alike in colour is made complementary),
    a slight horizontal shading on each; four frame sizes. Their pHash is mostly noise bits, and two
    of them in related colours are lookalikes that only colour and light tell apart."""
    assert all(h.part[name] == TUNE for name in h.photos), "plain_gradients() is for the tuning part only"
    rng = np.random.default_rng(seed)
    cols = np.concatenate(
        [np.asarray(p.convert("RGB").resize((32, 32))).reshape(-1, 3) for _, p in sorted(h.photos.items())]
    ).astype(np.float32)
    out = {}
    for k in range(n):
        w, hh = ((640, 360), (600, 450), (500, 500), (720, 400))[k % 4]
        a, b = cols[rng.integers(len(cols))], cols[rng.integers(len(cols))]
        if np.abs(a - b).sum() < 80:
            b = 255 - a
        yy, xx = np.mgrid[0:hh, 0:w].astype(np.float32)
        if k % 3 == 0:
            t = (yy / hh) ** rng.uniform(0.7, 2.0)
        elif k % 3 == 1:
            angle = rng.uniform(0, np.pi)
            t = np.cos(angle) * xx / w + np.sin(angle) * yy / hh
            t = (t - t.min()) / (t.max() - t.min())
        else:
            cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * hh
            t = np.hypot(xx - cx, yy - cy)
            t = (t / t.max()) ** rng.uniform(0.6, 1.5)
        img = a * (1 - t[..., None]) + b * t[..., None] + rng.uniform(-12, 12) * (xx / w - 0.5)[..., None]
        out[f"gradient{k:02d}"] = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    return out


@dataclass(frozen=True)
class Pair:
    name: str
    stored: Image.Image
    query: Image.Image


# --- the set --------------------------------------------------------------------------------------


@dataclass
class HeldOut:
    objects: dict[str, Image.Image]  # object on a plain background (library pictures)
    lookalikes: dict[str, Image.Image]  # "obj~what": other pictures resembling obj (outside queries)
    lowtex: dict[str, Image.Image]
    photos: dict[str, Image.Image]
    textures: dict[str, Image.Image]
    pairs: list[Pair]
    part: dict[str, str]  # picture / texture / pair name → TUNE or HELD

    def of(self, part: str) -> HeldOut:
        """The subset of one part. A lookalike follows its object; a pair follows its object."""

        def keep(name: str) -> bool:
            return self.part[name.split("~")[0]] == part

        return HeldOut(
            {n: v for n, v in self.objects.items() if keep(n)},
            {n: v for n, v in self.lookalikes.items() if keep(n)},
            {n: v for n, v in self.lowtex.items() if keep(n)},
            {n: v for n, v in self.photos.items() if keep(n)},
            {n: v for n, v in self.textures.items() if keep(n)},
            [p for p in self.pairs if keep(p.name)],
            self.part,
        )


def _split(names: list[str]) -> dict[str, str]:
    return {n: (TUNE if i % 2 == 0 else HELD) for i, n in enumerate(sorted(names))}


def build(seed: int = 14) -> HeldOut:
    rng = np.random.default_rng(seed)
    cut = _cutouts()
    objects = {n: on_plain(o) for n, o in cut.items()}
    look: dict[str, Image.Image] = {}
    for n, o in cut.items():
        if not _colourful(o):
            continue  # recolouring a black-and-white picture leaves the same picture
        look[f"{n}~hue120"] = on_plain(recolour(o, 85))
        look[f"{n}~hue240"] = on_plain(recolour(o, 170))
        look[f"{n}~on_grey"] = on_plain(recolour(o, 40), bg=(235, 235, 235), fill=0.6)
    for n, o in _siblings().items():
        look[n] = on_plain(o)
    lowtex, ph, tex = _lowtex(), _photos(), _textures()
    scenes = [ph["crowd_drawing"], ph["snowy_street"], ph["game_tps"], ph["wall_and_tree"]]
    pairs = []
    for i, (n, o) in enumerate(sorted(cut.items())):
        scene = in_scene(o, scenes[i % len(scenes)], rng)
        pairs.append(Pair(f"{n}~alone->scene", on_plain(o), scene))
        pairs.append(Pair(f"{n}~scene->alone", scene, on_plain(o, fill=0.6)))
    pgd = _pkg("pygame") / "docs" / "generated" / "_images"
    pairs.append(Pair("pygame_logo~lofi", objects["pygame_logo"], on_plain(_trim(_rgba(pgd / "pygame_lofi.png")))))
    part = {**_split(list(cut)), **_split(list(lowtex)), **_split(list(ph)), **_split(list(tex))}
    return HeldOut(objects, look, lowtex, ph, tex, pairs, part)


def encode(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sheet", type=Path, help="draw a contact sheet of the set to this PNG")
    args = ap.parse_args(argv)
    h = build()
    groups = {
        "object": h.objects,
        "lookalike": h.lookalikes,
        "lowtex": h.lowtex,
        "photo": h.photos,
        "texture": h.textures,
        "pair": {p.name: p.query for p in h.pairs},
    }
    for g, items in groups.items():
        for n, im in items.items():
            print(f"{g:10} {h.part[n.split('~')[0]]:5} {n:28} {im.width}x{im.height}")
    if args.sheet:
        from PIL import ImageDraw

        tiles = [(f"{g}:{n}"[:30], im) for g, items in groups.items() for n, im in items.items()]
        cols = 10
        sheet = Image.new("RGB", (cols * 160, -(-len(tiles) // cols) * 172), "grey")
        draw = ImageDraw.Draw(sheet)
        for i, (n, im) in enumerate(tiles):
            t = ImageOps.contain(im, (156, 156))
            x, y = (i % cols) * 160, (i // cols) * 172
            sheet.paste(t, (x, y))
            draw.text((x, y + 158), n, fill="yellow")
        sheet.save(args.sheet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
