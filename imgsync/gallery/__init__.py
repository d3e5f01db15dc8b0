"""Talking to an image-search gallery: Baidu's cloud API or imgsync's local gallery, one client for both.

    client.GalleryClient   the calls (5 libraries × add/search/update/delete), retries, rate limit, token
    embedded.open_gallery  the configured gallery as a context manager (starts the local one in-process)
"""

from imgsync.gallery.client import GalleryClient, Hit, SearchResult, raise_for_error
from imgsync.gallery.retry import RetryPolicy

__all__ = ["GalleryClient", "Hit", "RetryPolicy", "SearchResult", "raise_for_error"]
