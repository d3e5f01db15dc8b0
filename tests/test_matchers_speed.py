"""The matchers' speed-ups change no result: each faster path against the one it replaced.

Real photos shipped in wheels, real ORB keypoints, a real Engine on a temp dir. (How much faster
is measured in benchmarks/bench_match_speed.py, side by side with the previous version.)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest
from PIL import Image

from benchmarks.photos import photos
from imgsync.localgallery.engine import Engine
from imgsync.localgallery.matchers import keypoints as K
from imgsync.localgallery.matchers import local as L
from imgsync.localgallery.matchers import matcher_for
from imgsync.localgallery.matchers import table as TB
from imgsync.localgallery.matchers import texture as T
from imgsync.localgallery.matchers.base import Field
from imgsync.localgallery.matchers.similar import SimilarMatcher

if TYPE_CHECKING:
    from imgsync.localgallery.matchers.vote_index import VoteIndex


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def pics() -> dict[str, Image.Image]:
    out = {}
    for name, im in sorted(photos().items())[:10]:
        im = im.convert("RGB")
        im.thumbnail((512, 512))
        out[name] = im
    return out


def _gray(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("L"))


def test_ratio_matches_equal_opencv_brute_force(pics: dict[str, Image.Image]) -> None:
    """faiss's Hamming k-NN in place of cv2.batchDistance: the very same matches, pair by pair."""

    def reference(q: np.ndarray, d: np.ndarray, ratio: float = 0.8, max_dist: int = 80):
        if len(d) < 2:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        dist, idx = cv2.batchDistance(q, d, -1, normType=cv2.NORM_HAMMING, K=2)
        d0, d1 = dist[:, 0], dist[:, 1]
        ok = np.flatnonzero((d0 < ratio * d1) & (d0 <= max_dist))
        di, dd = idx[ok, 0].astype(np.int64), d0[ok]
        order = np.lexsort((dd, di))
        first = np.ones(len(order), dtype=bool)
        first[1:] = di[order][1:] != di[order][:-1]
        return ok[order[first]], di[order[first]]

    kps = {n: K.adaptive_keypoints(_gray(im), 400, spread=True) for n, im in pics.items()}
    crops = {
        n: K.adaptive_keypoints(_gray(im.crop((20, 20, im.width - 20, im.height - 20))), 256) for n, im in pics.items()
    }
    matched = 0
    for a in kps:
        for b in crops:
            want, got = reference(kps[a].desc, crops[b].desc), K.ratio_matches(kps[a].desc, crops[b].desc)
            assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1]), (a, b)
            matched += len(got[0])
    assert matched > 500  # the comparison covered real matches, not only empty sets


def test_octile_edges_equal_numpy_quantile(pics: dict[str, Image.Image]) -> None:
    rng = np.random.default_rng(0)
    grays = [_gray(im) for im in pics.values()]
    grays += [
        rng.integers(0, 256, (int(rng.integers(1, 200)), int(rng.integers(1, 200))), dtype=np.uint8) for _ in range(100)
    ]
    grays += [np.full((40, 30), 9, np.uint8), rng.integers(100, 102, (17, 33), dtype=np.uint8)]
    for g in grays:
        assert np.array_equal(T._octile_edges(g), np.quantile(g, T._OCTILES))


def test_hash_median_equals_numpy_median() -> None:
    """The pHash's threshold (features._median) is np.median's float32 value, bit for bit, ties and
    wide ranges included: a different value would flip hash bits of coefficients equal to it."""
    from imgsync.localgallery.matchers.features import _median

    rng = np.random.default_rng(7)
    for k in range(3000):
        if k % 3 == 0:
            low = (rng.normal(size=64) * 10.0 ** rng.integers(-3, 6)).astype(np.float32)
        elif k % 3 == 1:
            low = rng.integers(-4, 4, 64).astype(np.float32)  # many ties, the two middle values equal or not
        else:
            low = np.float32(rng.normal() * 1e4) + rng.integers(0, 2, 64).astype(np.float32) * np.float32(1e-3)
        want, got = np.median(low), _median(low)
        assert isinstance(got, np.float32) and want.tobytes() == got.tobytes()


