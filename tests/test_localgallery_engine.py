"""The local gallery's engine: real images, real threads, and a real store: tests taking `engine` or
`place` run on a SQLite data dir in tmp_path and on a fresh PostgreSQL database."""

from __future__ import annotations

import io
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from PIL.PngImagePlugin import PngInfo

from conftest import GalleryPlace, make_image
from imgsync.libraries import get_library
from imgsync.localgallery.engine import BulkEntry, Engine, IndexVersionError
from imgsync.localgallery.errors import IMAGE_SIZE_ERROR, ITEM_EXIST, ITEM_NOT_EXIST, ApiError
from imgsync.localgallery.images import cont_sign_of, load_image
from imgsync.localgallery.matchers import matcher_for
from imgsync.localgallery.matchers.ranking import filter_mask, rank_page

SIMILAR_LIBS = ["similar", "product", "picturebook", "materiel"]


@pytest.fixture
def engine(place: GalleryPlace) -> Iterator[Engine]:
    """An engine on each store: for what the store takes part in (adds, duplicates, updates, deletes,
    filters, paging, restarts, concurrency)."""
    e = place.engine()
    yield e
    e.close()


@pytest.fixture
def matching_engine(tmp_path: Path) -> Iterator[Engine]:
    """An engine on a SQLite data dir: for how well a library matches, which no store changes."""
    e = Engine(tmp_path / "data")
    yield e
    e.close()


# --- image edits ------------------------------------------------------------------------------------


def _open(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def _enc(img: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" and not kw else kw))
    return buf.getvalue()


def _crop(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom))))


VARIANTS: dict[str, Callable[[Image.Image], bytes]] = {
    "resize 50%": lambda im: _enc(im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)),
    "jpeg q30": lambda im: _enc(im, quality=30),
    "as png": lambda im: _enc(im, "PNG"),
    "as bmp": lambda im: _enc(im, "BMP"),
    "brightness x1.2": lambda im: _enc(ImageEnhance.Brightness(im).enhance(1.2)),
    "crop 5% each side": lambda im: _enc(_crop(im, 0.05, 0.05, 0.05, 0.05)),
    "crop 5% off one side": lambda im: _enc(_crop(im, 0.05, 0, 0, 0)),
    "crop 5% total, off-centre": lambda im: _enc(_crop(im, 0.03, 0.02, 0, 0)),
}


def _originals(n: int, size: tuple[int, int] = (640, 480)) -> list[bytes]:
    # Half PNG, half JPEG, so format changes are exercised in both directions.
    return [make_image(seed, size, "PNG" if seed % 2 else "JPEG") for seed in range(n)]


# --- same_hq ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def same_hq_gallery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, list[bytes]]]:
    e = Engine(tmp_path_factory.mktemp("samehq"))
    originals = _originals(24)
    for i, data in enumerate(originals):
        e.add("same_hq", data, brief=f"img-{i}")
    yield e, originals
    e.close()


def test_same_hq_identical_image_scores_at_least_099(same_hq_gallery: tuple[Engine, list[bytes]]) -> None:
    e, originals = same_hq_gallery
    for i, data in enumerate(originals):
        results, has_more = e.search("same_hq", data)
        assert results[0][2] == f"img-{i}" and results[0][1] >= 0.99 and not has_more
        assert results[0][0] == cont_sign_of(data)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_hq_finds_every_variant_top1(same_hq_gallery: tuple[Engine, list[bytes]], variant: str) -> None:
    e, originals = same_hq_gallery
    floor = 0.8 if "crop" in variant else 0.95
    scores = []
    for i, data in enumerate(originals):
        results, _ = e.search("same_hq", VARIANTS[variant](_open(data)))
        assert results, f"{variant} of img-{i} not found"
        assert results[0][2] == f"img-{i}", f"{variant} of img-{i}: top-1 is {results[0]}"
        scores.append(results[0][1])
        # same_hq is a same-image search: the other 23 pictures are not results.
        assert len(results) == 1, results
    assert min(scores) >= floor, (variant, sorted(scores)[:3])


