"""The hard cases of issue #14, on the tuning part of the held-out set (benchmarks/heldout.py; the
"held" part is kept for the benchmark's figures): 'the same' means the same picture, plain pictures
are still found, fabrics match across scale, an object is found again in a cluttered scene."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence

import cv2
import numpy as np
import pytest
from PIL import Image

from benchmarks.bench_match_heldout import _outside_encodings, fit
from benchmarks.heldout import (
    TUNE,
    HeldOut,
    Pair,
    _cutouts,
    build,
    encode,
    in_scene,
    on_plain,
    plain_gradients,
    recolour,
    sparse_pairs,
    texture_patch,
    tune_pairs,
)
from benchmarks.photos import photos
from benchmarks.variants import PHONE_PHOTO, SAME_IMAGE, contain
from imgsync.libraries import get_library
from imgsync.localgallery.engine import Engine
from imgsync.localgallery.images import load_image
from imgsync.localgallery.matchers import appearance as A
from imgsync.localgallery.matchers import features as F
from imgsync.localgallery.matchers import foreground as FG
from imgsync.localgallery.matchers import global_descriptors as G
from imgsync.localgallery.matchers import keypoints as K
from imgsync.localgallery.matchers import local as L
from imgsync.localgallery.matchers import page as P
from imgsync.localgallery.matchers import regions as R


@pytest.fixture(scope="module")
def tune() -> HeldOut:
    return build().of(TUNE)


def _big(img: Image.Image, side: int = 300) -> Image.Image:
    k = side / min(img.size)
    return img if k <= 1 else img.resize((round(img.width * k), round(img.height * k)), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def same_hq(tune: HeldOut, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    e = Engine(tmp_path_factory.mktemp("samehq-heldout"))
    for name, im in {**tune.objects, **tune.lowtex}.items():
        e.add("same_hq", encode(im, 95), brief=name)
    yield e
    e.close()


def test_a_recoloured_or_sibling_object_is_not_the_same_picture(same_hq: Engine, tune: HeldOut) -> None:
    """A red flag is not a green flag: every lookalike of a stored clip-art object (hue-rotated,
    recoloured on grey, a sibling sprite) scores below 0.9, most not at all."""
    assert len(tune.lookalikes) >= 10
    for name, im in tune.lookalikes.items():
        results, _ = same_hq.search("same_hq", encode(im))
        assert all(score < 0.9 for _, score, _ in results), (name, results[:3])


def test_true_edits_of_plain_background_objects_stay_the_same(same_hq: Engine, tune: HeldOut) -> None:
    rng = np.random.default_rng(3)
    for edit in ("jpeg q30", "brightness x1.3", "crop 10%", "mirror", "watermark text"):
        for name, im in tune.objects.items():
            results, _ = same_hq.search("same_hq", SAME_IMAGE[edit](im, rng))
            assert results and results[0][2] == name and results[0][1] >= 0.9, (edit, name, results[:3])


@pytest.mark.parametrize("name", ["nuclei", "clock_blur", "retina_detail", "snow_defocused"])
def test_a_low_texture_picture_pasted_into_a_larger_image_is_found(same_hq: Engine, tune: HeldOut, name: str) -> None:
    im = tune.lowtex[name]
    for seed in (1, 2):
        results, _ = same_hq.search("same_hq", SAME_IMAGE["contained in larger"](im, np.random.default_rng(seed)))
        assert results and results[0][2] == name and results[0][1] >= 0.9, (name, seed, results[:3])


@pytest.fixture(scope="module")
def gradients(tune: HeldOut) -> dict[str, Image.Image]:
    return plain_gradients(tune, 14)


@pytest.fixture(scope="module")
def same_hq_gradients(gradients: dict[str, Image.Image], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The first 8 gradients stored; the other 8 are outside queries."""
    e = Engine(tmp_path_factory.mktemp("samehq-gradients"))
    for name in sorted(gradients)[:8]:
        e.add("same_hq", encode(gradients[name], 95), brief=name)
    yield e
    e.close()


def _hash_distance(stored: bytes, query: bytes) -> int:
    """The hash stage's distance: the fewest pHash bits apart over the crop pairs."""
    same = get_library("same_hq")
    s, q = (F.same_image_descriptors(load_image(b, same).pixels)[0] for b in (stored, query))
    return min(int(np.bitwise_count(s[b] ^ q[a])) for a, b in F.CROP_PAIRS)


@pytest.mark.parametrize(
    ("name", "edit"), [("gradient01", "brightness x1.3"), ("gradient03", "jpeg q30"), ("gradient07", "contrast x0.7")]
)
def test_a_plain_picture_whose_copy_lands_beyond_the_hash_bit_limit_is_found(
    same_hq_gradients: Engine, gradients: dict[str, Image.Image], name: str, edit: str
) -> None:
    """A gradient's pHash is mostly noise bits: its own copy can land 24-28 bits away, beyond the hash
    stage's limit, and it has no keypoints. Its fine descriptor and its look still find it."""
    data = SAME_IMAGE[edit](gradients[name], np.random.default_rng(0))
    assert _hash_distance(encode(gradients[name], 95), data) > G.MAX_BITS  # the case this test is about
    results, _ = same_hq_gradients.search("same_hq", data)
    assert results and results[0][2] == name and results[0][1] >= 0.9, results[:3]


