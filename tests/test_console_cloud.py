"""The console against a gallery reached by URL, as the cloud is (here a local gallery served over HTTP
with its own key): in a process of its own, every page is served and a search made, then the process
reports what it imported and what its pages said. None of the local gallery's search engine may be
loaded (a cloud user may not even have it installed), and no key or secret may reach a page."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

from consoletools import EXAMPLES, TINY, TINY_REASON, catalogue

#: The local gallery's search engine: what a console for the cloud must not import.
HEAVY = (
    "numpy",
    "cv2",
    "onnxruntime",
    "faiss",
    "imgsync.localgallery.engine",
    "imgsync.localgallery.matchers",
    "imgsync.localgallery.images",
)

PROBE = r"""
import json, sys
from pathlib import Path
import requests
from imgsync.api import Imgsync
from imgsync.console import start_console

config, state, query = sys.argv[1:4]
running = start_console(lambda: Imgsync.open(config, state_dir=state), Path(state), port=0)
s = requests.Session()
base = running.url
pages = {"login": s.get(running.login_url, timeout=120).text}
for path in ["/", "/search", "/gallery?library=same_hq", "/gallery?library=similar",
             "/mirror?name=catalogue&kind=rejected", "/mirror?name=catalogue&kind=pending", "/api/status",
             "/static/console.js"]:
    r = s.get(base + path, timeout=120)
    pages[path] = f"{r.status_code} {r.text}"
thumb = s.get(base + "/thumb/file?mirror=catalogue&path=boat.jpg", timeout=120)
search = s.post(base + "/api/search?in=mirror:catalogue", data=Path(query).read_bytes(),
                headers={"Origin": base, "Content-Type": "image/jpeg"}, timeout=120)
pages["search"] = search.text
first = search.json()["hits"][0]
first_thumb = s.get(base + first["thumb"], timeout=120)
running.stop()
print(json.dumps({
    "modules": sorted(sys.modules),
    "pages": pages,
    "thumb": [thumb.status_code, thumb.headers["Content-Type"]],
    "first": first,
    "first_thumb": [first_thumb.status_code, first_thumb.headers["Content-Type"]],
}))
"""


def test_a_console_for_a_gallery_by_url_shows_everything_without_the_search_engine_or_a_secret(tmp_path: Path) -> None:
    from imgsync.localgallery.server import start_in_thread

    api_key, secret_key = f"ak-{secrets.token_hex(8)}", f"sk-{secrets.token_hex(12)}"
    gallery = start_in_thread(tmp_path / "gallery", port=0, keys=[(api_key, secret_key)])
    try:
        setup = catalogue(tmp_path, gallery=gallery)
        assert api_key in setup.config.read_text()
        out = subprocess.run(
            [sys.executable, "-c", PROBE, str(setup.config), str(setup.state), str(EXAMPLES / "query.jpg")],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        gallery.stop()
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)

    # Heavy parts: none.
    loaded = [m for m in report["modules"] if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == []

    pages = report["pages"]
    for name, text in pages.items():
        assert api_key not in text and secret_key not in text, name
        if name.startswith("/"):
            assert text.startswith("200 "), (name, text[:300])
    assert "catalogue" in pages["/"] and gallery.url in pages["/"]  # the endpoint is shown, its keys are not
    assert "the manifest's view" in pages["/gallery?library=same_hq"]
    assert pages["/gallery?library=same_hq"].count("Managed by mirror") == 6
    assert (
        TINY in pages["/mirror?name=catalogue&kind=rejected"]
        and TINY_REASON in pages["/mirror?name=catalogue&kind=rejected"]
    )
    assert report["thumb"] == [200, "image/jpeg"]
    # The hit leads to the local file through the manifest, and to its thumbnail.
    assert report["first"]["paths"] == [str(setup.folder / "boat.jpg")]
    assert report["first"]["thumb"].endswith("path=boat.jpg")
    assert report["first_thumb"] == [200, "image/jpeg"]
