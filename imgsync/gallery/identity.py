"""Which gallery a config points at, as the manifest records it (pipeline.bind_gallery). Light: the
no-op reconcile compares it with the manifest's binding before anything else is imported."""

from __future__ import annotations

import hashlib
from pathlib import Path

from imgsync.config import Config
from imgsync.statedir import gallery_dir


def local_data_dir(config: Config) -> Path:
    return gallery_dir(config.state_dir)


def gallery_identity(config: Config) -> str:
    """Which gallery the config points at, as the manifest records it: the endpoint and a digest of the
    API key (an account; never the key itself). For the embedded gallery, its data dir's own key: a
    gallery dir deleted and made anew is another gallery."""
    g = config.gallery
    if g.endpoint == "local":
        from imgsync.localgallery.auth import read_key

        try:
            key = read_key(local_data_dir(config))
        except (OSError, ValueError, KeyError, TypeError):
            key = None
        return f"local#{_digest(key[0] if key else '(new)')}"
    return f"{g.endpoint}#{_digest(g.api_key or '')}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]