def test_same_hq_score_falls_with_difference(same_hq_gallery: tuple[Engine, list[bytes]]) -> None:
    e, originals = same_hq_gallery
    im = _open(originals[0])
    exact = e.search("same_hq", originals[0])[0][0][1]
    small = e.search("same_hq", _enc(_crop(im, 0.05, 0, 0, 0)))[0][0][1]
    larger = e.search("same_hq", _enc(_crop(im, 0.1, 0, 0, 0)))[0]
    assert exact > small and (not larger or larger[0][1] < small)


def test_same_hq_unrelated_images_score_low(same_hq_gallery: tuple[Engine, list[bytes]]) -> None:
    e, _ = same_hq_gallery
    mt = matcher_for("same_hq")
    lib = get_library("same_hq")
    for seed in range(100, 130):
        query = make_image(seed, (500, 400))
        assert e.search("same_hq", query) == ([], False)
        # And below the floor as well: the raw best score against everything stays low.
        feats = mt.extract(load_image(query, lib).pixels)
        table = e._libs["same_hq"].table  # white-box: the unfiltered score distribution
        all_rows = np.arange(table.n)
        assert mt.verify(feats, table, all_rows).max() < 0.5


# --- the similarity libraries -------------------------------------------------------------------------


@pytest.mark.parametrize("library", SIMILAR_LIBS)
def test_similar_libraries_find_same_image_and_rank_an_edit_above_unrelated(
    matching_engine: Engine, library: str
) -> None:
    originals = [make_image(seed, (480, 400), "JPEG") for seed in range(12)]
    for i, data in enumerate(originals):
        matching_engine.add(library, data, brief=f"{library}-{i}")
    for i in (0, 5, 11):
        results, _ = matching_engine.search(library, originals[i])
        assert results[0][2] == f"{library}-{i}" and results[0][1] >= 0.99
        edited = _enc(
            ImageEnhance.Brightness(_crop(_open(originals[i]), 0.08, 0.04, 0.02, 0.06)).enhance(1.15), quality=60
        )
        results, _ = matching_engine.search(library, edited)
        assert results[0][2] == f"{library}-{i}", results[:3]
        assert all(score < results[0][1] for _, score, _ in results[1:])
        assert results == sorted(results, key=lambda r: -r[1])


def test_similar_ranks_by_visual_similarity_not_bytes(matching_engine: Engine) -> None:
    base = _open(make_image(1, (400, 320)))
    # The middle of the scene, desaturated: visually similar, but not a copy.
    matching_engine.add(
        "similar", _enc(ImageEnhance.Color(_crop(base, 0.2, 0.2, 0.2, 0.2)).enhance(0.6)), brief="desaturated"
    )
    matching_engine.add("similar", make_image(2, (400, 320)), brief="other")
    results, _ = matching_engine.search("similar", _enc(base))
    briefs = [b for _, _, b in results]
    assert briefs[0] == "desaturated" and results[0][1] < 0.99  # similar, not identical


# --- filters ------------------------------------------------------------------------------------------


def _reencodings(seed: int, n: int) -> list[bytes]:
    """n different files of one picture (JPEG qualities): near-identical features, distinct bytes."""
    im = _open(make_image(seed))
    return [_enc(im, quality=95 - 3 * k) for k in range(n)]


def test_tag_and_or(engine: Engine) -> None:
    files = _reencodings(3, 5)
    for data, tags, brief in zip(files, [(1,), (2,), (1, 2), (), (2, 9)], "abcde", strict=True):
        engine.add("same_hq", data, brief=brief, tags=tags)
    query = make_image(3)

    def briefs(**kw: object) -> set[str]:
        return {b for _, _, b in engine.search("same_hq", query, **kw)[0]}

    assert briefs() == set("abcde")
    assert briefs(tags=(1,)) == {"a", "c"}
    assert briefs(tags=(1, 2), tag_logic=0) == {"c"}
    assert briefs(tags=(1, 2), tag_logic=1) == {"a", "b", "c", "e"}
    assert briefs(tags=(9,), tag_logic=1) == {"e"}
    assert briefs(tags=(4,)) == set()


