"""imgsync: keep a folder of images and an image-search gallery library in step.

    from imgsync import Imgsync
    with Imgsync.open() as sync:
        sync.reconcile(["~/Pictures"])

See imgsync.api (loaded on first use, so `import imgsync` stays cheap).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from imgsync.api import Hit, Imgsync, Status, SyncResult

__all__ = ["Hit", "Imgsync", "Status", "SyncResult", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Imgsync", "Hit", "Status", "SyncResult"):
        from imgsync import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
