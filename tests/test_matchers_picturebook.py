"""picturebook's keypoint matcher: a phone photo of a printed page finds that page."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from benchmarks.photos import photos
from benchmarks.variants import PHONE_PHOTO, encode
from conftest import make_image
from imgsync.localgallery.engine import Engine

PAGES = ("astronaut", "coffee", "rocket", "chelsea", "page", "text", "china", "flower", "grace_hopper")


@pytest.fixture(scope="module")
def pages() -> dict[str, Image.Image]:
    all_photos = photos()
    return {n: all_photos[n] for n in PAGES}


@pytest.fixture(scope="module")
def book(pages: dict[str, Image.Image], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    e = Engine(tmp_path_factory.mktemp("picturebook"))
    for name, im in pages.items():
        e.add("picturebook", encode(im, "PNG"), brief=name)
    yield e
    e.close()


@pytest.mark.parametrize("shot", list(PHONE_PHOTO))
def test_phone_photo_finds_the_page_top1(book: Engine, pages: dict[str, Image.Image], shot: str) -> None:
    rng = np.random.default_rng(9)
    for name, im in pages.items():
        results, _ = book.search("picturebook", PHONE_PHOTO[shot](im, rng))
        assert results and results[0][2] == name, (shot, name, results[:3])
        assert results[0][1] >= 0.9
        assert all(score < 0.3 for _, score, _ in results[1:]), results


def test_unrelated_photos_find_nothing(book: Engine) -> None:
    for seed in range(15):
        assert book.search("picturebook", make_image(500 + seed, (640, 480)))[0] == []


def test_tag_filter_finds_the_page_among_many_untagged_copies(tmp_path, pages: dict[str, Image.Image]) -> None:
    """Forty untagged re-encodings of the page out-vote the one tagged copy; the filtered search
    must still verify and return the tagged one (the filter is applied before the shortlist)."""
    e = Engine(tmp_path)
    try:
        im = pages["astronaut"]
        for q in range(40):
            e.add("picturebook", encode(im, quality=95 - q), brief=f"untagged-{q}")
        e.add("picturebook", encode(im.resize((400, 400)), quality=60), brief="tagged", tags=(7,))
        shot = PHONE_PHOTO["phone photo"](im, np.random.default_rng(4))
        results, _ = e.search("picturebook", shot, tags=(7,))
        assert [b for _, _, b in results] == ["tagged"] and results[0][1] >= 0.9
    finally:
        e.close()
