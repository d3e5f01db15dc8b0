"""The gallery extra, as the installed package declares it: `pip install imgsync` pulls in none of the local
gallery's packages (not even through another dependency), and imgsync.gallery.extra names exactly the modules
the `gallery` extra's packages provide (the one check for "is the gallery installed" must not drift)."""

from __future__ import annotations

import re
from importlib import metadata

from packaging.requirements import Requirement

from imgsync.gallery.extra import GALLERY_MODULES


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(dist: str, extra: str | None = None) -> set[str]:
    """The distributions `dist` requires: unconditionally, or (with `extra`) for that extra alone."""
    out = set()
    for text in metadata.requires(dist) or []:
        req = Requirement(text)
        if extra is None and req.marker is None:
            out.add(canonical(req.name))
        elif (
            extra is not None
            and req.marker is not None
            and req.marker.evaluate({"extra": extra})
            and not req.marker.evaluate({"extra": ""})
        ):
            out.add(canonical(req.name))
    return out


def test_the_light_install_pulls_in_none_of_the_gallerys_packages() -> None:
    gallery = requirements("imgsync", "gallery")
    assert {"numpy", "opencv-python-headless", "onnxruntime", "faiss-cpu"} <= gallery
    seen: set[str] = set()
    todo = list(requirements("imgsync"))
    while todo:  # everything `pip install imgsync` installs, transitively
        dist = todo.pop()
        if dist not in seen:
            seen.add(dist)
            todo += requirements(dist)
    assert seen and not seen & gallery, f"the light install would install {sorted(seen & gallery)}"


def test_gallery_modules_are_what_the_gallery_extra_installs() -> None:
    gallery = requirements("imgsync", "gallery")
    provided = {
        module
        for module, dists in metadata.packages_distributions().items()
        if module.isidentifier() and any(canonical(d) in gallery for d in dists)
    }
    assert provided == set(GALLERY_MODULES)
