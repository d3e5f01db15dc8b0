"""The embedding matchers (similar, product, materiel) on real photos shipped in wheels.

Real parts throughout: the bundled ONNX model run by onnxruntime, real Pillow images encoded to
JPEG and decoded by the gallery's own loader, real FeatureTables, and a real Engine on a temp dir.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.bench_match_embedding import paste, patches, synth_textures
from benchmarks.photos import photos, stereo_pair, textures
from imgsync.libraries import get_library
from imgsync.localgallery.images import load_image
from imgsync.localgallery.matchers import embedding as E
from imgsync.localgallery.matchers import texture as T
from imgsync.localgallery.matchers.base import Matcher
from imgsync.localgallery.matchers.ranking import filter_mask
from imgsync.localgallery.matchers.similar import (
    FLOOR,
    Calibration,
    FabricMatcher,
    ProductMatcher,
    SimilarMatcher,
)
from imgsync.localgallery.matchers.table import FeatureTable


def jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def working(img: Image.Image, library: str) -> Image.Image:
    """The picture as the gallery's matchers see it: JPEG bytes through images.load_image."""
    return load_image(jpeg(img), get_library(library)).pixels


def table_of(
    matcher: Matcher, items: dict[str, Image.Image], tags: list[tuple[int, int]] | None = None
) -> FeatureTable:
    feats = [matcher.extract(im) for im in items.values()]
    t = FeatureTable(matcher.fields)
    n = len(feats)
    t.append_many(
        range(n),
        list(items),
        list(items),
        np.array(tags if tags else [(0, 0)] * n, dtype=np.uint16),
        np.zeros((n, 2), np.uint16),
        {f.name: np.stack([x[f.name] for x in feats]) for f in matcher.fields},
    )
    # the entries' variable-length blobs (similar's and product's keypoints), as a store keeps them
    blobs = [matcher.pack_extra(f) for f in feats]
    t.extra_loader = lambda seqs: {s: b for s in seqs if (b := blobs[s]) is not None}
    return t


def all_scores(matcher: Matcher, table: FeatureTable, query: Image.Image) -> np.ndarray:
    return matcher.verify(matcher.extract_query(query), table, np.arange(table.n))


@pytest.fixture(scope="module")
def pics() -> dict[str, Image.Image]:
    return photos()


# --- the model ---------------------------------------------------------------------------------------


def test_bundled_model_gives_the_right_imagenet_classes(pics: dict[str, Image.Image]) -> None:
    # 285 Egyptian cat, 967 espresso, 665 moped: only the real ImageNet weights get these right.
    for name, cls in (("chelsea", 285), ("coffee", 967), ("motorcycle_left", 665)):
        assert int(E.classify(pics[name]).argmax()) == cls, name


def test_embeddings_are_unit_length_and_deterministic(pics: dict[str, Image.Image]) -> None:
    a = E.embed(pics["coffee"])
    assert a.shape == (E.DIM,) and a.dtype == np.float32
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    np.testing.assert_allclose(E.embed(pics["coffee"]), a, atol=1e-6)
    regions = E.embed_regions(pics["coffee"], [E.FULL, (0.0, 0.0, 0.5, 0.5)])
    np.testing.assert_allclose(regions[0], a, atol=1e-5)
    assert float(regions[0] @ regions[1]) < 0.99  # the quarter is really another input


def test_a_missing_or_altered_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(E.ModelError, match="cannot be read"):
        E._Model(tmp_path / "nope.onnx", None).session()
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not a model")
    with pytest.raises(E.ModelError, match="sha256 differs"):
        E._Model(fake, E.MODEL_SHA256).session()
    with pytest.raises(E.ModelError, match="cannot be loaded"):
        E._Model(fake, None).session()


# --- similar -----------------------------------------------------------------------------------------


def test_similar_ranks_the_other_viewpoint_first_and_unrelated_low(pics: dict[str, Image.Image]) -> None:
    m = SimilarMatcher()
    gallery = {n: working(im, "similar") for n, im in pics.items()}
    table = table_of(m, gallery)
    _, right = stereo_pair()
    scores = all_scores(m, table, working(right, "similar"))
    best = table.signs[int(scores.argmax())]
    assert best == "motorcycle_left"
    assert scores.max() >= 0.6
    others = np.delete(scores, table.pos["motorcycle_left"])
    assert others.max() < 0.3, dict(zip(table.signs, scores.round(3), strict=True))


def test_similar_scores_a_recompressed_copy_as_the_same(pics: dict[str, Image.Image]) -> None:
    m = SimilarMatcher()
    table = table_of(m, {n: working(pics[n], "similar") for n in ("coffee", "astronaut", "rocket")})
    q = load_image(jpeg(pics["rocket"].resize((320, 213)), 75), get_library("similar")).pixels
    rows, scores = m.match(m.extract(q), table, np.ones(table.n, bool))
    assert [table.signs[r] for r in rows] == ["rocket"]  # the others are below the floor
    assert scores[0] >= 0.9


# --- product -----------------------------------------------------------------------------------------


