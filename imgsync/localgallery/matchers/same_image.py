"""same_hq: find the same picture, also when it was cropped, watermarked, rotated a few degrees,
mirrored, or pasted into a larger image (Baidu: "a large image containing the local content").

Hash stage for the easy edits (resize, re-compression, brightness, format); ORB keypoints with a
*similarity* transform (rotation + uniform scale + shift: what copying, cropping and pasting do to
a picture) for the rest; the mirrored query is tried when the picture is not found as it is.
Only results scoring ≥ 0.6 are returned: same_hq is a same-image search, an unrelated picture is
not a result at all. See local.py for the stages and the score.

Memory per entry in the in-memory table: 24 B pHash + 858 B fine descriptor + 32 x 32 B vote
descriptors ≈ 1.9 kB (≈ 190 MB at 100k entries), plus the faiss copy of the vote descriptors
(≈ 40 B per descriptor). The full keypoint sets (~400 x 36 B ≈ 14 kB per entry) stay in SQLite.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from imgsync.localgallery.matchers.local import LocalFeatureMatcher


class SameImageKeypointMatcher(LocalFeatureMatcher):
    name: ClassVar[str] = "same-image/phash64x3+dct143+orb400-sim+vote16coarse+look32-v3"
    n_keypoints: ClassVar[int] = 400
    vote_cap: ClassVar[int] = 32
    model: ClassVar[Literal["homography", "similarity"]] = "similarity"
    mirror: ClassVar[bool] = True
    verify_cap: ClassVar[int] = 12
    coverage_weight: ClassVar[float] = 0.1
    floor: ClassVar[float] = 0.6
    # Half the points for a low-texture picture: its second-round query points find it (regions
    # too), and every point costs the 100k-entry search time (bench_gallery's smooth synthetic
    # pictures: p50 83 -> 22 ms on the loaded machine with 200 instead of 400).
    low_texture_share: ClassVar[float] = 0.5
    # A picture pasted into a larger image reaches the matcher at about half its size (the loader
    # shrinks a large query to a shortest side of 256 px), where its fine points are gone: half the
    # vote descriptors come from coarse pyramid levels, which it still shows (keypoints.
    # scale_spread_subset). Tuning part, contained in larger, seeds 1-20: 274/280 -> 280/280 top-1
    # (the misses, a detailed terrain rendering, had 80 inliers but ranked 12-15th by votes).
    coarse_votes: ClassVar[float] = 0.5
    # A plain picture's copies may land beyond the hash stage's bit limit (a gradient's pHash is mostly
    # noise bits): a plain query found by nothing else is looked for by its fine descriptor, and a row
    # found that way must line up almost exactly in grey levels (luma correlation >= 0.99). Tuning
    # part's plain gradients: their copies 0.997 and up, other gradients that pass the colour check
    # <= 0.976 (docs/matching-keypoints.md, sixth round).
    plain_by_fine: ClassVar[bool] = True
    hashless_detail: ClassVar[float] = 0.99
    # What the grey-level stages cannot see: a coloured query over a grey stored picture is another
    # picture (a grey one explains no colour, so the colour check had skipped it); one lit over twice
    # as bright or half as dark is related, not the same. Tuning part's plain gradients, other
    # gradients at >= 0.9: 10 -> 4 -> 3 of 96 (tint 4, 8 and 16 alike; light 1.5 gives 2, 3 gives 3).
    grey_tint: ClassVar[float] = 8.0
    same_light: ClassVar[float] = 2.0
