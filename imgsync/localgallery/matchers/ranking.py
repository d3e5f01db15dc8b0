"""Pure search decisions: which rows the filters allow, and which ranked rows fall on a page."""

from __future__ import annotations

import numpy as np

from imgsync.libraries import MAX_RESULTS

AND, OR = 0, 1


def filter_mask(
    alive: np.ndarray,
    tags: np.ndarray,
    class_ids: np.ndarray,
    *,
    want_tags: tuple[int, ...] = (),
    tag_logic: int = AND,
    want_classes: tuple[int | None, int | None] = (None, None),
) -> np.ndarray:
    """Rows a search may return, decided BEFORE ranking so a filtered search sees every match.

    tags: AND (tag_logic 0) = the entry carries every query tag; OR (1) = at least one.
    class ids (product): each given id must equal the entry's id in the same position.
    """
    mask = alive.copy()
    if want_tags:
        hits = [(tags[:, 0] == t) | (tags[:, 1] == t) for t in want_tags]
        mask &= np.logical_and.reduce(hits) if tag_logic == AND else np.logical_or.reduce(hits)
    for i, c in enumerate(want_classes):
        if c is not None:
            mask &= class_ids[:, i] == c
    return mask


def rank_page(
    rows: np.ndarray, scores: np.ndarray, seq: np.ndarray, pn: int, rn: int, cap: int = MAX_RESULTS
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(rows, scores, has_more) for page [pn, pn+rn) of the ranking, best first.

    Ties are broken by insertion order (seq), so pages do not shuffle between calls. Only the best
    `cap` results exist at all, as in the cloud; has_more says whether any lie beyond this page.
    """
    if len(rows) > cap:
        # Keep the cap best, and every row tied with the cap-th, before the exact sort.
        kth = np.partition(scores, len(scores) - cap)[len(scores) - cap]
        keep = scores >= kth
        rows, scores = rows[keep], scores[keep]
    order = np.lexsort((seq[rows], -scores))[:cap]
    page = order[pn : pn + rn]
    return rows[page], scores[page], len(order) > pn + rn
