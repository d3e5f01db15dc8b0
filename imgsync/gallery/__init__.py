"""Talking to an image-search gallery: Baidu's cloud API or imgsync's local gallery, one client for both.

    Gallery                the calls the engine makes, as a protocol (the executor and the daemon take one)
    client.GalleryClient   its implementation: 5 libraries × add/search/update/delete, retries, rate
                           limit, token; foreign errors become imgsync.errors at this one boundary
    identity               which gallery a config points at, as the manifest records it

The client is loaded on first use (requests costs more than a no-op reconcile's whole walk).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from imgsync.gallery.client import GalleryClient, Hit, SearchResult, raise_for_error
    from imgsync.gallery.retry import RetryPolicy

__all__ = ["Gallery", "GalleryClient", "Hit", "RetryPolicy", "SearchResult", "raise_for_error"]


class Gallery(Protocol):
    """What the executor needs of a gallery (GalleryClient is it; tests may wrap one to inject faults)."""

    def add(
        self,
        library: str,
        *,
        image: bytes,
        brief: str,
        tags: Sequence[int] = (),
        class_ids: tuple[int | None, int | None] | None = None,
    ) -> str: ...
    def search(self, library: str, *, image: bytes, rn: int | None = None) -> object: ...
    def update(
        self,
        library: str,
        *,
        cont_sign: str,
        brief: str | None = None,
        tags: Sequence[int] | None = None,
        class_ids: tuple[int | None, int | None] | None = None,
    ) -> None: ...
    def delete_many(self, library: str, cont_signs: Sequence[str]) -> None: ...


def __getattr__(name: str) -> Any:
    if name in ("GalleryClient", "Hit", "SearchResult", "raise_for_error"):
        from imgsync.gallery import client

        return getattr(client, name)
    if name == "RetryPolicy":
        from imgsync.gallery.retry import RetryPolicy

        return RetryPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