def test_another_gradient_is_not_the_same_picture(same_hq_gradients: Engine, gradients: dict[str, Image.Image]) -> None:
    """Gradients in related colours and layouts: the fine descriptor alone would call several of them
    the same (12 of these 32 queries scored ≥ 0.9 before the colour, light and layout checks)."""
    for name in sorted(gradients)[8:]:
        for data in _outside_encodings([gradients[name]], "same_hq"):
            results, _ = same_hq_gradients.search("same_hq", data)
            assert all(score < 0.9 for _, score, _ in results), (name, results[:3])


def test_a_coloured_picture_with_a_grey_pictures_layout_is_another_picture(
    gradients: dict[str, Image.Image], tmp_path: object
) -> None:
    """The grey-level stages see one picture; the colour check has no colour of the stored picture to
    compare: a grey stored picture explains none, so a coloured query is another picture."""
    grey = gradients["gradient00"].convert("L").convert("RGB")
    e = Engine(tmp_path)  # type: ignore[arg-type]
    try:
        e.add("same_hq", encode(grey, 95), brief="grey")
        results, _ = e.search("same_hq", encode(grey, 60))
        assert results and results[0][2] == "grey" and results[0][1] >= 0.9, results  # its own copy
        luma = np.asarray(grey.convert("L"))
        green = np.stack([luma, np.full_like(luma, 100), np.full_like(luma, 96)], axis=-1)  # same Y, Cb/Cr green
        results, _ = e.search("same_hq", encode(Image.fromarray(green, "YCbCr").convert("RGB")))
        assert all(score < 0.6 for _, score, _ in results), results
    finally:
        e.close()


def test_a_picture_lit_over_twice_as_bright_is_related_not_the_same(tune: HeldOut, tmp_path: object) -> None:
    photo = _big(tune.photos["beer"])
    dark = photo.point(lambda v: int(v * 0.35))
    e = Engine(tmp_path)  # type: ignore[arg-type]
    try:
        e.add("same_hq", encode(dark, 95), brief="dark")
        results, _ = e.search("same_hq", encode(dark.point(lambda v: min(255, int(v * 1.3)))))
        assert results and results[0][2] == "dark" and results[0][1] >= 0.9, results  # brightness x1.3
        results, _ = e.search("same_hq", encode(photo))
        assert results and results[0][2] == "dark" and 0.6 <= results[0][1] < 0.9, results
    finally:
        e.close()