def test_product_class_filters(engine: Engine) -> None:
    files = _reencodings(4, 4)
    files = [_enc(_open(f).resize((400, 300))) for f in files]  # product needs ≥ 300 px
    for data, cls, brief in zip(files, [(1, None), (1, 2), (3, 2), (None, None)], "abcd", strict=True):
        engine.add("product", data, brief=brief, class_ids=cls)
    query = files[0]

    def briefs(cls: tuple[int | None, int | None]) -> set[str]:
        return {b for _, _, b in engine.search("product", query, class_ids=cls)[0]}

    assert briefs((None, None)) == set("abcd")
    assert briefs((1, None)) == {"a", "b"}
    assert briefs((None, 2)) == {"b", "c"}
    assert briefs((1, 2)) == {"b"}
    assert briefs((7, None)) == set()


@pytest.mark.parametrize("library", ["same_hq", "similar"])
def test_filter_applies_before_ranking_even_when_the_best_matches_are_untagged(
    matching_engine: Engine, library: str
) -> None:
    """2100 untagged entries match the query perfectly (more than any internal shortlist or the 1000
    cap); the one tagged entry is a weaker match. The filtered search must still return it."""
    mt = matcher_for(library)
    lib = get_library(library)
    query = make_image(5)
    exact = mt.extract(load_image(query, lib).pixels)
    matching_engine.bulk_load(library, (BulkEntry(f"{k},{k}", f"untagged-{k}", exact) for k in range(2100)))
    weaker = _enc(_crop(_open(query), 0.05, 0.05, 0, 0), quality=50)
    matching_engine.add(library, weaker, brief="tagged", tags=(42,))

    unfiltered, _ = matching_engine.search(library, query, rn=50)
    assert "tagged" not in {b for _, _, b in unfiltered}
    results, has_more = matching_engine.search(library, query, tags=(42,), rn=5)
    assert [b for _, _, b in results] == ["tagged"] and not has_more


# --- paging, ties, caps --------------------------------------------------------------------------------


def _same_pixels_other_bytes(n: int) -> list[bytes]:
    """n PNG files with identical pixels (so identical scores) and distinct bytes."""
    im = _open(make_image(6, (200, 150)))
    out = []
    for k in range(n):
        info = PngInfo()
        info.add_text("copy", str(k))
        out.append(_enc(im, "PNG", pnginfo=info))
    return out


def test_paging_is_stable_under_ties(engine: Engine) -> None:
    files = _same_pixels_other_bytes(25)
    for k, data in enumerate(files):
        engine.add("same_hq", data, brief=f"copy-{k:02d}")
    pages = [engine.search("same_hq", files[0], pn=pn, rn=10) for pn in (0, 10, 20)]
    assert [p[1] for p in pages] == [True, True, False]
    seen = [b for results, _ in pages for _, _, b in results]
    assert seen == [f"copy-{k:02d}" for k in range(25)]  # insertion order breaks ties
    assert len({s for results, _ in pages for _, s, _ in results}) == 1  # they really are ties
    assert engine.search("same_hq", files[3], pn=10, rn=10) == pages[1]  # same query → same pages


def test_results_are_capped_at_1000(engine: Engine) -> None:
    mt = matcher_for("same_hq")
    query = make_image(7)
    feats = mt.extract(load_image(query, get_library("same_hq")).pixels)
    engine.bulk_load("same_hq", (BulkEntry(f"{k},0", f"b{k}", feats) for k in range(1005)))
    first, more = engine.search("same_hq", query)
    assert len(first) == 300 and more
    last, more = engine.search("same_hq", query, pn=990, rn=20)
    assert [b for _, _, b in last] == [f"b{k}" for k in range(990, 1000)] and not more
    assert engine.search("same_hq", query, pn=1000, rn=10) == ([], False)


def test_rank_page_keeps_ties_at_the_cap_in_insertion_order() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.7, 0.5])
    seq = np.array([5, 4, 3, 2, 1])
    rows = np.arange(5)
    page, s, more = rank_page(rows, scores, seq, 0, 10, cap=3)
    assert page.tolist() == [1, 3, 4] and s.tolist() == [0.9, 0.7, 0.5] and not more
    page, _, more = rank_page(rows, scores, seq, 0, 2, cap=3)
    assert page.tolist() == [1, 3] and more


