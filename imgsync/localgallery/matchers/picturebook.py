"""picturebook: find the printed page from a phone photo of it (perspective, uneven light, blur,
noise, the table around the page, or only part of the page in the frame).

ORB keypoints (600 per page) + ratio test + RANSAC *homography* (a flat page seen at an angle) with
a sanity check on the homography (keypoints.sane_transform); a shortlist by descriptor voting
(64 spread descriptors per page in a faiss binary index) keeps a 10k-page library fast: only the
best-voted 24 pages are verified. The hash stage of local.py still answers exact and re-encoded
copies, including pages too plain for keypoints; a phone photo of such a page is found by its
regions (regions.py), the page told from the table by colour first (page.py). Score = inlier
confidence (no coverage penalty: a photo of half a page is still that page); results below 0.3
are dropped.

Memory per page: ≈ 2.9 kB in the table + 64 x 40 B in faiss; the keypoints (~22 kB) stay in SQLite.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from imgsync.localgallery.matchers.local import LocalFeatureMatcher


class PictureBookMatcher(LocalFeatureMatcher):
    name: ClassVar[str] = "picturebook/phash64x3+dct143+orb600-homography+look32-v2"
    n_keypoints: ClassVar[int] = 600
    vote_cap: ClassVar[int] = 64
    model: ClassVar[Literal["homography", "similarity"]] = "homography"
    mirror: ClassVar[bool] = False
    verify_cap: ClassVar[int] = 24
    coverage_weight: ClassVar[float] = 0.0
    floor: ClassVar[float] = 0.3
    # A phone photo shifts colours (warm light, a gradient across the page) far more than a copy
    # does, and part of a page is still the page: looser appearance limits, no coverage limit.
    other_look: ClassVar[tuple[float, float]] = (0.9, 0.1)
    same_look: ClassVar[tuple[float, float]] = (0.7, 0.3)
    same_coverage: ClassVar[float] = 0.0
    spread_query: ClassVar[bool] = False
    # A photographed page's border is blurred and unevenly lit: snapping its sides found no page
    # more on the tuning part and moved one lookalike's outline onto a false "same" (0.91).
    snap_regions: ClassVar[bool] = False
    page_regions: ClassVar[bool] = True
