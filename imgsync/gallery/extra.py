"""Is the local gallery installed? `pip install imgsync` is the sync engine and the cloud client only; the local
gallery's search engine and server come with `pip install 'imgsync[gallery]'`.

Asked in one place, before anything starts the embedded gallery, serves or reads one: the answer is one line
that says what to install (or where else to point), never an ImportError from deep inside the gallery.
"""

from __future__ import annotations

import importlib.util

from imgsync.errors import GalleryNotInstalledError

#: The top-level modules of the `gallery` extra's packages (pyproject.toml; a test keeps the two in step).
GALLERY_MODULES = ("numpy", "cv2", "onnxruntime", "faiss")  # waitress is in the base install (the console)
INSTALL_HINT = "pip install 'imgsync[gallery]'"
#: For the embedded gallery (endpoint = "local"): pointing at another gallery does as well as installing it.
ELSEWHERE_HINT = (
    'or set [gallery] endpoint to the cloud ("https://aip.baidubce.com", with your keys) or to a served gallery\'s URL'
)


def missing_gallery_modules() -> list[str]:
    """The gallery's modules this Python cannot import. find_spec locates a module without importing it
    (importing them all would cost the seconds a light install is meant to save)."""
    return [name for name in GALLERY_MODULES if importlib.util.find_spec(name) is None]


def gallery_missing(missing: list[str]) -> str:
    """ "not installed" for a light install (it lacks them all); a broken one is told which are missing."""
    if len(missing) == len(GALLERY_MODULES):
        return "not installed"
    return f"not fully installed (no {', '.join(missing)})"


def require_local_gallery(needed_by: str, *, elsewhere: bool = False) -> None:
    """Raise GalleryNotInstalledError, naming `needed_by` and what to install, when the gallery is missing.
    `elsewhere`: also say that pointing at another gallery does instead (for the endpoint, not `gallery serve`)."""
    missing = missing_gallery_modules()
    if missing:
        raise GalleryNotInstalledError(
            f"{needed_by} needs the local gallery, which is {gallery_missing(missing)}: "
            f"{INSTALL_HINT}" + (f", {ELSEWHERE_HINT}" if elsewhere else "")
        )