def test_filter_mask_ignores_dead_rows() -> None:
    alive = np.array([True, False, True])
    tags = np.array([[1, 0], [1, 0], [2, 1]], dtype=np.uint16)
    classes = np.zeros((3, 2), dtype=np.uint16)
    assert filter_mask(alive, tags, classes, want_tags=(1,)).tolist() == [True, False, True]
    assert filter_mask(alive, tags, classes, want_tags=(1, 2), tag_logic=0).tolist() == [False, False, True]


# --- add / update / delete -------------------------------------------------------------------------------


def test_duplicate_add_is_216681_with_the_existing_cont_sign(engine: Engine) -> None:
    data = make_image(8)
    sign = engine.add("same_hq", data, brief="first")
    with pytest.raises(ApiError) as info:
        engine.add("same_hq", data, brief="second")
    assert info.value.code == ITEM_EXIST and info.value.cont_sign == sign
    assert engine.add("similar", data, brief="other library") == sign  # libraries are separate
    assert [x["brief"] for x in engine.entries("same_hq")] == ["first"]
    assert engine.cont_sign_of("same_hq", data) == sign


def test_add_refuses_bad_images_and_stores_nothing(engine: Engine) -> None:
    with pytest.raises(ApiError) as info:
        engine.add("product", make_image(9, (200, 400)), brief="too small")
    assert info.value.code == IMAGE_SIZE_ERROR and "300 px" in info.value.message
    assert engine.entries("product") == []


def test_update_changes_brief_and_tags(engine: Engine) -> None:
    data = make_image(10)
    sign = engine.add("same_hq", data, brief="old", tags=(1,))
    engine.update("same_hq", sign, brief="new")
    assert engine.search("same_hq", data)[0][0][2] == "new"
    engine.update("same_hq", sign, tags=(2, 3))
    assert engine.search("same_hq", data, tags=(1,))[0] == []
    assert engine.search("same_hq", data, tags=(3,))[0][0][2] == "new"
    engine.update("same_hq", sign, tags=())
    assert engine.entries("same_hq") == [
        {"cont_sign": sign, "brief": "new", "tags": [], "class_id1": None, "class_id2": None}
    ]
    with pytest.raises(ApiError) as info:
        engine.update("same_hq", "1,2", brief="x")
    assert info.value.code == ITEM_NOT_EXIST


def test_update_product_class_ids(engine: Engine) -> None:
    data = make_image(11, (400, 300))
    sign = engine.add("product", data, brief="p", class_ids=(5, None))
    engine.update("product", sign, class_ids=(None, 6))
    assert engine.entries("product")[0]["class_id1"] is None and engine.entries("product")[0]["class_id2"] == 6
    assert engine.search("product", data, class_ids=(None, 6))[0][0][2] == "p"


def test_delete_removes_from_results(engine: Engine) -> None:
    a, b = make_image(12), make_image(13)
    sa = engine.add("same_hq", a, brief="a")
    engine.add("same_hq", b, brief="b")
    assert engine.delete("same_hq", [sa, "9,9"]) == 1
    assert engine.search("same_hq", a) == ([], False)
    assert engine.search("same_hq", b)[0][0][2] == "b"
    with pytest.raises(ApiError) as info:
        engine.delete("same_hq", [sa])
    assert info.value.code == ITEM_NOT_EXIST
    assert engine.add("same_hq", a, brief="again") == sa  # deleted bytes may be added again


def test_many_deletes_compact_the_index_and_keep_it_right(engine: Engine) -> None:
    mt = matcher_for("same_hq")
    feats = [mt.extract(load_image(make_image(s, (160, 120)), get_library("same_hq")).pixels) for s in range(3)]
    engine.bulk_load("same_hq", (BulkEntry(f"{k},1", f"b{k}", feats[k % 3]) for k in range(2400)))
    gone = [f"{k},1" for k in range(2400) if k % 3 != 2 or k < 1500]
    assert engine.delete("same_hq", gone) == len(gone)
    left = [x["brief"] for x in engine.entries("same_hq")]
    assert left == [f"b{k}" for k in range(1500, 2400) if k % 3 == 2]
    results, _ = engine.search("same_hq", make_image(2, (160, 120)), rn=1000)
    assert [b for _, _, b in results] == left