def test_scale_spread_subset_takes_the_rest_as_setdiff1d_would() -> None:
    """The fine half of the vote points comes from the points the coarse half left (np.setdiff1d's
    answer, by a mask)."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        n, w, h = int(rng.integers(0, 700)), int(rng.integers(1, 600)), int(rng.integers(1, 600))
        octave = rng.integers(0, 8, n).astype(np.int8)
        kps = K.Keypoints((rng.random((n, 2)) * [w, h]).astype(np.float32), np.zeros((n, 32), np.uint8), (w, h), octave)
        coarse = np.flatnonzero(octave >= K.COARSE_OCTAVE)
        take = coarse[K.spread_subset(K._subset(kps, coarse), 16, 4)]
        rest = np.setdiff1d(np.arange(n), take, assume_unique=True)
        want = np.sort(np.concatenate([take, rest[K.spread_subset(K._subset(kps, rest), 32 - len(take), 4)]]))
        got = K.scale_spread_subset(kps, 32, coarse_share=0.5)
        assert np.array_equal(got, want if n > 32 else np.arange(n))


def test_spread_subset_equals_the_cell_by_cell_loop() -> None:
    def reference(kps: K.Keypoints, k: int, grid: int) -> np.ndarray:
        if len(kps) <= k:
            return np.arange(len(kps))
        w, h = kps.size
        cell = (
            np.minimum(kps.xy[:, 1] * grid // max(h, 1), grid - 1) * grid
            + np.minimum(kps.xy[:, 0] * grid // max(w, 1), grid - 1)
        ).astype(np.int64)
        rank, seen = np.zeros(len(kps), np.int64), np.zeros(grid * grid, np.int64)
        for i, c in enumerate(cell):
            rank[i], seen[c] = seen[c], seen[c] + 1
        return np.sort(np.lexsort((np.arange(len(kps)), rank))[:k])

    rng = np.random.default_rng(1)
    for _ in range(200):
        n, w, h = int(rng.integers(0, 1200)), int(rng.integers(1, 600)), int(rng.integers(1, 600))
        kps = K.Keypoints((rng.random((n, 2)) * [w, h]).astype(np.float32), np.zeros((n, 32), np.uint8), (w, h))
        for k, grid in ((32, 4), (400, 6)):
            assert np.array_equal(K.spread_subset(kps, k, grid), reference(kps, k, grid))


def test_ransac_for_enough_inliers_only(pics: dict[str, Image.Image]) -> None:
    """min_inliers: a true pair keeps its inlier count; a pair with fewer matches is not tried."""
    for im in list(pics.values())[:5]:
        stored = K.adaptive_keypoints(_gray(im), 256)
        crop = im.crop((im.width // 10, im.height // 10, im.width - im.width // 10, im.height - im.height // 10))
        q = K.adaptive_keypoints(_gray(crop.resize(im.size)), 400, spread=True)
        pairs = K.ratio_matches(q.desc, stored.desc)
        full = K.verify(q, stored, pairs, model="homography")
        assert full.inliers >= 30
        assert K.verify(q, stored, pairs, model="homography", min_inliers=12).inliers == full.inliers
        assert K.verify(q, stored, pairs, model="homography", min_inliers=len(pairs[0]) + 1).inliers == 0
    assert K.ransac_iterations(12, 18, 4) < 30 < K.ransac_iterations(12, 40, 4) <= K.RANSAC_ITERS
    assert K.ransac_iterations(12, 12, 4) == 1


def test_second_round_reuses_the_first_rounds_points(pics: dict[str, Image.Image]) -> None:
    """same_hq's spread query points, from the first round's keypoints, equal a fresh detection."""
    m = matcher_for("same_hq")
    for im in pics.values():
        q = m._with_mirror(m.extract_query(im))
        fresh = {k: v for k, v in q.items() if not k.startswith(L.USUAL_XY)}
        a = L._spread_features(q, m.n_keypoints, m._orientations(q))
        b = L._spread_features(fresh, m.n_keypoints, m._orientations(fresh))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_similar_skips_keypoints_once_the_same_picture_is_found(
    tmp_path: Path, pics: dict[str, Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No re-ranking under a row scoring ≥ 0.9: every row scoring ≥ the keypoint cap (0.85), the
    first included, is the same as with the re-ranking; and a query without such a row is still
    re-ranked (a crop of a scene finds its picture through keypoints)."""
    eng = Engine(tmp_path / "g")
    try:
        for name, im in pics.items():
            eng.add("similar", jpeg(im), brief=name)
        copy = jpeg(next(iter(pics.values())), quality=70)
        gated = eng.search("similar", copy, rn=20)[0]
        calls = []
        real = SimilarMatcher._query_keypoints
        monkeypatch.setattr(SimilarMatcher, "_query_keypoints", lambda self, q: calls.append(1) or real(self, q))
        assert eng.search("similar", copy, rn=20)[0] == gated and not calls  # no keypoints were detected
        monkeypatch.setattr(SimilarMatcher, "settled_at", np.inf)
        full = eng.search("similar", copy, rn=20)[0]
        assert calls  # this time they were
        assert gated[0][1] >= 0.9 and gated[0] == full[0]
        cap = SimilarMatcher.keypoint_cap
        assert [r for r in gated if r[1] >= cap] == [r for r in full if r[1] >= cap]
    finally:
        eng.close()


