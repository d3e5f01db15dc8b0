"""same_hq's keypoint matcher on real photos (benchmarks.photos): every edit of the issue is found
top-1 with a "same" score, unrelated pictures score low, and the index follows adds and deletes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.photos import photos
from benchmarks.variants import SAME_IMAGE, encode
from conftest import make_image
from imgsync.localgallery.engine import Engine

#: a handful of varied real pictures, enough for the matcher to tell them apart
NAMES = ("astronaut", "coffee", "rocket", "chelsea", "hubble_deep_field", "china", "grace_hopper", "camera")


@pytest.fixture(scope="module")
def pictures() -> dict[str, Image.Image]:
    all_photos = photos()
    return {n: all_photos[n] for n in NAMES}


@pytest.fixture(scope="module")
def gallery(pictures: dict[str, Image.Image], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    e = Engine(tmp_path_factory.mktemp("samehq-kp"))
    for name, im in pictures.items():
        e.add("same_hq", encode(im, "PNG"), brief=name)
    yield e
    e.close()


@pytest.mark.parametrize("edit", list(SAME_IMAGE))
def test_every_edit_is_found_top1_with_a_same_score(
    gallery: Engine, pictures: dict[str, Image.Image], edit: str
) -> None:
    rng = np.random.default_rng(5)
    for name, im in pictures.items():
        results, _ = gallery.search("same_hq", SAME_IMAGE[edit](im, rng))
        assert results and results[0][2] == name, (edit, name, results[:3])
        assert results[0][1] >= 0.9, (edit, name, results[0])
        # a same-image search: the other photos are not results (or score far below)
        assert all(score < 0.6 for _, score, brief in results[1:]), results


def test_unrelated_pictures_score_low(gallery: Engine) -> None:
    for seed in range(20):
        results, _ = gallery.search("same_hq", make_image(300 + seed, (480, 360)))
        assert results == [], results


def test_containment_and_crop_score_below_the_identical_copy(gallery: Engine, pictures: dict[str, Image.Image]) -> None:
    rng = np.random.default_rng(1)
    im = pictures["coffee"]
    exact = gallery.search("same_hq", encode(im, "PNG"))[0][0][1]
    cropped = gallery.search("same_hq", SAME_IMAGE["crop 20%"](im, rng))[0][0][1]
    assert exact >= 0.99 and 0.9 <= cropped < exact


def test_deleted_picture_is_no_longer_found_by_keypoints(tmp_path: Path, pictures: dict[str, Image.Image]) -> None:
    e = Engine(tmp_path)
    try:
        signs = {n: e.add("same_hq", encode(pictures[n], "PNG"), brief=n) for n in ("rocket", "china")}
        query = SAME_IMAGE["crop 20%"](pictures["rocket"], np.random.default_rng(2))
        assert e.search("same_hq", query)[0][0][2] == "rocket"
        e.delete("same_hq", [signs["rocket"]])
        assert e.search("same_hq", query)[0] == []
        e.add("same_hq", encode(pictures["rocket"], "JPEG"), brief="rocket again")
        assert e.search("same_hq", query)[0][0][2] == "rocket again"
    finally:
        e.close()