# --- persistence -------------------------------------------------------------------------------------


def test_everything_survives_a_restart(place: GalleryPlace) -> None:
    e = place.engine()
    files = _same_pixels_other_bytes(5)
    signs = [e.add("picturebook", f, brief=f"p{k}", tags=(k + 1,)) for k, f in enumerate(files)]
    e.update("picturebook", signs[1], brief="renamed", tags=(7, 8))
    e.delete("picturebook", [signs[3]])
    before = e.search("picturebook", files[0])
    entries = e.entries("picturebook")
    e.close()

    e = place.engine()
    try:
        assert e.entries("picturebook") == entries
        assert e.search("picturebook", files[0]) == before
        assert [b for _, _, b in before[0]] == ["p0", "renamed", "p2", "p4"]
        assert e.search("picturebook", files[0], tags=(8,))[0][0][2] == "renamed"
        with pytest.raises(ApiError):
            e.add("picturebook", files[0], brief="dup after restart")
    finally:
        e.close()


def test_features_from_another_matcher_without_working_copies_are_refused_clearly(tmp_path: Path) -> None:
    e = Engine(tmp_path)
    e.add("same_hq", make_image(14), brief="x")
    e.close()
    with sqlite3.connect(tmp_path / "gallery.sqlite3") as db:
        db.execute("UPDATE libraries SET matcher = 'old-matcher' WHERE name = 'same_hq'")
        db.execute("DELETE FROM copies")  # as in a data dir made by the first release
    with pytest.raises(IndexVersionError, match="same_hq.*1 entries.*old-matcher.*1 of them have no stored"):
        Engine(tmp_path)


# --- concurrency -------------------------------------------------------------------------------------


def test_eight_threads_adding_and_searching_lose_nothing(place: GalleryPlace) -> None:
    e = place.engine()
    errors: list[BaseException] = []
    per_thread = 5

    def work(t: int) -> None:
        try:
            for k in range(per_thread):
                data = make_image(1000 + t * per_thread + k, (240, 180))
                e.add("similar", data, brief=f"t{t}-{k}")
                results, _ = e.search("similar", data)
                assert results[0][2] == f"t{t}-{k}"
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    e.close()
    e = place.engine()  # and all of it reached the store
    try:
        assert sorted(x["brief"] for x in e.entries("similar")) == sorted(
            f"t{t}-{k}" for t in range(8) for k in range(per_thread)
        )
    finally:
        e.close()


def test_racing_duplicate_adds_store_exactly_one(engine: Engine) -> None:
    data = make_image(15)
    outcomes: list[str] = []
    lock = threading.Lock()

    def add(t: int) -> None:
        try:
            engine.add("same_hq", data, brief=f"t{t}")
            result = "ok"
        except ApiError as exc:
            result = f"dup:{exc.cont_sign}" if exc.code == ITEM_EXIST else f"error:{exc.code}"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=add, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(outcomes, key=lambda o: o != "ok") == ["ok"] + [f"dup:{cont_sign_of(data)}"] * 7
    assert len(engine.entries("same_hq")) == 1


def test_a_data_dir_has_one_engine_at_a_time_but_can_be_read_alongside(tmp_path: Path) -> None:
    from imgsync.localgallery.engine import DataDirInUseError

    e = Engine(tmp_path)
    try:
        e.add("same_hq", make_image(1), brief="one")
        with pytest.raises(DataDirInUseError, match=f"{tmp_path} is in use by another process \\(pid \\d+\\)"):
            Engine(tmp_path)
        reader = Engine(tmp_path, read_only=True)
        try:
            assert [x["brief"] for x in reader.entries("same_hq")] == ["one"]
        finally:
            reader.close()
    finally:
        e.close()
    Engine(tmp_path).close()  # released on close
