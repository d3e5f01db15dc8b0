"""One matcher per library, chosen by name (the registry).

same_hq and picturebook use local keypoints (same_image.py, picturebook.py); similar, product and
materiel use the embedding matchers of similar.py when that module is importable, else the
global-descriptor SimilarityMatcher. The import is guarded so that a missing optional model
(or a module not written yet) degrades to the simpler matcher instead of breaking the gallery.
"""

from __future__ import annotations

import logging

from imgsync.localgallery.matchers.base import EXTRA, Features, Field, Matcher
from imgsync.localgallery.matchers.global_descriptors import SimilarityMatcher
from imgsync.localgallery.matchers.picturebook import PictureBookMatcher
from imgsync.localgallery.matchers.same_image import SameImageKeypointMatcher

log = logging.getLogger(__name__)


def _registry() -> dict[str, type[Matcher]]:
    table: dict[str, type[Matcher]] = {
        "same_hq": SameImageKeypointMatcher,
        "similar": SimilarityMatcher,
        "product": SimilarityMatcher,
        "picturebook": PictureBookMatcher,
        "materiel": SimilarityMatcher,
    }
    try:
        from imgsync.localgallery.matchers import similar as S

        table.update(similar=S.SimilarMatcher, product=S.ProductMatcher, materiel=S.FabricMatcher)
    except (ImportError, AttributeError) as e:  # pragma: no cover - depends on the install
        log.warning("embedding matchers unavailable (%s); similar/product/materiel use global descriptors", e)
    return table


_MATCHERS = _registry()


def matcher_for(library: str) -> Matcher:
    """A new matcher serving `library`; KeyError for an unknown name."""
    return _MATCHERS[library]()


__all__ = ["EXTRA", "Features", "Field", "Matcher", "matcher_for"]
