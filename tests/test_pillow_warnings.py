"""Pillow's warnings caught per thread (imgsync/pillow_warnings.py): pictures are read on several threads of
one process (the scan beside the calls in flight, the embedded gallery's request threads, the console), and
each reader must get its own picture's warnings, whatever the others do meanwhile."""

from __future__ import annotations

import io
import threading
import warnings

from PIL import Image

from imgsync.pillow_warnings import caught_warnings
from test_validate import png_header_only


def _open(width: int, height: int) -> None:
    """Pillow warns (DecompressionBombWarning, from PIL.Image) while reading this header: no pixel is decoded."""
    Image.open(io.BytesIO(png_header_only(width, height))).close()


def test_two_threads_each_catch_only_their_own_warnings_however_they_interleave() -> None:
    # The order that broke catch_warnings: A opens its block, B opens its own (replacing A's recorder as
    # the process's showwarning), A warns, B warns, A leaves, B leaves.
    step = threading.Barrier(2, timeout=30)
    got: dict[str, list[str]] = {}

    def reader(name: str, size: tuple[int, int], warns_first: bool) -> None:
        with caught_warnings() as caught:
            step.wait()  # both blocks open
            if not warns_first:
                step.wait()
            _open(*size)
            if warns_first:
                step.wait()
            step.wait()  # both have warned
        got[name] = [str(w.message) for w in caught]

    threads = [
        threading.Thread(target=reader, args=("a", (10_000, 10_000), True)),
        threading.Thread(target=reader, args=("b", (10_000, 10_001), False)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(got["a"]) == 1 and "100000000 pixels" in got["a"][0], got
    assert len(got["b"]) == 1 and "100010000 pixels" in got["b"][0], got


def test_the_same_warning_is_caught_every_time_and_outside_a_block_goes_where_it_went_before() -> None:
    with warnings.catch_warnings(record=True) as before:  # stands for whatever handled warnings before
        warnings.simplefilter("always")
        for _ in range(3):  # one place in Pillow, three times: each is caught (not once per place)
            with caught_warnings() as caught:
                _open(10_000, 10_000)
            assert [w.category for w in caught] == [Image.DecompressionBombWarning]
        assert before == []
        _open(10_000, 10_000)
        assert [w.category for w in before] == [Image.DecompressionBombWarning]


def test_nested_blocks_catch_into_the_innermost() -> None:
    with caught_warnings() as outer:
        with caught_warnings() as inner:
            _open(10_000, 10_000)
        _open(10_000, 10_001)
    assert len(inner) == 1 and len(outer) == 1 and "100010000" in str(outer[0].message)
