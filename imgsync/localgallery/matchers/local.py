"""Matchers that combine a global hash with local keypoints: "is this the same flat picture?"

Per entry (extract):
- phash/fine: the 64-bit pHash and fine DCT descriptor of three centred crops
  (global_descriptors.py), which settle resize / re-compression / brightness / format changes;
- vote: up to VOTE_CAP ORB descriptors spread over the picture (keypoints.spread_subset), a
  fixed-size column that feeds the voting shortlist (vote_index.py);
- EXTRA: all of the entry's ORB keypoints, serialised (keypoints.Keypoints.to_bytes), kept by the
  store outside memory and read only for the rows being verified.

Search (match):
1. hash stage over every row the filters allow (vectorised popcount), scored by the fine cosine;
2. vote stage: the query's strongest descriptors vote for entries; the best-voted allowed rows
   that the hash has not already settled (score ≥ HASH_SURE) are verified geometrically: ratio
   test + RANSAC (keypoints.verify) → inlier count;
3. score = max(hash score, keypoint score), both calibrated to one scale (see calibrate_cosine and
   keypoint_score): ≥ 0.9 "the same picture", ≥ 0.6 "similar", unrelated pictures ≤ ~0.3.

Subclasses pick the geometry (similarity transform for copies, homography for photographed
pages), the keypoint budget, and whether to try the mirrored query.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from PIL import Image

from imgsync.localgallery.matchers import global_descriptors as G
from imgsync.localgallery.matchers import keypoints as K
from imgsync.localgallery.matchers.base import EXTRA, Features, Field, Matcher
from imgsync.localgallery.matchers.table import FeatureTable
from imgsync.localgallery.matchers.vote_index import VoteIndex

#: A hash score this high needs no keypoint check.
HASH_SURE = 0.97
#: Query descriptors that vote (the strongest); more cost time and add little.
QUERY_VOTERS = 300
#: Inlier count → confidence: logistic with midpoint and width. Measured on 25 real photos
#: (benchmarks/bench_match_keypoints.py): unrelated pictures ≤ 6 inliers, true matches mostly
#: ≥ 30 and rarely below 15. 10 ± 2 puts 6 inliers at 0.12 and 15 at 0.92.
INLIER_MID, INLIER_WIDTH = 10.0, 2.0
#: In a search, vote-shortlisted rows with < this fraction of the best row's votes are not verified
#: (see _top_voted); at least MIN_VERIFIED rows always are.
VOTE_KEEP = 0.15
MIN_VERIFIED = 4

_COSINE_POINTS = ([0.0, 0.7, 0.86, 1.0], [0.0, 0.3, 0.9, 1.0])


def calibrate_cosine(cos: np.ndarray) -> np.ndarray:
    """Fine-DCT cosine → the shared 0..1 scale, piecewise linear. Copies measure ≥ 0.86 (→ ≥ 0.9);
    unrelated photos mostly ≤ 0.45, but two plain, smooth pictures (a colour chart and a retina
    scan) reach 0.69, so 0.7 maps to 0.3: the hash alone never calls such a pair "similar"."""
    return np.interp(cos, *_COSINE_POINTS)


def keypoint_score(v: K.Verification, coverage_weight: float) -> float:
    """Inlier evidence → 0..1. With coverage_weight w, a match covering only part of the stored
    picture scores a little less (× (1 - w + w·coverage)), so a closer copy ranks first."""
    if v.inliers == 0:
        return 0.0
    conf = K.logistic(v.inliers, INLIER_MID, INLIER_WIDTH)
    return conf * (1.0 - coverage_weight + coverage_weight * v.coverage)


class LocalFeatureMatcher(Matcher):
    #: keypoints extracted per entry / per query
    n_keypoints: ClassVar[int] = 500
    vote_cap: ClassVar[int] = 32
    model: ClassVar[Literal["homography", "similarity"]] = "similarity"
    #: also search the mirror image of the query
    mirror: ClassVar[bool] = False
    #: at most this many vote-shortlisted rows are verified with RANSAC per search
    verify_cap: ClassVar[int] = 24
    coverage_weight: ClassVar[float] = 0.1
    floor: ClassVar[float] = 0.6

    fields: ClassVar[tuple[Field, ...]]

    def __init__(self) -> None:
        self._votes = VoteIndex("vote")
        self._table: FeatureTable | None = None  # set by open_index

    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        cls.fields = (*G._SAME_FIELDS, Field("vote", "uint8", (cls.vote_cap, K.DESC_BYTES)))

    # --- extract ---------------------------------------------------------------------------------

    def extract(self, img: Image.Image) -> dict[str, np.ndarray]:
        gray = img.convert("L")
        kps = K.orb_keypoints(np.asarray(gray), self.n_keypoints)
        vote = np.zeros((self.vote_cap, K.DESC_BYTES), dtype=np.uint8)
        sel = K.spread_subset(kps, self.vote_cap)
        vote[: len(sel)] = kps.desc[sel]
        return {**G._same_extract(img), "vote": vote, EXTRA: np.frombuffer(kps.to_bytes(), dtype=np.uint8)}

    def extract_query(self, img: Image.Image) -> dict[str, np.ndarray]:
        q = self.extract(img)
        if self.mirror:
            m = self.extract(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
            q.update({f"{k}_m": v for k, v in m.items()})
        return q

    # --- index -----------------------------------------------------------------------------------

    def open_index(self, table: FeatureTable, directory: Path | None) -> None:
        self._table = table
        if directory is None or not self._votes.load(directory / "votes.faiss", self.name):
            self._votes.rebuild(table)
        self._votes.sync(table)

    def save_index(self, directory: Path) -> None:
        # Entries added since the last search are not in the index yet (it catches up lazily): add them
        # first, so the file is whole and the next start has nothing to catch up on.
        if self._table is not None:
            self._votes.sync(self._table)
        self._votes.save(directory / "votes.faiss", self.name)

    # --- query -----------------------------------------------------------------------------------

    def shortlist(self, query: Features, table: FeatureTable, mask: np.ndarray) -> np.ndarray:
        rows = [G._same_shortlist(query, table, mask)]
        for suffix in self._orientations(query):
            votes = self._votes.votes(_voters(query, suffix), table)
            rows.append(_top_voted(votes, mask, self.verify_cap))
        return np.unique(np.concatenate(rows)).astype(np.int64)

    def verify(self, query: Features, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
        scores = self._hash_scores(query, table, rows)
        todo = np.flatnonzero(scores < HASH_SURE)
        if len(todo):
            scores[todo] = np.maximum(scores[todo], self._keypoint_scores(query, table, rows[todo]))
        return scores

    def match(self, query: Features, table: FeatureTable, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hash_rows = G._same_shortlist(query, table, mask)
        if self.mirror:
            hash_rows = np.union1d(hash_rows, G._same_shortlist(_mirrored(query), table, mask))
        hash_scores = self._hash_scores(query, table, hash_rows)
        best: dict[int, float] = {int(r): float(s) for r, s in zip(hash_rows, hash_scores)}
        for suffix in self._orientations(query):
            if suffix and max(best.values(), default=0.0) >= 0.9:
                break        # the picture is found as it is; no need to look for its mirror image
            votes = self._votes.votes(_voters(query, suffix), table)
            cand = _top_voted(votes, mask, self.verify_cap, VOTE_KEEP)
            cand = np.array([r for r in cand if best.get(int(r), 0.0) < HASH_SURE], dtype=np.int64)
            for r, s in zip(cand, self._keypoint_scores(query, table, cand, (suffix,))):
                if s > best.get(int(r), 0.0):
                    best[int(r)] = s
        rows = np.fromiter(best, dtype=np.int64, count=len(best))
        scores = np.fromiter(best.values(), dtype=np.float64, count=len(best))
        keep = scores >= self.floor
        return rows[keep], scores[keep]

    # --- scoring ---------------------------------------------------------------------------------

    def _orientations(self, query: Features) -> tuple[str, ...]:
        return ("", "_m") if self.mirror and "vote_m" in query else ("",)

    def _hash_scores(self, query: Features, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.empty(0)
        cos = G._same_verify(query, table, rows)
        if self.mirror and "fine_m" in query:
            cos = np.maximum(cos, G._same_verify(_mirrored(query), table, rows))
        return calibrate_cosine(cos)

    def _keypoint_scores(self, query: Features, table: FeatureTable, rows: np.ndarray,
                         orientations: tuple[str, ...] | None = None) -> np.ndarray:
        out = np.zeros(len(rows))
        if len(rows) == 0:
            return out
        queries = [K.Keypoints.from_bytes(np.asarray(query[EXTRA + s]).tobytes())
                   for s in (orientations if orientations is not None else self._orientations(query))]
        for i, blob in enumerate(table.extras(rows)):
            if blob is None:
                continue
            stored = K.Keypoints.from_bytes(blob)
            for q in queries:
                v = K.verify(q, stored, K.ratio_matches(q.desc, stored.desc), model=self.model)
                out[i] = max(out[i], keypoint_score(v, self.coverage_weight))
        return out


def _voters(query: Features, suffix: str) -> np.ndarray:
    kps = K.Keypoints.from_bytes(np.asarray(query[EXTRA + suffix]).tobytes())
    return kps.desc[:QUERY_VOTERS]


def _top_voted(votes: np.ndarray, mask: np.ndarray, k: int, keep_above: float = 0.0) -> np.ndarray:
    """The k allowed rows with the most votes (at least one vote's worth), most voted first.
    With keep_above > 0, rows with fewer than that fraction of the top row's votes are dropped
    (but never the first MIN_VERIFIED): a true match usually out-votes everything else several
    times over, and each RANSAC on a hopeless candidate costs a few ms."""
    v = np.where(mask, votes, 0.0)
    rows = np.flatnonzero(v >= 1.0)
    if len(rows) > k:
        rows = rows[np.argpartition(-v[rows], k - 1)[:k]]
    rows = rows[np.argsort(-v[rows], kind="stable")]
    if keep_above and len(rows) > MIN_VERIFIED:
        strong = v[rows] >= keep_above * v[rows[0]]
        strong[:MIN_VERIFIED] = True
        rows = rows[strong]
    return rows.astype(np.int64)


def _mirrored(query: Features) -> dict[str, np.ndarray]:
    return {k[:-2]: v for k, v in query.items() if k.endswith("_m")}
