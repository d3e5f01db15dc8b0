"""The manifest: what each mirror's gallery holds, in SQLite (schema owned by Alembic migrations).

Public API: Store (takes and returns imgsync.model values and the records below, never ORM rows),
StateLock (one reconcile/watch per state dir), and lite (answers that need no SQLAlchemy). Names are
loaded on first use: `imgsync status` and a no-op `imgsync reconcile` never import SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imgsync.manifest.lock import StateLock
from imgsync.manifest.records import MANIFEST_NAME, MirrorState, RunInfo

if TYPE_CHECKING:
    from imgsync.manifest.store import ContSignTakenError, JournalItem, Store

__all__ = ["MANIFEST_NAME", "ContSignTakenError", "JournalItem", "MirrorState", "RunInfo", "StateLock", "Store"]


def __getattr__(name: str) -> Any:
    if name in ("Store", "ContSignTakenError", "JournalItem"):
        from imgsync.manifest import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