@pytest.fixture(scope="module")
def same_hq_crowd(tune: HeldOut, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """same_hq as the benchmark fills it: the objects and low-texture pictures among the 20
    calibration photos, whose votes compete with theirs."""
    e = Engine(tmp_path_factory.mktemp("samehq-crowd"))
    for name, im in {**photos(), **tune.objects, **tune.lowtex}.items():
        e.add("same_hq", encode(im, 95), brief=name)
    yield e
    e.close()


@pytest.mark.parametrize(("name", "seed"), [("dem_terrain", 15), ("dem_terrain", 28), ("webcam_background", 23)])
def test_a_picture_pasted_into_a_larger_image_and_shrunk_with_it_is_found(
    same_hq_crowd: Engine, tune: HeldOut, name: str, seed: int
) -> None:
    """The loader shrinks the larger image to a shortest side of 256 px, so the pasted picture
    arrives at about half its size. The detailed terrain rendering was verified with ~80 inliers
    when tried, but its fine points are gone at that size and it ranked below the vote shortlist:
    the coarse vote descriptors bring it in (keypoints.scale_spread_subset). Both it and the plain
    webcam picture are also found by their outline now (adjacent edge rows merged into one line,
    four-sided proposals first): before, the proposals were 23-40 px off."""
    im = tune.lowtex[name]
    query = encode(contain(im, np.random.default_rng(seed)), 90)
    results, _ = same_hq_crowd.search("same_hq", query)
    assert results and results[0][2] == name and results[0][1] >= 0.9, results[:3]


def _loaded_paste(picture: Image.Image, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`picture` pasted into a busy frame (variants.contain), decoded as the gallery decodes a
    query (JPEG draft mode, 512 px working size), and the picture's true corners in it."""
    frame = contain(picture, np.random.default_rng(seed))
    # contain() draws the background first, then the paste position, from the same generator
    black = np.all(np.asarray(contain(Image.new("RGB", picture.size), np.random.default_rng(seed))) == 0, axis=2)
    ys, xs = np.nonzero(black)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    pixels = load_image(encode(frame, 90), get_library("same_hq")).pixels
    k = pixels.width / frame.width
    true = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32) * k
    return np.asarray(pixels), true


@pytest.mark.parametrize(
    ("name", "seed"), [("retina_detail", 2), ("retina_detail", 10), ("snow_defocused", 4), ("snow_defocused", 11)]
)
def test_the_outline_of_a_pasted_picture_is_proposed_despite_edges_inside_it_and_boxes_beside_it(
    tune: HeldOut, name: str, seed: int
) -> None:
    """A straight dark vein across the retina, a post in the snow photo, a box touching the pasted
    picture: with each step's 3-5 adjacent rows of edge pixels taking a slot of their own among the
    10 longest, the picture's own sides were crowded out and the proposals were 20-110 px off."""
    rgb, true = _loaded_paste(tune.lowtex[name], seed)
    found = R.quads(rgb)
    assert any(np.abs(q - true).max() <= 3.0 for q in found), (found, true)


def test_adjacent_edge_rows_are_one_line() -> None:
    mask = np.zeros((60, 100), np.uint8)
    mask[10:13, 5:95] = 1  # one step, three rows thick after dilation
    mask[40, 20:80] = 1
    lines = R._runs(mask, 20, keep=10)
    assert [(y, x1 - x0) for y, x0, x1 in lines] == [(10, 90), (40, 60)], lines


def test_a_rectangle_crossed_by_a_line_ranks_after_the_pictures_beside_it() -> None:
    """Two plain pictures stacked one on the other: the box around both has four edged sides too,
    but the line between them crosses it."""
    img = np.full((240, 320, 3), 128, np.uint8)
    img[40:120, 60:260] = (200, 40, 40)
    img[120:200, 60:260] = (40, 40, 200)
    props = R.upright_rectangles(img)
    both = [p for p in props if np.abs(p.quad - R._box((60, 40, 260, 200))).max() <= 3]
    assert both and all(p.crossed for p in both), props
    first = [p for p in props if not p.crossed][:2]
    assert len(first) == 2 and all(p.four_sided for p in first), props


def test_coarse_votes_take_half_their_points_from_coarse_pyramid_levels(tune: HeldOut) -> None:
    gray = np.asarray(tune.lowtex["dem_terrain"].convert("L"))
    kps = K.orb_keypoints(gray, 400)
    assert kps.octave is not None
    assert np.sum(kps.octave[K.spread_subset(kps, 32)] >= K.COARSE_OCTAVE) < 8  # a detailed picture: fine points
    sel = K.scale_spread_subset(kps, 32)
    assert len(sel) == 32 and len(set(sel.tolist())) == 32
    assert np.sum(kps.octave[sel] >= K.COARSE_OCTAVE) >= 16
    plain = K.Keypoints.from_bytes(kps.to_bytes())  # stored points carry no levels: the plain spread subset
    assert plain.octave is None and np.array_equal(K.scale_spread_subset(plain, 32), K.spread_subset(plain, 32))


def test_a_phone_photo_of_a_low_texture_page_finds_it(tune: HeldOut, tmp_path: object) -> None:
    e = Engine(tmp_path)  # type: ignore[arg-type]
    try:
        pages = {n: _big(im, 320) for n, im in {**tune.lowtex, **tune.photos}.items()}
        for name, im in pages.items():
            e.add("picturebook", encode(im, 95), brief=name)
        rng = np.random.default_rng(4)
        for name in ("nuclei", "clock_blur", "retina_detail", "dem_terrain"):
            results, _ = e.search("picturebook", PHONE_PHOTO["phone photo"](pages[name], rng))
            assert results and results[0][2] == name, (name, results[:3])
    finally:
        e.close()


def test_a_phone_photo_of_a_near_uniform_page_on_a_striped_table_finds_it(tune: HeldOut, tmp_path: object) -> None:
    """A near-uniform page (the webcam background) on a striped table: no keypoints, and its outline
    merges with the stripes, so no edge quadrilateral is found (these photos came back with no hit);
    the page told from the table by colour (page.py) is found top-1, and lit evenly by the table's
    light it is "the same" (>= 0.9)."""
    e = Engine(tmp_path)  # type: ignore[arg-type]
    try:
        pages = {n: _big(im, 320) for n, im in {**tune.lowtex, **tune.photos}.items()}
        for name, im in pages.items():
            e.add("picturebook", encode(im, 95), brief=name)
        for seed in (1004, 1005):
            shot = PHONE_PHOTO["phone photo"](pages["webcam_background"], np.random.default_rng(seed))
            results, _ = e.search("picturebook", shot)
            assert results and results[0][2] == "webcam_background", (seed, results[:3])
            # "the same": its hash is taken lit by the table's light, not the lamp's gradient
            assert results[0][1] >= 0.9, (seed, results[:3])
    finally:
        e.close()


def _gradient(a: tuple[int, int, int], b: tuple[int, int, int], angle: float) -> Image.Image:
    """A smooth page: a linear gradient from colour a to colour b at `angle` (radians)."""
    yy, xx = np.mgrid[0:360, 0:480] / 480
    t = np.cos(angle) * xx + np.sin(angle) * yy
    t = (t - t.min()) / (t.max() - t.min())
    rgb = (1 - t)[..., None] * np.array(a, np.float32) + t[..., None] * np.array(b, np.float32)
    return Image.fromarray(rgb.astype(np.uint8))


def test_a_phone_photo_of_a_gradient_page_beyond_the_hash_bit_limit_is_the_same(
    tune: HeldOut, tmp_path: object
) -> None:
    """A smooth gradient page: outlined against the table and lit by its light, its rectified page
    has a fine cosine ~0.99 with the stored page, but most of its pHash bits are noise and it lands
    beyond the hash stage's MAX_BITS of it (these photos came back with no hit); the page region also
    takes candidates by the fine cosine alone. The same layout in other colours is not "the same"."""
    e = Engine(tmp_path)  # type: ignore[arg-type]
    try:
        pages = {n: _big(im, 320) for n, im in {**tune.lowtex, **tune.photos}.items()}
        pages["dusk"] = _gradient((40, 60, 140), (230, 150, 90), 1.2)
        pages["sea"] = _gradient((20, 90, 110), (200, 230, 220), 0.3)
        for name, im in pages.items():
            e.add("picturebook", encode(im, 95), brief=name)
        for seed, name in ((0, "dusk"), (0, "sea"), (1, "sea")):
            shot = PHONE_PHOTO["phone photo"](pages[name], np.random.default_rng(seed))
            regions = L._regions(Image.open(io.BytesIO(shot)), snapped=False, page=True)
            assert int(regions["page"]) == 2, (seed, name)  # the page was found against the table
            stored = G._same_extract(pages[name])["phash"]
            bits = min(int(np.bitwise_count(regions["region_phash"][0][a] ^ stored[b])) for a, b in F.CROP_PAIRS)
            assert bits > G.MAX_BITS, (seed, name, bits)  # beyond the hash stage's reach
            results, _ = e.search("picturebook", shot)
            assert results and results[0][2] == name and results[0][1] >= 0.9, (seed, name, results[:3])
        # dusk's layout in sea's colours, and the other way round: other pictures
        for seed, other in (
            (0, _gradient((20, 90, 110), (200, 230, 220), 1.2)),
            (1, _gradient((40, 60, 140), (230, 150, 90), 0.3)),
        ):
            results, _ = e.search("picturebook", PHONE_PHOTO["phone photo"](other, np.random.default_rng(seed)))
            assert all(score < 0.9 for _, score, _ in results), (seed, results[:3])
    finally:
        e.close()


def _page_on_table(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A plain colour-gradient page lying on a table with stripes of nearly its own colours, lit
    unevenly (512 x 384), and the page's true corners."""
    rng = np.random.default_rng(seed)
    w, h = 512, 384
    stripes = np.repeat(rng.normal(0, 14, (1, w // 6 + 1)), 6, axis=1)[:, :w]
    table = np.clip(np.array([70.0, 90.0, 120.0]) + stripes[..., None], 0, 255) * np.ones((h, 1, 1))
    t = np.linspace(0, 1, 240)[:, None, None]
    page = (np.array([60.0, 110.0, 200.0]) * (1 - t) + np.array([200.0, 130.0, 90.0]) * t) * np.ones((1, 320, 1))
    true = np.array([[100, 70], [420, 60], [440, 320], [90, 310]], dtype=np.float32) + rng.uniform(-8, 8, (4, 2))
    true = true.astype(np.float32)
    m = cv2.getPerspectiveTransform(np.array([[0, 0], [320, 0], [320, 240], [0, 240]], np.float32), true)
    warped = cv2.warpPerspective(page.astype(np.float32), m, (w, h))
    inside = cv2.warpPerspective(np.ones((240, 320), np.float32), m, (w, h))[..., None]
    out = inside * warped + (1 - inside) * table
    out *= np.linspace(0.65, 1.1, w)[None, :, None]
    out = cv2.GaussianBlur(out, (0, 0), 1.0) + rng.normal(0, 4, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8), true


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_plain_page_is_outlined_by_its_colours_against_the_table(seed: int) -> None:
    """page.page_quad: the table predicted from the frame's border, the page is what differs; its
    corners, snapped, land within 3 px of the truth at the gallery's working size (the page's sides
    are 250-330 px long)."""
    rgb, true = _page_on_table(seed)
    q = P.page_quad(rgb)
    assert q is not None
    q = R.snap(rgb.astype(np.float32), q, tilt=True)
    assert np.abs(q - true).max() < 3.0, (q, true)


def test_a_busy_table_or_a_photo_without_a_page_gives_no_page() -> None:
    """Nothing stands out from a uniform table; a frame that is all picture (no table round it)
    predicts 'table' everywhere from its own border and finds no sheet either."""
    rgb, _ = _page_on_table(1)
    table_only = np.ascontiguousarray(np.broadcast_to(rgb[:30].mean(axis=0, keepdims=True), rgb.shape)).astype(np.uint8)
    assert P.page_quad(table_only) is None


def test_a_fabric_photographed_closer_or_farther_is_the_same_fabric(tune: HeldOut, tmp_path: object) -> None:
    e = Engine(tmp_path)  # type: ignore[arg-type]
    try:
        periodic = {n: t for n, t in tune.textures.items() if n.startswith("tiled_")}
        for name, t in periodic.items():
            e.add("materiel", encode(texture_patch(t, (0.27, 0.27), 320, 1.0)), brief=name)
        for name, t in periodic.items():
            for scale in (1.5, 1 / 1.5):
                results, _ = e.search("materiel", encode(texture_patch(t, (0.73, 0.73), 320, scale)))
                assert results and results[0][2] == name and results[0][1] >= 0.8, (name, scale, results[:3])
    finally:
        e.close()


@pytest.mark.parametrize("library", ["similar", "product"])
def test_an_object_alone_is_found_again_in_a_cluttered_scene(tune: HeldOut, tmp_path: object, library: str) -> None:
    e = Engine(tmp_path)  # type: ignore[arg-type]
    try:
        for name, im in {**tune.photos, **tune.lowtex}.items():
            e.add(library, encode(_big(im)), brief=name)
        cut = {p.name.split("~")[0]: p for p in tune.pairs if p.name.endswith("alone->scene")}
        for name in ("chimp", "pygame_logo"):
            e.add(library, encode(_big(cut[name].stored)), brief=name)
        for name in ("chimp", "pygame_logo"):
            results, _ = e.search(library, encode(_big(cut[name].query)))
            assert results and results[0][2] == name and results[0][1] >= 0.6, (library, name, results[:3])
    finally:
        e.close()


@pytest.mark.parametrize("library", ["similar", "product"])
def test_an_object_in_front_of_a_library_picture_comes_first(tune: HeldOut, tmp_path: object, library: str) -> None:
    """The scene's background is itself in the library: the picture behind matches most of the query
    (embedding and keypoints), but the object hides part of it, so the object ranks first."""
    e = Engine(tmp_path)  # type: ignore[arg-type]
    try:
        for name, im in {**tune.photos, **tune.lowtex}.items():
            e.add(library, encode(_big(im)), brief=name)
        cut = _cutouts()
        for name in ("chimp", "alien1"):
            e.add(library, encode(_big(on_plain(cut[name]))), brief=name)
        rng = np.random.default_rng(7)
        for name, behind in (("chimp", "draw_shapes"), ("alien1", "liquid_banner")):
            results, _ = e.search(library, encode(_big(in_scene(cut[name], tune.photos[behind], rng))))
            briefs = [b for _, _, b in results]
            assert briefs[:1] == [name] and behind in briefs, (library, name, results[:3])
    finally:
        e.close()


def test_a_detail_of_a_library_picture_does_not_push_the_picture_down(tune: HeldOut, tmp_path: object) -> None:
    """A crop of a stored picture stored as well is not "in front" of it: the picture's own inliers
    continue inside the crop, so a query of the whole picture still finds the whole picture first."""
    e = Engine(tmp_path)  # type: ignore[arg-type]
    try:
        photo = _big(tune.photos["snowy_street"], 512)
        w, h = photo.size
        e.add("product", encode(photo), brief="whole")
        e.add("product", encode(photo.crop((w // 4, h // 4, w * 3 // 4, h * 3 // 4)).resize((w, h))), brief="detail")
        query = photo.rotate(4, Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
        results, _ = e.search("product", encode(query))
        assert results and results[0][2] == "whole", results[:3]
    finally:
        e.close()


@pytest.fixture(scope="module")
def extra_pairs(tune: HeldOut) -> dict[str, Pair]:
    """The tuning part's extra natural pairs (heldout.tune_pairs), by name."""
    return {p.name: p for pairs in tune_pairs(tune) for p in pairs}


@pytest.fixture(scope="module")
def sparse_spots(tune: HeldOut) -> dict[str, Pair]:
    """The tuning part's objects over the sparsest part of a library photo (heldout.sparse_pairs), by name."""
    return {p.name: p for pairs in sparse_pairs(tune) for p in pairs}


def _assert_first(e: Engine, library: str, pairs: dict[str, Pair], names: Iterable[str]) -> None:
    """Each named pair's stored view (its brief is the pair's name) ranks first for its query."""
    for name in names:
        results, _ = e.search(library, encode(fit(pairs[name].query, library)))
        assert results and results[0][2] == name, (library, name, results[:3])


def _pairs_engine(tmp_path: object, library: str, tune: HeldOut, stored: dict[str, Image.Image]) -> Engine:
    """The part's photos and low-texture pictures as distractors, and `stored`, as the benchmark adds them."""
    e = Engine(tmp_path)  # type: ignore[arg-type]
    for name, im in {**tune.photos, **tune.lowtex, **stored}.items():
        e.add(library, encode(fit(im, library), 95), brief=name)
    return e


def _stored_first(tmp_path: object, library: str, tune: HeldOut, pairs: dict[str, Pair], names: Sequence[str]) -> None:
    """The named pairs' stored views among the part's distractors: each comes first for its query."""
    e = _pairs_engine(tmp_path, library, tune, {n: pairs[n].stored for n in names})
    try:
        _assert_first(e, library, pairs, names)
    finally:
        e.close()


@pytest.mark.parametrize("library", ["similar", "product"])
def test_a_scene_is_found_from_a_photo_of_its_object_alone(
    tune: HeldOut, extra_pairs: dict[str, Pair], tmp_path: object, library: str
) -> None:
    """The scene is stored, the object queried alone: the object has only its share of the scene's
    keypoints. With 256 per entry these had under 12 consistent matches (no hit at all)."""
    names = ("explosion@2~scene->alone", "pygame_logo@1~scene->alone")
    e = _pairs_engine(tmp_path, library, tune, {n: extra_pairs[n].stored for n in names})
    try:
        for name in names:
            results, _ = e.search(library, encode(fit(extra_pairs[name].query, library)))
            assert results and results[0][2] == name and results[0][1] >= 0.6, (library, name, results[:3])
    finally:
        e.close()


@pytest.mark.parametrize("library", ["similar", "product"])
def test_an_object_in_front_of_a_library_photo_comes_first_when_its_inliers_cluster(
    tune: HeldOut, extra_pairs: dict[str, Pair], tmp_path: object, library: str
) -> None:
    """Objects pasted into photos of the library (the scene behind matches most of the query): where
    the object is seen is its own outline projected, not the hull of its inliers (a logo's cluster
    on its lettering), the photo behind, seen in the object's plain margin, is not in front, and 15
    inliers (a smooth rocket) are enough to be in front."""
    names = (
        "skimage_logo@0~alone->scene",
        "player1@3~alone->scene",
        "chimp@2~alone->scene",
        "rocket_box@5~alone->scene",
    )
    _stored_first(tmp_path, library, tune, extra_pairs, names)


@pytest.mark.parametrize("library", ["similar", "product"])
def test_an_object_on_a_smooth_part_of_a_library_photo_comes_first(
    tune: HeldOut, extra_pairs: dict[str, Pair], tmp_path: object, library: str
) -> None:
    """A sprite pasted on a smooth part of a library photo: the photo has none of its own keypoints
    there, so its points predict nothing there, but the query shows the sprite's inliers there, which
    are not the photo's."""
    _stored_first(tmp_path, library, tune, extra_pairs, ["player1@1~alone->scene"])


@pytest.mark.parametrize("library", ["similar", "product"])
def test_an_object_over_a_sparse_part_of_a_library_photo_comes_first(
    tune: HeldOut, sparse_spots: dict[str, Pair], tmp_path: object, library: str
) -> None:
    """Objects pasted where a library photo has the fewest of its own keypoints (heldout.sparse_pairs):
    the photo has 4-5 of them under the object and no inlier there, while the object's 20-40 inliers
    lie there: what the query shows there is not the photo, which is no longer first."""
    _stored_first(tmp_path, library, tune, sparse_spots, ["chimp@sparse0~alone->scene", "alien1@sparse1~alone->scene"])


@pytest.mark.parametrize("library", ["similar", "product"])
def test_an_object_without_keypoints_over_a_sparse_part_comes_first_when_the_query_looks_like_it(
    tune: HeldOut, sparse_spots: dict[str, Pair], tmp_path: object, library: str
) -> None:
    """A cat photo and a rocket box over game_puyo where it has few keypoints: no keypoint match of
    their own, no hole in the photo's match, but the query as a whole looks more like them (embedding)
    than like the photo whose 116-133 inliers matched: they come first (similar._looks_in_front).
    The photo itself, queried turned, stays first (its embedding is the query's)."""
    names = ("cat_box@sparse0~alone->scene", "rocket_box@sparse1~alone->scene")
    e = _pairs_engine(tmp_path, library, tune, {n: sparse_spots[n].stored for n in names})
    try:
        _assert_first(e, library, sparse_spots, names)
        photo = tune.photos["game_puyo"].rotate(4, Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
        results, _ = e.search(library, encode(fit(photo, library)))
        assert results and results[0][2] == "game_puyo", (library, results[:3])
    finally:
        e.close()


def test_a_sparse_part_is_hidden_only_by_far_more_inliers_of_an_unlike_picture() -> None:
    """foreground.hides on a synthetic match: the picture behind (seen whole, identity transform) has
    512 points, 2 of them under the front's core and no inlier there; the front has its inliers there.
    Hidden when the front has SPARSE_OVER times the behind's points there and the two stored pictures
    are unlike each other (`apart`); not with fewer inliers there, nor for a detail of the picture."""
    rng = np.random.default_rng(1)
    box = (200.0, 150.0, 360.0, 270.0)
    xy = rng.uniform(0, [640, 480], size=(2000, 2)).astype(np.float32)
    outside_box = ~(
        (xy[:, 0] >= box[0] - 20) & (xy[:, 0] < box[2] + 20) & (xy[:, 1] >= box[1] - 20) & (xy[:, 1] < box[3] + 20)
    )
    own = np.concatenate([xy[outside_box][:510], np.array([[270, 200], [290, 220]], np.float32)])
    behind_kps = K.Keypoints(own, np.zeros((len(own), K.DESC_BYTES), np.uint8), (640, 480))
    inliers = own[:510:2]  # half of its points elsewhere, none under the front
    behind = K.Verification(len(inliers), len(own), np.eye(3), 1.0, inliers)
    frame = np.array([[0, 0], [640, 0], [640, 480], [0, 480]], np.float32)
    front_poly = np.array([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]], np.float32)

    def front(n: int) -> K.Verification:
        pts = rng.uniform([box[0] + 30, box[1] + 25], [box[2] - 30, box[3] - 25], size=(n, 2)).astype(np.float32)
        return K.Verification(n, n, np.eye(3), 1.0, pts)

    many = front(max(FG.MIN_FRONT_INLIERS, int(FG.SPARSE_OVER * 2)))
    assert FG.hides(many, front_poly, behind, frame, (640, 480), behind_kps, apart=True)
    assert not FG.hides(many, front_poly, behind, frame, (640, 480), behind_kps, apart=False)
    # just under SPARSE_OVER x 2 inliers there, the rest of the front's inliers far from it
    there, far = front(int(FG.SPARSE_OVER * 2) - 1).points, own[: FG.MIN_FRONT_INLIERS]
    few = K.Verification(len(there) + len(far), len(there) + len(far), np.eye(3), 1.0, np.concatenate([there, far]))
    assert not FG.hides(few, front_poly, behind, frame, (640, 480), behind_kps, apart=True)


@pytest.mark.parametrize("library", ["similar", "product"])
def test_an_object_without_keypoints_in_front_of_a_library_photo_is_found_by_the_hole_it_leaves(
    tune: HeldOut, extra_pairs: dict[str, Pair], tmp_path: object, library: str
) -> None:
    """A fist (smooth skin: no keypoint match at all, its embedding far below the photo's) held in
    front of a library banner: the banner, matched with ~100 inliers, has none where the fist hides
    it; the query's crop there is nearest the fist, which comes first. The object queried alone with
    its scene stored is not such a case: the scene's points around the object fall on the query's
    plain margin, where the query shows nothing, and the scene stays first."""
    fist, alone = "fist@3~alone->scene", "page_box@4~scene->alone"
    e = _pairs_engine(tmp_path / "front", library, tune, {fist: extra_pairs[fist].stored})  # type: ignore[operator]
    try:
        for name in (fist, "fist@5~alone->scene"):  # (the same stored fist; another place and size)
            results, _ = e.search(library, encode(fit(extra_pairs[name].query, library)))
            briefs = [b for _, _, b in results]
            assert briefs[:1] == [fist] and "liquid_banner" in briefs, (library, name, results[:3])
    finally:
        e.close()
    e = _pairs_engine(tmp_path / "alone", library, tune, {alone: extra_pairs[alone].stored})  # type: ignore[operator]
    try:
        results, _ = e.search(library, encode(fit(extra_pairs[alone].query, library)))
        assert results and results[0][2] == alone, (library, results[:3])
    finally:
        e.close()


@pytest.mark.parametrize("library", ["similar", "product"])
def test_a_detail_stored_beside_its_picture_is_not_in_front_of_it(
    tune: HeldOut, tmp_path: object, library: str
) -> None:
    """draw_shapes turned 4°: the photo's match has a hole (its fine lines there lost their inliers),
    and the crop over it is nearest the photo's own central quarter, stored as an entry of its own.
    That detail resembles the photo (their embeddings are close): it is not an object in front, and
    the photo stays first."""
    photo = tune.photos["draw_shapes"]
    w, h = photo.size
    detail = photo.crop((w // 4, h // 4, w * 3 // 4, h * 3 // 4))
    e = _pairs_engine(tmp_path, library, tune, {"draw_shapes#detail": detail})
    try:
        results, _ = e.search(
            library, encode(fit(photo.rotate(4, Image.Resampling.BICUBIC, fillcolor=(128, 128, 128)), library))
        )
        assert results and results[0][2] == "draw_shapes", (library, results[:3])
    finally:
        e.close()


def test_hidden_finds_where_a_matched_picture_lacks_its_inliers() -> None:
    """foreground.hidden on a synthetic match: a picture seen whole (identity transform) whose
    inliers are all its points but those in one block; the block's core comes back, nothing else."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [640, 480], size=(512, 2)).astype(np.float32)
    stored = K.Keypoints(xy, np.zeros((512, K.DESC_BYTES), np.uint8), (640, 480))
    block = (xy[:, 0] >= 200) & (xy[:, 0] < 360) & (xy[:, 1] >= 120) & (xy[:, 1] < 300)
    v = K.Verification(int((~block).sum()), 512, np.eye(3), 1.0, xy[~block])
    holes = FG.hidden(v, stored, (640, 480))
    assert len(holes) == 1, holes
    x0, y0, x1, y1 = holes[0]
    assert 200 <= x0 < 280 < x1 <= 360 and 120 <= y0 < 210 < y1 <= 300, holes
    whole = K.Verification(512, 512, np.eye(3), 1.0, xy)
    assert FG.hidden(whole, stored, (640, 480)) == []


@pytest.mark.parametrize(
    ("name", "details"),
    [("china", ((291, 59, 626, 283), (94, 11, 372, 196))), ("coffee", ((319, 70, 586, 248), (0, 97, 252, 265)))],
)
def test_details_stored_beside_their_picture_do_not_hide_it(
    tune: HeldOut, tmp_path: object, name: str, details: tuple[tuple[int, int, int, int], ...]
) -> None:
    """Two details of a photo stored as entries of their own: the photo queried (turned, cropped a
    little) comes first. The photo's few keypoints in a smooth part (sky, table) are what its own
    points predict there, not what its density elsewhere would: no detail is "in front" of it. And
    the detail whose own 512 points all lie there does not tie with the photo at 1.0."""
    photo = photos()[name]
    e = _pairs_engine(
        tmp_path, "product", tune, {name: photo, **{f"{name}#{k}": photo.crop(b) for k, b in enumerate(details)}}
    )
    try:
        for query in (
            photo.rotate(4, Image.Resampling.BICUBIC, fillcolor=(128, 128, 128)),
            photo.crop((photo.width // 20, photo.height // 20, photo.width * 19 // 20, photo.height * 19 // 20)),
        ):
            results, _ = e.search("product", encode(fit(query, "product")))
            assert results and results[0][2] == name, (name, results[:3])
        results, _ = e.search("product", encode(fit(photo.crop(details[0]).rotate(3), "product")))
        assert results and results[0][2] == f"{name}#0", (name, results[:3])
    finally:
        e.close()


# --- the parts -------------------------------------------------------------------------------------


def test_appearance_tells_a_hue_change_from_a_brightness_change(tune: HeldOut) -> None:
    im = tune.objects["alien1"]
    size = im.size
    same = np.eye(3)
    thumb = A.thumbnail(im)
    brighter = im.point(lambda v: min(255, int(v * 1.2)))
    a = A.compare(thumb, size, A.query_picture(brighter), size, same)
    assert a.overlap == 1.0 and a.detail > 0.95 and a.colour < 0.2, a
    other = on_plain(recolour(build().objects["alien1"].convert("RGBA"), 85))
    b = A.compare(thumb, size, A.query_picture(other), size, same)
    assert b.colour > 0.6, b


def test_regions_find_a_plain_picture_pasted_into_a_busy_one(tune: HeldOut) -> None:
    plain = tune.lowtex["nuclei"].resize((240, 200))
    scene = contain(plain, np.random.default_rng(5))
    quads = R.quads(np.asarray(scene))
    sizes = [(q[:, 0].max() - q[:, 0].min(), q[:, 1].max() - q[:, 1].min()) for q in quads]
    assert any(abs(w - 240) < 12 and abs(h - 200) < 12 for w, h in sizes), sizes


def _pasted(picture: Image.Image, scale: float, seed: int) -> tuple[Image.Image, np.ndarray]:
    """`picture` pasted into a busy frame `scale` times its width (variants.contain), reduced to the
    gallery's 512 px working size, and the picture's true corners in it."""
    rng = np.random.default_rng(seed)
    w, h = picture.size
    frame = contain(picture, rng, scale)
    # contain() draws the background first, then the paste position, from the same generator
    rng = np.random.default_rng(seed)
    canvas = contain(Image.new("RGB", (w, h), (0, 0, 0)), rng, scale)
    black = np.all(np.asarray(canvas) == 0, axis=2)
    ys, xs = np.nonzero(black)
    x0, y0 = int(xs.min()), int(ys.min())
    k = 512 / max(frame.size)
    small = frame.resize((round(frame.width * k), round(frame.height * k)), Image.Resampling.BILINEAR)
    true = np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]], dtype=np.float32) * k
    return small, true


def test_a_region_is_snapped_onto_the_border_of_the_pasted_picture(tune: HeldOut) -> None:
    """The outline detectors leave a side a few pixels off (blur, dilation, a coarser grid); snapped,
    every corner lies within 1.5 px of the pasted picture's true corner."""
    small, true = _pasted(_big(tune.lowtex["nuclei"], 512), 0.45, 100)
    off = np.array(true)
    off[:, 0] += np.array([-4.0, 3.0, 3.0, -4.0])  # a box found 3-4 px off on every side
    off[:, 1] += np.array([-3.0, -3.0, 4.0, 4.0])
    snapped = R.snap(np.asarray(small, dtype=np.float32), off)
    assert np.abs(snapped - true).max() < 1.5, (snapped, true)
    found = R.quads(np.asarray(small))
    assert any(np.abs(q - true).max() < 1.5 for q in found), (found, true)


@pytest.mark.parametrize("name", ["nuclei", "game_puyo"])
def test_a_busy_picture_pasted_small_into_a_larger_image_is_found(same_hq: Engine, tune: HeldOut, name: str) -> None:
    """At 0.35-0.45 of the frame a busy picture's fine detail aliases away (too few keypoints match);
    its outline, snapped onto the border, finds it by its hash (nuclei at 0.35 was lost before)."""
    picture = {**tune.lowtex, **tune.photos}[name]
    if name not in tune.lowtex:  # the fixture's library holds the objects and low-texture pictures
        same_hq.add("same_hq", encode(picture, 95), brief=name)
    for scale, seed in ((0.45, 100), (0.35, 101)):
        query = contain(picture, np.random.default_rng(seed), scale)
        results, _ = same_hq.search("same_hq", encode(query))
        assert results and results[0][2] == name, (scale, results[:3])