def test_product_finds_the_object_on_another_background_and_scale(pics: dict[str, Image.Image]) -> None:
    m = ProductMatcher()
    names = ["coffee", "chelsea", "rocket", "astronaut", "motorcycle_left", "china", "flower", "grace_hopper"]
    table = table_of(m, {n: working(pics[n], "product") for n in names})
    bg = textures()["gravel"]
    rng = np.random.default_rng(5)
    for name, scale, angle in (("coffee", 0.5, 0.0), ("grace_hopper", 0.45, 10.0)):
        q = working(paste(pics[name], bg, scale, rng, angle), "product")
        scores = all_scores(m, table, q)
        assert table.signs[int(scores.argmax())] == name
        assert scores.max() >= 0.6
        assert np.delete(scores, table.pos[name]).max() < 0.3


# --- materiel ----------------------------------------------------------------------------------------


def test_materiel_finds_the_same_fabric_from_another_patch() -> None:
    m = FabricMatcher()
    src = {**textures(), **synth_textures(5)}
    stored = {n: working(patches(im, 160, 2)[0], "materiel") for n, im in src.items()}
    table = table_of(m, stored)
    for name, im in src.items():
        scores = all_scores(m, table, working(patches(im, 160, 2)[1], "materiel"))
        assert table.signs[int(scores.argmax())] == name
        assert scores[table.pos[name]] >= 0.6


def test_materiel_scores_a_photo_low_against_fabrics(pics: dict[str, Image.Image]) -> None:
    m = FabricMatcher()
    table = table_of(m, {n: working(patches(im, 160, 1)[0], "materiel") for n, im in textures().items()})
    assert all_scores(m, table, working(pics["coffee"], "materiel")).max() < 0.3


def test_texture_glcm_agrees_with_scikit_image() -> None:
    from skimage.feature import graycomatrix

    gray = np.asarray(textures()["brick"].convert("L"))
    edges = np.quantile(gray, np.linspace(0, 1, T.GLCM_LEVELS + 1)[1:-1])
    q = np.searchsorted(edges, gray, side="right").astype(np.uint8)
    ref = (
        graycomatrix(q, [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=T.GLCM_LEVELS, symmetric=True)
        .sum(axis=(2, 3))
        .astype(float)
        .ravel()
    )
    ours = (T.glcm_histogram(gray)[: T.GLCM_LEVELS**2] * np.sqrt(len(T.GLCM_DISTANCES))) ** 2
    np.testing.assert_allclose(ours, ref / ref.sum(), atol=1e-6)


def test_texture_lbp_is_rotation_invariant_and_discriminative() -> None:
    tx = textures()
    g = np.asarray(tx["grass"].convert("L"))
    np.testing.assert_allclose(T.lbp_histogram(np.rot90(g)), T.lbp_histogram(g), atol=1e-6)
    other = T.lbp_histogram(np.asarray(tx["brick"].convert("L")))
    assert float(T.lbp_histogram(g) @ other) < 0.999


# --- scores and filtering ----------------------------------------------------------------------------


def test_calibration_is_monotone_and_maps_its_knots() -> None:
    c = Calibration((0.0, 0.4, 0.7, 0.9, 1.0))
    raw = np.linspace(-0.5, 1.0, 301)
    s = c(raw)
    assert np.all(np.diff(s) >= 0) and s.min() == 0.0 and s.max() == 1.0
    np.testing.assert_allclose(c(np.array([0.4, 0.7, 0.9])), [0.3, 0.6, 0.9])
    assert abs(c.raw_at(FLOOR) - 0.4) < 1e-9


def test_filtered_search_sees_only_the_tagged_subset(pics: dict[str, Image.Image]) -> None:
    m = SimilarMatcher()
    left, right = stereo_pair()
    names = ["coffee", "chelsea", "rocket", "motorcycle_left"]
    items = {n: working(pics[n], "similar") for n in names}
    items["motorcycle_right"] = working(right, "similar")
    tags = [(1, 0), (1, 0), (2, 0), (2, 0), (1, 0)]  # the right view is tagged 1, the left 2
    table = table_of(m, items, tags)
    q = m.extract(working(left.rotate(5, Image.Resampling.BILINEAR), "similar"))
    mask = filter_mask(table.alive[: table.n], table.tags[: table.n], table.class_ids[: table.n], want_tags=(1,))
    rows, scores = m.match(q, table, mask)
    assert [table.signs[r] for r in rows] == ["motorcycle_right"]  # best match (left) is filtered out
    assert scores[0] >= 0.6


def test_matchers_serve_their_libraries_through_the_engine(tmp_path: Path, pics: dict[str, Image.Image]) -> None:
    from imgsync.localgallery.engine import Engine
    from imgsync.localgallery.matchers import matcher_for

    if not isinstance(matcher_for("similar"), SimilarMatcher):
        pytest.skip("the matcher registry does not serve similar with SimilarMatcher yet")
    eng = Engine(tmp_path)
    try:
        left, right = stereo_pair()
        for i, n in enumerate(("coffee", "chelsea", "rocket")):
            eng.add("similar", jpeg(pics[n]), brief=n, tags=(1 + i % 2,))
        eng.add("similar", jpeg(left), brief="left", tags=(1,))
        hits, _ = eng.search("similar", jpeg(right))
        assert hits[0][2] == "left" and hits[0][1] >= 0.6
        hits, _ = eng.search("similar", jpeg(right), tags=(2,))
        assert all(b == "chelsea" for _, _, b in hits)
    finally:
        eng.close()