def test_same_hq_mirror_keypoints_wait_until_needed(tmp_path: Path, pics: dict[str, Image.Image]) -> None:
    """A same_hq query holds its mirror image's hashes but not its keypoints; made when a search
    needs them, they equal an eager extraction of the flipped picture, and a search gives the same
    answers either way (the picture as it is, mirrored, mirrored and cropped: the keypoints' round)."""
    m = matcher_for("same_hq")
    eng = Engine(tmp_path / "g")
    try:
        for name, im in pics.items():
            eng.add("same_hq", jpeg(im), brief=name)
        table = eng._libs["same_hq"].table
        mask = table.alive[: table.n].copy()
        for im in list(pics.values())[:4]:
            flipped = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            w, h = flipped.size
            for query in (im, flipped, flipped.crop((w // 8, h // 8, w - w // 10, h - h // 10))):
                q = m.extract_query(query)
                assert "phash_m" in q and "fine_m" in q
                assert L.EXTRA + "_m" not in q and "qpic_m" not in q
                eager = m._extract(query.transpose(Image.Transpose.FLIP_LEFT_RIGHT), query=True)
                done = m._with_mirror(q)
                assert all(np.array_equal(done[f"{k}_m"], v) for k, v in eager.items())
                lazy_rows, lazy_scores = m.match(q, table, mask)
                rows, scores = m.match(done, table, mask)
                assert np.array_equal(lazy_rows, rows) and np.array_equal(lazy_scores, scores)
                assert len(rows) and scores.max() >= 0.9  # found, the mirrored ones too
    finally:
        eng.close()


@pytest.mark.parametrize("opencv", [True, False])
def test_float16_columns_widen_exactly(monkeypatch: pytest.MonkeyPatch, opencv: bool) -> None:
    """to_float32 gives astype's very bits, by OpenCV or (OpenCV 4) by numpy: every float16 value
    (zeros and their signs, subnormals, the largest, infinities; NaN stays NaN) in the shapes the
    matchers widen."""
    if int(cv2.__version__.split(".")[0]) >= 5:
        assert TB._OPENCV_WIDENS  # the fast path is the one this OpenCV takes
    monkeypatch.setattr(TB, "_OPENCV_WIDENS", opencv and TB._OPENCV_WIDENS)
    every = np.arange(2**16, dtype=np.uint16).view(np.float16)
    for a in (every, every.reshape(-1, 128), every[: 3 * 143 * 100].reshape(100, 3, 143), every[:0].reshape(0, 3, 143)):
        out = TB.to_float32(a)
        assert out.dtype == np.float32 and out.shape == a.shape
        ref, nan = a.astype(np.float32), np.isnan(a)
        assert np.array_equal(np.isnan(out), nan)  # NaN stays NaN (OpenCV quiets a signalling one)
        assert np.array_equal(out.view(np.uint32)[~nan], ref.view(np.uint32)[~nan])
    fine = np.random.default_rng(3).normal(size=(50, 3, 143)).astype(np.float16)
    rows = np.array([7, 3, 3, 49])
    t = TB.FeatureTable(())
    t.cols["fine"] = fine
    t.n = len(fine)
    assert np.array_equal(t.float32("fine", rows), fine[rows].astype(np.float32))


@pytest.mark.parametrize("ivf", [False, True])
def test_second_round_votes_add_to_the_first_rounds(monkeypatch: pytest.MonkeyPatch, ivf: bool) -> None:
    """Votes of two sets of descriptors, the second added to the first's (more_than), are bit for bit
    those of one search of both: exact and IVF index (a small IVF: the same code path as 100k)."""
    from imgsync.localgallery.matchers import vote_index as V

    if ivf:
        monkeypatch.setattr(V, "IVF_FROM", 2_000)
        monkeypatch.setattr(V, "_NLIST", 16)
    rng = np.random.default_rng(5)
    rows, cap = 300, 16
    codes, t, index = _voted(rng, rows, cap)
    assert (index._trained_at > 0) == ivf
    # queries near stored codes (a few bits flipped), so that many of them vote
    near = codes[rng.integers(0, rows, 500), rng.integers(0, cap, 500)]
    query = near ^ np.packbits(rng.random((500, 256)) < 0.04, axis=-1)
    whole = index.votes(query, t)
    assert np.count_nonzero(whole) > 50
    first = index.votes(query[:300], t)
    assert np.array_equal(index.votes(query[300:], t, more_than=first), whole)
    assert np.array_equal(first, index.votes(query[:300], t))  # more_than is not written to


def test_a_thousand_entries_vote_through_ivf_and_still_find_theirs() -> None:
    """From IVF_FROM codes (~500 same_hq entries) the vote index is an IVF with cells for its size
    (exact search cost 126 ms a query at 147k codes): 1,000 entries of 32 random codes are in an IVF
    of 256 cells, and every entry queried by its own codes (4 % of the bits flipped) gets the most
    votes."""
    from imgsync.localgallery.matchers import vote_index as V

    assert [V.nlist_for(c) for c in (V.IVF_FROM, 32_000, 147_000, 3_200_000)] == [128, 256, 1024, 1024]
    rng = np.random.default_rng(9)
    rows, cap = 1_000, 32
    codes, t, index = _voted(rng, rows, cap)
    assert index._trained_at == rows * cap and index._index.nlist == 256
    for r in rng.choice(rows, 50, replace=False):
        query = codes[r] ^ np.packbits(rng.random((cap, 256)) < 0.04, axis=-1)
        assert int(np.argmax(index.votes(query, t))) == r


def _vote_table(codes: np.ndarray) -> TB.FeatureTable:
    """A table of one "vote" column holding `codes` (rows, cap, 32), seqs 1..rows."""
    rows, cap = codes.shape[:2]
    t = TB.FeatureTable((Field("vote", "uint8", (cap, 32)),))
    zeros = np.zeros((rows, 2), np.uint16)
    t.append_many(range(1, rows + 1), [str(i) for i in range(rows)], [""] * rows, zeros, zeros, {"vote": codes})
    return t


def _voted(rng: np.random.Generator, rows: int, cap: int) -> tuple[np.ndarray, TB.FeatureTable, VoteIndex]:
    """Random codes (rows, cap, 32), their _vote_table and a VoteIndex rebuilt on it."""
    from imgsync.localgallery.matchers import vote_index as V

    codes = rng.integers(0, 256, (rows, cap, 32), dtype=np.uint8)
    t = _vote_table(codes)
    index = V.VoteIndex("vote")
    index.rebuild(t)
    return codes, t, index


def _fine_table(fine: np.ndarray, phash: np.ndarray) -> TB.FeatureTable:
    """A table of same_hq's hash columns: fine (rows, 3, 143) float16 and phash (rows, 3)."""
    from imgsync.localgallery.matchers import global_descriptors as G

    t = TB.FeatureTable(G._SAME_FIELDS)
    rows = len(fine)
    zeros = np.zeros((rows, 2), np.uint16)
    t.append_many(
        range(1, rows + 1), [str(i) for i in range(rows)], [""] * rows, zeros, zeros, {"fine": fine, "phash": phash}
    )
    return t


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def _by_fine_without_bound(hashes, fines, table, mask):  # type: ignore[no-untyped-def]
    """local._by_fine as it was before its bound: every row within PAGE_MAX_BITS widened."""
    stored_hash = table.col("phash")[:, 0]
    near = [mask & (np.min([np.bitwise_count(stored_hash ^ h) for h in v], axis=0) <= L.PAGE_MAX_BITS) for v in hashes]
    rows = np.flatnonzero(np.logical_or.reduce(near))
    stored = table.col("fine")[rows, 0].astype(np.float32)
    out = []
    for i, fine in enumerate(fines):
        cos = np.einsum("kd,cd->kc", stored, np.asarray(fine, np.float32)).max(axis=1)
        keep = np.flatnonzero((cos >= L.PAGE_FINE_MIN) & near[i][rows])
        if len(keep) > L.PAGE_FINE_ROWS:
            keep = keep[np.argsort(-cos[keep], kind="stable")[: L.PAGE_FINE_ROWS]]
        out.append(np.sort(rows[keep]))
    return out


def test_fine_bound_leaves_by_fine_its_answer_and_widens_few_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """_by_fine's bound (the lowest frequencies, and the norm of the others) cuts only rows whose cosine
    is under PAGE_FINE_MIN: its answer is the one of every row widened. The rows: random descriptors,
    and near the threshold on both sides, copies of the query's crops with noise in the frequencies the
    bound leaves to a norm (where a bound that dropped that term would cut true rows). A plain query
    (energy in the lowest frequencies) then widens a few percent of the rows; it is the point."""
    from imgsync.localgallery.matchers import features as F

    rng = np.random.default_rng(11)
    high = F.FINE_BY_FREQUENCY[L.FINE_BOUND_DIMS :]
    w = np.ones(F.FINE_DIM, np.float32)
    w[high] = 0.15  # a plain picture: most of its energy in the lowest frequencies
    query = _unit(rng.normal(size=(3, F.FINE_DIM)) * w)
    mirror = _unit(rng.normal(size=(3, F.FINE_DIM)) * w)
    n_random, n_near = 4000, 400
    fine = _unit(rng.normal(size=(n_random + n_near, 3, F.FINE_DIM)))
    for k in range(n_near):  # a crop of the query or its mirror, high frequencies made noisy to a cosine ~0.83-0.89
        src = (query, mirror)[k % 2][k % 3]
        noise = np.zeros(F.FINE_DIM, np.float32)
        noise[high] = rng.normal(size=len(high))
        noise *= rng.uniform(0.45, 0.75) / np.linalg.norm(noise)
        fine[n_random + k, 0] = _unit(src + noise)
    cos = np.einsum("kd,cd->kc", fine[:, 0].astype(np.float16).astype(np.float32), np.concatenate([query, mirror]))
    best = cos.max(axis=1)[n_random:]
    assert (best >= L.PAGE_FINE_MIN).sum() >= 20 and (best < L.PAGE_FINE_MIN).sum() >= 20  # both sides
    phash = rng.integers(0, 2**63, size=(len(fine), 3), dtype=np.int64).view(np.uint64)
    table = _fine_table(fine.astype(np.float16), phash)
    hashes = [phash[n_random + 3, ::-1].copy(), phash[n_random + 4].copy()]  # within bits of some rows
    mask = np.ones(table.n, dtype=bool)
    mask[n_random + 5] = False
    widened: list[int] = []
    real = TB.to_float32
    monkeypatch.setattr(L, "to_float32", lambda a: widened.append(len(a)) or real(a))
    # PAGE_FINE_ROWS high enough that every passing row is in the answer, then the module's own
    for cap in (10_000, L.PAGE_FINE_ROWS):
        monkeypatch.setattr(L, "PAGE_FINE_ROWS", cap)
        widened.clear()
        got = [np.sort(r) for r in L._by_fine(hashes, [query, mirror], table, mask)]
        want = _by_fine_without_bound(hashes, [query, mirror], table, mask)
        assert [len(r) for r in got] == [len(r) for r in want]
        assert all(np.array_equal(g, r) for g, r in zip(got, want, strict=True))
        assert sum(len(r) for r in want) > 0
    # of the random rows, few are widened (the bound's own column, widened once and kept, is not counted)
    assert widened[-1] < n_near + 0.02 * n_random
    # the bound holds for a query whose energy is anywhere, too (it then cuts less)
    spread = _unit(rng.normal(size=(3, F.FINE_DIM)))
    fine2 = fine.copy()
    fine2[:50, 0] = _unit(spread[0] + 0.4 * _unit(rng.normal(size=F.FINE_DIM)))
    t2 = _fine_table(fine2.astype(np.float16), phash)
    monkeypatch.setattr(L, "PAGE_FINE_ROWS", 10_000)
    got2 = L._by_fine([phash[0]], [spread], t2, np.ones(t2.n, dtype=bool))
    assert np.array_equal(np.sort(got2[0]), _by_fine_without_bound([phash[0]], [spread], t2, np.ones(t2.n, bool))[0])


def test_derived_values_follow_appends_and_compaction() -> None:
    """FeatureTable.derived computes each row once, as rows come, and anew once compaction has moved
    them: always compute's values of the rows there are, in row order."""
    from imgsync.localgallery.matchers import features as F

    rng = np.random.default_rng(4)
    fine = _unit(rng.normal(size=(3000, 3, F.FINE_DIM))).astype(np.float16)
    phash = rng.integers(0, 2**63, size=(3000, 3), dtype=np.int64).view(np.uint64)
    t = _fine_table(fine[:1000], phash[:1000])
    calls: list[int] = []

    def compute(table: TB.FeatureTable, rows: slice) -> np.ndarray:
        calls.append(rows.stop - rows.start)
        return L._fine_bound(table, rows)

    def want() -> np.ndarray:
        return L._fine_bound(t, slice(0, t.n))

    assert np.array_equal(t.derived("b", L.FINE_BOUND_DIMS + 1, compute), want())
    assert np.array_equal(t.derived("b", L.FINE_BOUND_DIMS + 1, compute), want()) and calls == [1000]
    zeros = np.zeros((2000, 2), np.uint16)
    signs = [str(i) for i in range(1000, 3000)]
    t.append_many(range(1001, 3001), signs, [""] * 2000, zeros, zeros, {"fine": fine[1000:], "phash": phash[1000:]})
    got = t.derived("b", L.FINE_BOUND_DIMS + 1, compute)
    assert calls == [1000, 2000] and got.shape == (L.FINE_BOUND_DIMS + 1, 3000) and np.array_equal(got, want())
    for s in [str(i) for i in range(0, 3000, 2)] + [str(i) for i in range(1, 400, 2)]:
        t.remove(s)  # past half dead: compaction
    assert t.n < 3000
    got = t.derived("b", L.FINE_BOUND_DIMS + 1, compute)
    assert calls[-1] == t.n and np.array_equal(got, want())
    assert np.array_equal(got, L._bound_terms(fine[t.seq[: t.n] - 1, 0].astype(np.float32)).T)  # rows moved
