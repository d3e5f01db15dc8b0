"""Matchers that combine a global hash with local keypoints: "is this the same flat picture?"

Per entry (extract):
- phash/fine: the 64-bit pHash and fine DCT descriptor of three centred crops
  (global_descriptors.py), which settle resize / re-compression / brightness / format changes;
- vote: up to VOTE_CAP ORB descriptors spread over the picture (keypoints.spread_subset; with
  coarse_votes, that share of them from coarse pyramid levels: keypoints.scale_spread_subset), a
  fixed-size column that feeds the voting shortlist (vote_index.py);
- EXTRA: all of the entry's ORB keypoints, serialised (keypoints.Keypoints.to_bytes), kept by the
  store outside memory and read only for the rows being verified.

Search (match):
1. hash stage over every row the filters allow (vectorised popcount), scored by the fine cosine;
2. vote stage: the query's strongest descriptors vote for entries; the best-voted allowed rows
   that the hash has not already settled (score ≥ HASH_SURE) are verified geometrically: ratio
   test + RANSAC (keypoints.verify) → inlier count;
3. score = max(hash score, keypoint score), both calibrated to one scale (see calibrate_cosine and
   keypoint_score): ≥ 0.9 "the same picture", ≥ 0.6 "similar", unrelated pictures ≤ ~0.3;
4. the rows about to be answered are compared with the query in colour, detail and light once
   aligned (appearance.py); a query found by none of these looks further: a plain one by its fine
   descriptor beyond the hash stage's bit limit (plain_by_fine), any one by its regions.

Subclasses pick the geometry (similarity transform for copies, homography for photographed
pages), the keypoint budget, and whether to try the mirrored query.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, NamedTuple

import numpy as np
from PIL import Image

from imgsync.localgallery.matchers import appearance as A
from imgsync.localgallery.matchers import features as F
from imgsync.localgallery.matchers import global_descriptors as G
from imgsync.localgallery.matchers import keypoints as K
from imgsync.localgallery.matchers import page as P
from imgsync.localgallery.matchers import regions as R
from imgsync.localgallery.matchers.base import EXTRA, Features, Field, Matcher
from imgsync.localgallery.matchers.table import FeatureTable, to_float32
from imgsync.localgallery.matchers.vote_index import VoteIndex

#: A hash score this high needs no keypoint check.
HASH_SURE = 0.97
#: Query descriptors that vote (the strongest usual ones; in the second round as many spread ones too).
QUERY_VOTERS = 300
#: Inlier count → confidence: logistic with midpoint and width. Measured on 25 real photos
#: (benchmarks/bench_match_keypoints.py): unrelated pictures ≤ 6 inliers, true matches mostly
#: ≥ 30 and rarely below 15. 10 ± 2 puts 6 inliers at 0.12 and 15 at 0.92.
INLIER_MID, INLIER_WIDTH = 10.0, 2.0
#: In a search, vote-shortlisted rows with < this fraction of the best row's votes are not verified
#: (see _top_voted); at least MIN_VERIFIED rows always are.
VOTE_KEEP = 0.15
MIN_VERIFIED = 4
#: Query field: the usual keypoints' coordinates at full precision (EXTRA keeps them in 1/8 px).
USUAL_XY = "usual_xy"
#: The appearance check (appearance.py) runs on at most this many of the best rows at or above the floor.
APPEARANCE_ROWS = 32
#: The page region (page.py) also takes as candidates the rows whose fine cosine with it is at least
#: PAGE_FINE_MIN (at most PAGE_FINE_ROWS of them, the closest), whatever their pHash distance: a plain
#: page's pHash is mostly noise bits, and a page outlined and lit right lands 24-26 bits from its
#: own (tuning part: docs/matching-keypoints.md, fourth round). The appearance check still decides.
#: A plain query that nothing has found does the same with itself (plain_by_fine; sixth round).
PAGE_FINE_MIN = 0.86
PAGE_FINE_ROWS = 8
#: A query with fewer usual keypoints than this is plain (_plain): twice the inliers of a sure keypoint
#: match (15), which the ratio test and RANSAC rarely leave of so few. Tuning part: plain gradients
#: have 0-2, its low-texture pictures 1-118; bench_gallery's synthetic pictures 30-222 (median 96).
PLAIN_POINTS = 30
#: ... within this many pHash bits of the page region, against the whole stored picture (of 64; the hash
#: stage's own limit is global_descriptors.MAX_BITS): the fine descriptors are widened only for those rows.
PAGE_MAX_BITS = 30
#: _by_fine bounds each cosine from above by the FINE_BOUND_DIMS lowest frequencies and the norm of the
#: others (_fine_bound) before it widens whole descriptors. Rows left to widen, of 69 real photos / 20k
#: random descriptors, for plain pictures (gradients, the low-texture set) and for the benchmarks'
#: textures (busier, their energy spread over the frequencies): 24 dims 1 % / 1 % and 31 % / 84 %;
#: 48 dims 1 % / 0 % and 5 % / 0.4 % (cosine ≥ PAGE_FINE_MIN itself: 1 %). The bound's product over
#: 100k rows costs 2.3 ms with 24 dims, 6.7 with 48; widening 84k rows ~30.
FINE_BOUND_DIMS = 48
_BOUND_LOW, _BOUND_HIGH = F.FINE_BY_FREQUENCY[:FINE_BOUND_DIMS], F.FINE_BY_FREQUENCY[FINE_BOUND_DIMS:]
#: float32 rounding of a 143-d product is ~1e-6: the bound gives this much away so that it never cuts a row.
BOUND_SLACK = 1e-3
#: Such a candidate needs its colours too (appearance.Agreement.colour at most this), whatever the
#: library's own limits: two smooth gradients with one layout have one fine descriptor. Tuning-only
#: gradient pages: the right page ≤ 0.28, other gradients ≥ 0.52.
HASHLESS_COLOUR = 0.4

#: A snapped region is rectified this many px inside its outline: the outline lies on the step,
#: whose pixels blend the picture with what surrounds it (tuning part, contained in larger, seeds
#: 1-10, regions alone: true score ≥ 0.95 in 117 -> 129 of 140).
INSET = 1.0

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
    #: a second round with query keypoints spread over the frame (keypoints.spread_keypoints)
    spread_query: ClassVar[bool] = True
    #: a low-texture picture, detected again at a low threshold, keeps this share of n_keypoints
    low_texture_share: ClassVar[float] = 1.0
    #: share of the vote descriptors taken from coarse pyramid levels (keypoints.scale_spread_subset)
    coarse_votes: ClassVar[float] = 0.0
    #: compare colour and detail of the aligned pictures before a row keeps its score
    check_appearance: ClassVar[bool] = True
    #: appearance limits (see appearance_cap): (colour residual, luma correlation) beyond which a
    #: row is another picture, and within which it is the same picture; a keypoint match showing
    #: less than same_coverage of the stored picture is related, not the same.
    other_look: ClassVar[tuple[float, float]] = (0.55, 0.3)
    same_look: ClassVar[tuple[float, float]] = (0.45, 0.6)
    same_coverage: ClassVar[float] = 0.25
    #: a grey stored picture and a query this coloured where it lies (appearance.Agreement.tint) are
    #: two pictures; no limit by default (a phone photo of a grey page takes the light's colour)
    grey_tint: ClassVar[float] = float("inf")
    #: a query lit more than this many times brighter or darker (appearance.Agreement.light) is related,
    #: not the same picture; no limit by default (a phone photo's exposure is anybody's guess)
    same_light: ClassVar[float] = float("inf")
    #: query regions' sides snapped onto the step edges they lie near (regions.snap): a picture
    #: pasted into another has a sharp border all round
    snap_regions: ClassVar[bool] = True
    #: the query may be a photo of a page lying on a table: look for the page by its colours
    #: against the table's (page.py) as well as by its outline
    page_regions: ClassVar[bool] = False
    #: a plain query nothing has found is also looked for by its fine descriptor (_search_by_fine)
    plain_by_fine: ClassVar[bool] = False
    #: a row found by its fine descriptor alone (Evidence.hashless) needs at least this luma correlation
    hashless_detail: ClassVar[float] = -1.0

    fields: ClassVar[tuple[Field, ...]]

    def __init__(self) -> None:
        self._votes = VoteIndex("vote")
        self._table: FeatureTable | None = None  # set by open_index

    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        cls.fields = (*G._SAME_FIELDS, Field("vote", "uint8", (cls.vote_cap, K.DESC_BYTES)))

    # --- extract ---------------------------------------------------------------------------------

    def extract(self, img: Image.Image) -> dict[str, np.ndarray]:
        return self._extract(img, query=False)

    def _extract(self, img: Image.Image, *, query: bool) -> dict[str, np.ndarray]:
        grey = img.convert("L")  # one conversion for the keypoints and the hashes
        return {**G._same_extract(img, grey), **self._keypoint_features(img, grey, query=query)}

    def _keypoint_features(self, img: Image.Image, grey: Image.Image, *, query: bool) -> dict[str, np.ndarray]:
        gray = np.asarray(grey)
        # A low-texture picture is detected again at a low threshold; except a query that may have a
        # second round (spread_query): its spread points, low threshold included, wait for it (match).
        if query and self.spread_query:
            kps = K.orb_keypoints(gray, self.n_keypoints)
        else:
            kps = K.adaptive_keypoints(gray, self.n_keypoints, low=round(self.low_texture_share * self.n_keypoints))
        if query:
            # a query votes with its own strongest points (_voters) and is compared by its qpic: it
            # needs neither the stored vote column nor the stored thumbnail
            out = {EXTRA: np.frombuffer(kps.to_bytes(), dtype=np.uint8)}
            if self.spread_query:  # exact coordinates: a second round need not detect them again
                out[USUAL_XY] = kps.xy
            return out
        vote = np.zeros((self.vote_cap, K.DESC_BYTES), dtype=np.uint8)
        sel = K.scale_spread_subset(kps, self.vote_cap, coarse_share=self.coarse_votes)
        vote[: len(sel)] = kps.desc[sel]
        blob = kps.to_bytes() + A.thumbnail(img).tobytes()
        return {"vote": vote, EXTRA: np.frombuffer(blob, dtype=np.uint8)}

    def extract_query(self, img: Image.Image) -> dict[str, np.ndarray]:
        # qimg: the working picture itself, for what only a later stage needs (the mirror image's
        # keypoints and picture, spread keypoints, regions), computed then
        q = {**self._extract(img, query=True), "qpic": A.query_picture(img), "qimg": np.asarray(img.convert("RGB"))}
        if self.mirror:
            # the mirror image's hashes only: the hash stage needs them at once, while its keypoints
            # (~40 % of a query's extraction) wait until a search has not found the picture as it is
            flipped = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            q.update({f"{k}_m": v for k, v in G._same_extract(flipped).items()})
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
        query = self._with_mirror(query)
        rows = [G._same_shortlist(query, table, mask)]
        for suffix in self._orientations(query):
            votes = self._votes.votes(_voters(query, suffix, spread=True), table)
            rows.append(_top_voted(votes, mask, self.verify_cap))
        return np.unique(np.concatenate(rows)).astype(np.int64)

    def verify(self, query: Features, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
        query = self._with_mirror(query)
        found = self._hash_evidence(query, table, rows)
        todo = np.array([r for r in rows if found[int(r)].score < HASH_SURE], dtype=np.int64)
        for r, e in zip(todo, self._keypoint_evidence(query, table, todo), strict=True):
            if e.score > found[int(r)].score:
                found[int(r)] = e
        self._check_appearance(query, table, found)
        return np.array([found[int(r)].score for r in rows], dtype=np.float64)

    def match(self, query: Features, table: FeatureTable, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hash_rows = G._same_shortlist(query, table, mask)
        if self.mirror:
            hash_rows = np.union1d(hash_rows, G._same_shortlist(_mirrored(query), table, mask))
        # rows the hash scores below the floor are no result unless keypoints raise them, and then
        # the keypoint evidence stands alone: no need to keep ~2000 of them at 100k entries
        found = self._hash_evidence(query, table, hash_rows, at_least=self.floor)
        # Two rounds: the usual keypoints first; points spread over the frame (a plain picture in a
        # busy frame) only for a query nothing has been found for yet, so that a query found at
        # once costs what it did before they existed.
        first_round: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # suffix → (voters, their votes)
        for spread in (False, True):
            if spread:
                if not self.spread_query or "qimg" not in query or _best(found) >= 0.9:
                    break
                query = {**query, **_spread_features(query, self.n_keypoints, self._orientations(query))}
            for suffix in self._orientations(query):
                if suffix and _best(found) >= 0.9:
                    break  # the picture is found as it is; no need to look for its mirror image
                if suffix:
                    query = self._with_mirror(query)
                voters = _voters(query, suffix, spread)
                votes = self._round_votes(voters, table, first_round.get(suffix))
                if not spread:
                    first_round[suffix] = (voters, votes)
                cand = _top_voted(votes, mask, self.verify_cap, VOTE_KEEP)
                cand = np.array(
                    [r for r in cand if int(r) not in found or found[int(r)].score < HASH_SURE], dtype=np.int64
                )
                for r, e in zip(cand, self._keypoint_evidence(query, table, cand, (suffix,), spread), strict=True):
                    if int(r) not in found or e.score > found[int(r)].score:
                        found[int(r)] = e
        self._check_appearance(query, table, found)
        if _best(found) < 0.9 and self.plain_by_fine and _plain(query):
            self._search_by_fine(query, table, mask, found)
        if _best(found) < 0.9 and "qimg" in query:
            self._search_regions(query, table, mask, found)
        rows = np.fromiter(found, dtype=np.int64, count=len(found))
        scores = np.fromiter((e.score for e in found.values()), dtype=np.float64, count=len(found))
        keep = scores >= self.floor
        return rows[keep], scores[keep]

    # --- scoring ---------------------------------------------------------------------------------

    def _orientations(self, query: Features) -> tuple[str, ...]:
        return ("", "_m") if self.mirror and "phash_m" in query else ("",)

    def _round_votes(
        self, voters: np.ndarray, table: FeatureTable, first: tuple[np.ndarray, np.ndarray] | None
    ) -> np.ndarray:
        """The votes of `voters`. The second round's voters usually begin with the first round's
        (the same usual points), whose votes are known: only the spread ones are looked up (a third
        of an outside query's vote searches at 100k entries)."""
        if first is not None:
            done, votes = first
            if len(voters) >= len(done) and np.array_equal(voters[: len(done)], done):
                return self._votes.votes(voters[len(done) :], table, more_than=votes)
        return self._votes.votes(voters, table)

    def _with_mirror(self, query: Features) -> Features:
        """The query with its mirror image's keypoints (extract_query leaves them out until needed)."""
        if not self.mirror or "phash_m" not in query or EXTRA + "_m" in query:
            return query
        flipped = _flipped(query)
        m = self._keypoint_features(flipped, flipped.convert("L"), query=True)
        return {**query, **{f"{k}_m": v for k, v in m.items()}}

    def _hash_evidence(
        self, query: Features, table: FeatureTable, rows: np.ndarray, at_least: float = 0.0
    ) -> dict[int, Evidence]:
        """Each row's calibrated hash score (those scoring at_least), with the orientation and crop
        pair that gave it."""
        if len(rows) == 0:
            return {}
        suffix = np.zeros(len(rows), dtype=np.int64)
        if self.mirror and "fine_m" in query:
            cos, cos_m = G.pair_cosines([query["fine"], query["fine_m"]], table, rows)
            suffix = (cos_m.max(axis=1) > cos.max(axis=1)).astype(np.int64)
            cos = np.where(suffix[:, None] == 1, cos_m, cos)
        else:
            cos = G._same_pair_cosines(query, table, rows)
        pair = cos.argmax(axis=1)
        score = calibrate_cosine(np.clip(cos.max(axis=1), 0.0, 1.0))
        keep = score >= at_least
        return {
            int(r): Evidence(float(s), ("", "_m")[int(m)], int(p), None, 1.0)
            for r, s, m, p in zip(rows[keep], score[keep], suffix[keep], pair[keep], strict=True)
        }

    def _search_by_fine(
        self, query: Features, table: FeatureTable, mask: np.ndarray, found: dict[int, Evidence]
    ) -> None:
        """A plain picture's pHash is mostly noise bits (a sky gradient's own copies land 20-28 bits
        from it, beyond MAX_BITS), and it has too few keypoints to be found by instead: the rows whose
        fine cosine with the query (or its mirror image) is high (_by_fine) are scored as the hash
        stage scores its rows, and must then agree in colour (HASHLESS_COLOUR) and line up in grey
        levels (hashless_detail) too. Only a plain query not found otherwise pays it: at 100k entries,
        mostly _by_fine's bound over every row (see there)."""
        versions = [query] + ([_mirrored(query)] if self.mirror and "phash_m" in query else [])
        cand = _by_fine([v["phash"] for v in versions], [v["fine"] for v in versions], table, mask)
        # rows no stage has found: those found already keep their own evidence
        rows = np.setdiff1d(np.concatenate(cand), np.fromiter(found, dtype=np.int64, count=len(found)))
        more = {
            r: e._replace(hashless=True)
            for r, e in self._hash_evidence(query, table, rows, at_least=self.floor).items()
        }
        self._check_appearance(query, table, more)
        found.update(more)

    def _search_regions(
        self, query: Features, table: FeatureTable, mask: np.ndarray, found: dict[int, Evidence]
    ) -> None:
        """The fallback for pictures too plain for keypoints (regions.py): each quadrilateral region
        of the query, rectified, goes through the hash stage as if it were the whole query; the
        rows it finds are checked for appearance with the region's exact alignment."""
        more: dict[int, Evidence] = {}
        regions = _regions(Image.fromarray(np.asarray(query["qimg"])), self.snap_regions, self.page_regions)
        by_fine = _fine_candidates(regions, table, mask)
        for i, to_query in enumerate(regions.get("region_to_query", ())):
            sub = {"phash": regions["region_phash"][i], "fine": regions["region_fine"][i]}
            rows = G._same_shortlist(sub, table, mask)
            hashless = np.setdiff1d(by_fine[i], rows) if i < len(by_fine) else rows[:0]
            rows = np.union1d(rows, hashless)
            if len(rows) == 0:
                continue
            cos = G._same_pair_cosines(sub, table, rows)
            score = calibrate_cosine(np.clip(cos.max(axis=1), 0.0, 1.0))
            fw, fh = (int(x) for x in regions["region_size"][i])
            frame = (fw, fh)
            # Only rows at or above the floor can change the answer (match drops the others), and at
            # 100k entries the shortlist holds thousands of rows per region: a Python loop over all
            # of them was most of an outside query's time.
            keep = score >= self.floor
            hashless_rows = set(hashless.tolist())
            for r, s, pair in zip(rows[keep], score[keep], cos.argmax(axis=1)[keep], strict=True):
                if int(r) in found and found[int(r)].judged:
                    # sure keypoints aligned it exactly and it did not look the same: a region's
                    # hash (grey levels) does not overrule that (a recoloured lookalike, tuning part)
                    continue
                if s > max(
                    found[int(r)].score if int(r) in found else 0.0, more[int(r)].score if int(r) in more else 0.0
                ):
                    more[int(r)] = Evidence(
                        float(s), "", int(pair), None, 1.0, to_query, frame, hashless=int(r) in hashless_rows
                    )
        self._check_appearance(query, table, more)
        for r, e in more.items():
            if r not in found or e.score > found[r].score:
                found[r] = e

    def _keypoint_evidence(
        self,
        query: Features,
        table: FeatureTable,
        rows: np.ndarray,
        orientations: tuple[str, ...] | None = None,
        spread: bool = True,
    ) -> list[Evidence]:
        out = [NO_EVIDENCE] * len(rows)
        if len(rows) == 0:
            return out
        suffixes = orientations if orientations is not None else self._orientations(query)
        queries = [(s, _query_keypoints(query, s, spread)) for s in suffixes]
        for i, blob in enumerate(table.extras(rows)):
            if blob is None:
                continue
            stored = K.Keypoints.from_bytes(blob)
            for s, q in queries:
                v = K.verify(q, stored, K.ratio_matches(q.desc, stored.desc), model=self.model)
                score = keypoint_score(v, self.coverage_weight)
                if score > out[i].score:
                    out[i] = Evidence(score, s, -1, v.transform, v.coverage)
        return out

    def _check_appearance(self, query: Features, table: FeatureTable, found: dict[int, Evidence]) -> None:
        """Rows about to be returned (the best APPEARANCE_ROWS at or above the floor) are compared with
        the query in colour and detail once aligned (appearance.py); a row that does not look like the
        query loses its "same" score. Rows without a stored thumbnail (bulk-loaded) keep theirs."""
        if not self.check_appearance:
            return
        cand = sorted((r for r, e in found.items() if e.score >= self.floor), key=lambda r: -found[r].score)
        cand = cand[:APPEARANCE_ROWS]
        if not cand:
            return
        pictures = {k: np.asarray(v) for k, v in query.items() if k.startswith("qpic")}
        for r, blob in zip(cand, table.extras(np.array(cand, dtype=np.int64)), strict=True):
            if blob is None:
                continue
            stored = K.Keypoints.from_bytes(blob)
            thumb = _thumb_of(blob)
            if thumb is None:
                continue
            e = found[r]
            qsize = _query_size(query)
            if "qpic" + e.suffix not in pictures:  # the mirror image's: made when a row found by it needs it
                pictures["qpic" + e.suffix] = A.query_picture(_flipped(query))
            qpic = pictures["qpic" + e.suffix]
            if e.transform is not None:
                a = A.compare(thumb, stored.size, qpic, qsize, e.transform)
            else:  # the hash stage's crop alignment is approximate: look around it
                h = G.crop_pair_transform(e.pair, stored.size, e.frame or qsize)
                a = A.compare_near(thumb, stored.size, qpic, qsize, h if e.region is None else e.region @ h)
            cap = self.appearance_cap(a, e.coverage)
            if e.hashless and (a.colour > HASHLESS_COLOUR or a.detail < self.hashless_detail):
                # the same layout of grey levels in other colours, or only roughly the same layout
                # (a fine cosine of 0.86 allows it): another picture
                cap = min(cap, 0.5)
            # a sure keypoint match (>= 0.9: 15 inliers or more) aligns exactly; a weak one on a
            # plain picture does not, and its verdict must not block a region's better alignment
            sure = e.transform is not None and e.score >= 0.9
            found[r] = e._replace(score=min(e.score, cap), judged=e.judged or (sure and cap < e.score))

    def appearance_cap(self, a: A.Agreement, coverage: float) -> float:
        """The highest score a row may keep given how it looks once aligned with the query.
        Limits fitted on the tuning part of benchmarks/heldout.py (true edits vs recoloured and
        sibling lookalikes): docs/matching-keypoints.md."""
        if a.overlap < A.MIN_OVERLAP:
            return 1.0  # too little of it in view to judge; the geometry alone decided
        if a.colour > self.other_look[0] or a.detail < self.other_look[1] or a.tint > self.grey_tint:
            return 0.5  # another picture: below every keypoint library's "similar"
        if (
            a.colour > self.same_look[0]
            or a.detail < self.same_look[1]
            or coverage < self.same_coverage
            or not 1 / self.same_light <= a.light <= self.same_light
        ):
            return 0.85  # related (similar), but not the same picture
        return 1.0


class Evidence(NamedTuple):
    """Why a row scores what it scores: the orientation of the query ("" or "_m"), and the alignment:
    the hash stage's crop pair (transform None) or the keypoint transform stored → query."""

    score: float
    suffix: str
    pair: int
    transform: np.ndarray | None
    coverage: float
    #: for a hash match of a query region (regions.py): region pixels → query pixels, region size
    region: np.ndarray | None = None
    frame: tuple[int, int] | None = None
    #: the appearance check lowered a sure keypoint match's score, with its (exact) alignment
    judged: bool = False
    #: a candidate by its fine cosine alone, beyond the hash stage's bit limit (a page region, a plain query)
    hashless: bool = False


NO_EVIDENCE = Evidence(0.0, "", -1, None, 0.0)


def _fine_candidates(regions: dict[str, np.ndarray], table: FeatureTable, mask: np.ndarray) -> list[np.ndarray]:
    """For each version of the page region: _by_fine. A rectified page is the whole picture, its inner
    crops the closest when the outline took in a little of the table (tuning photos)."""
    n = int(regions["page"]) if regions else 0
    if n == 0:
        return []
    return _by_fine(
        [regions["region_phash"][i] for i in range(n)], [regions["region_fine"][i] for i in range(n)], table, mask
    )


def _by_fine(
    hashes: list[np.ndarray], fines: list[np.ndarray], table: FeatureTable, mask: np.ndarray
) -> list[np.ndarray]:
    """For each version of a plain picture (its crops' pHashes and fine descriptors): the allowed rows
    within PAGE_MAX_BITS of it whose fine cosine with it is ≥ PAGE_FINE_MIN, the PAGE_FINE_ROWS
    closest. Each of its crops against the whole stored picture only (the crop pairs (a, 0)).

    With random pHashes most of a large library lies within PAGE_MAX_BITS, and widening all their
    float16 descriptors took ~100 ms at 100k entries. An upper bound on each cosine first (_fine_bound,
    kept in the table; the first plain query computes it for every row, later ones for new rows only):
    the rows it leaves under PAGE_FINE_MIN for every version cannot pass, and only the others are
    widened. The answer is the one of every row widened."""
    stored_hash = table.col("phash")[:, 0]
    near = []
    for version in hashes:
        bits = np.min([np.bitwise_count(stored_hash ^ h) for h in version], axis=0)
        near.append(mask & (bits <= PAGE_MAX_BITS))
    crops = np.concatenate([np.asarray(f, dtype=np.float32).reshape(-1, F.FINE_DIM) for f in fines])
    # einsum, not a BLAS product: BLAS threads fight each other on a busy machine
    bound = np.einsum("mk,cm->ck", table.derived("fine_bound", FINE_BOUND_DIMS + 1, _fine_bound), _bound_terms(crops))
    rows = np.flatnonzero(np.logical_or.reduce(near) & (bound.max(axis=0) >= PAGE_FINE_MIN - BOUND_SLACK))
    stored = to_float32(table.col("fine")[rows, 0])  # (k, dim), widened once for every version
    out = []
    for i, fine in enumerate(fines):
        cos = np.einsum("kd,cd->kc", stored, np.asarray(fine, dtype=np.float32)).max(axis=1)
        keep = np.flatnonzero((cos >= PAGE_FINE_MIN) & near[i][rows])
        if len(keep) > PAGE_FINE_ROWS:
            keep = keep[np.argpartition(-cos[keep], PAGE_FINE_ROWS - 1)[:PAGE_FINE_ROWS]]
        out.append(rows[keep])
    return out


def _fine_bound(table: FeatureTable, rows: slice) -> np.ndarray:
    """Of each row's whole-picture fine descriptor: its FINE_BOUND_DIMS lowest frequencies, then the
    norm of the others, one row's in a column (FeatureTable.derived)."""
    return _bound_terms(to_float32(table.col("fine")[rows, 0])).T


def _bound_terms(fine: np.ndarray) -> np.ndarray:
    """(k, FINE_BOUND_DIMS + 1) of (k, FINE_DIM) descriptors. Cauchy-Schwarz on the higher frequencies
    gives a · b ≤ a_low · b_low + |a_high| |b_high|: the dot product of two such rows bounds the dot
    product of the two descriptors (their cosine: they are unit vectors) from above."""
    return np.concatenate(
        [fine[:, _BOUND_LOW], np.linalg.norm(fine[:, _BOUND_HIGH], axis=1, keepdims=True)], axis=1, dtype=np.float32
    )


def _regions(img: Image.Image, snapped: bool = True, page: bool = False) -> dict[str, np.ndarray]:
    """Query features of the quadrilateral regions of the query (regions.py; with `page`, first the
    page against the table, page.py): their hashes, their map to query pixels and their size;
    "page": how many of the first versions are the page's (0 when no page was found)."""
    rgb = np.asarray(img.convert("RGB"))
    quads = R.quads(rgb, snapped)
    lit = None  # the query with the table's light divided out, for the page region
    found_page = False
    if page:
        q = P.page_quad(rgb)
        if q is not None:
            # snapped, each half of a side on its own: the outline of a blob found at a third of the
            # size, its corners rounded, is a few pixels off and slightly turned
            q = R.snap(rgb.astype(np.float32), q, tilt=True)
            quads = [q, *(f for f in quads if np.abs(f - q).max() >= 0.03 * max(rgb.shape[:2]))]
            lit = Image.fromarray(np.clip(rgb / P.table_light(rgb)[..., None], 0, 255).astype(np.uint8))
            found_page = True
    if not quads:
        return {}
    phash, fine, to_query, size = [], [], [], []
    for i, q in enumerate(quads):
        rect, h = R.rectify(img, R.inset(q, INSET) if snapped else q)
        # as it is, and with uneven light evened out (a page photographed under a lamp); the page
        # lit evenly by the table's light instead of as it is (a plain page's own gradient is faint
        # beside the lamp's: tuning part, fine cosine median 0.90 as it is, 0.98 so)
        first = R.rectify(lit, q)[0] if i == 0 and lit is not None else rect
        for version in (first, R.even_light(rect)):
            d = G._same_extract(version)
            phash.append(d["phash"])
            fine.append(d["fine"])
            to_query.append(h)
            size.append(rect.size)
    return {
        "region_phash": np.stack(phash),
        "region_fine": np.stack(fine),
        "region_to_query": np.stack(to_query),
        "region_size": np.array(size, dtype=np.int64),
        "page": np.array(2 if found_page else 0),
    }


def _flipped(query: Features) -> Image.Image:
    """The query's mirror image: its working picture (RGB, as the loader gives it) flipped left-right."""
    return Image.fromarray(np.asarray(query["qimg"])).transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def _thumb_of(blob: bytes) -> np.ndarray | None:
    at = K.Keypoints.nbytes_of(blob)
    if len(blob) < at + A.THUMB_BYTES:
        return None
    return np.frombuffer(blob, dtype=np.uint8, count=A.THUMB_BYTES, offset=at).reshape(A.THUMB, A.THUMB, 3)


def _query_size(query: Features) -> tuple[int, int]:
    return K.Keypoints.from_bytes(np.asarray(query[EXTRA]).tobytes()).size


def _spread_features(query: Features, n: int, suffixes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The second round's query keypoints (keypoints.spread_keypoints) of each orientation:
    {"spread<suffix>": serialised keypoints, "usual<suffix>": how many of them are the usual ones}."""
    img = np.asarray(query["qimg"])
    out: dict[str, np.ndarray] = {}
    for suffix in suffixes:
        rgb = img[:, ::-1] if suffix == "_m" else img
        gray = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"))
        first = None
        if USUAL_XY + suffix in query:  # the first round's points (orb_keypoints(gray, n)), not detected again
            stored = K.Keypoints.from_bytes(np.asarray(query[EXTRA + suffix]).tobytes())
            first = K.Keypoints(np.asarray(query[USUAL_XY + suffix]), stored.desc, stored.size)
        kps, usual = K.spread_keypoints(gray, n, first=first)
        out["spread" + suffix] = np.frombuffer(kps.to_bytes(), dtype=np.uint8)
        out["usual" + suffix] = np.array([usual])
    return out


def _query_keypoints(query: Features, suffix: str, spread: bool) -> K.Keypoints:
    """The query's keypoints: the usual ones, or in the second round those with the spread ones."""
    key = ("spread" if spread and "spread" + suffix in query else EXTRA) + suffix
    return K.Keypoints.from_bytes(np.asarray(query[key]).tobytes())


def _voters(query: Features, suffix: str, spread: bool) -> np.ndarray:
    """The strongest QUERY_VOTERS usual descriptors, and in the second round as many spread ones."""
    kps = _query_keypoints(query, suffix, spread)
    usual = query.get("usual" + suffix) if spread else None
    n = len(kps) if usual is None else int(np.asarray(usual)[0])
    voters = kps.desc[: min(n, QUERY_VOTERS)]
    return np.concatenate([voters, kps.desc[n : n + QUERY_VOTERS]]) if usual is not None else voters


def _plain(query: Features) -> bool:
    """A query too plain for the keypoint stage: fewer usual keypoints than PLAIN_POINTS. Known for
    queries with USUAL_XY only."""
    usual = query.get(USUAL_XY)
    return usual is not None and len(usual) < PLAIN_POINTS


def _best(found: dict[int, Evidence]) -> float:
    return max((e.score for e in found.values()), default=0.0)


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
