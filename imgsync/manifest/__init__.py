"""The manifest: what each mirror's gallery holds, in SQLite (schema owned by Alembic migrations).

Public API: Store (takes and returns imgsync.model values and the records below, never ORM rows) and
StateLock (one reconcile/watch per state dir).
"""

from imgsync.manifest.lock import StateLock
from imgsync.manifest.store import ContSignTakenError, JournalItem, MirrorState, RunInfo, Store

__all__ = ["ContSignTakenError", "JournalItem", "MirrorState", "RunInfo", "StateLock", "Store"]
