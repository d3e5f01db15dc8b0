"""One matcher per library, chosen by name. Issue #5 swaps in specialised ones per library."""

from __future__ import annotations

from imgsync.localgallery.matchers.base import Features, Field, Matcher
from imgsync.localgallery.matchers.global_descriptors import SameImageMatcher, SimilarityMatcher

_MATCHERS: dict[str, type[Matcher]] = {
    "same_hq": SameImageMatcher,
    "similar": SimilarityMatcher,
    "product": SimilarityMatcher,
    "picturebook": SimilarityMatcher,
    "materiel": SimilarityMatcher,
}


def matcher_for(library: str) -> Matcher:
    """The matcher serving `library`; KeyError for an unknown name."""
    return _MATCHERS[library]()


__all__ = ["Features", "Field", "Matcher", "matcher_for"]
