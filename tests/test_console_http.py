"""The console over real HTTP (requests, no browser): the token on every request, cross-site refusals,
paths confined to the mirrors, thumbnails, Sync now under the state-dir lock, and editing the gallery's
entries. The example catalogue is reconciled into the embedded local gallery first, for real."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import requests

from conftest import make_image
from consoletools import NOTES, TINY, TINY_REASON, catalogue, old, serving
from imgsync.manifest.lock import StateLock


@pytest.fixture
def setup(tmp_path: Path):
    return catalogue(tmp_path)


@pytest.fixture
def console(setup):
    with serving(setup) as running:
        yield running


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory):
    """One reconciled catalogue and its console for the tests that change nothing a page shows."""
    setup = catalogue(tmp_path_factory.mktemp("shared"))
    with serving(setup) as running:
        yield setup, running


def signed_in(console) -> requests.Session:
    session = requests.Session()
    r = session.get(console.login_url, timeout=60)
    assert r.status_code == 200 and r.url == console.url + "/"
    return session


def post(session: requests.Session, console, path: str, **kw) -> requests.Response:
    return session.post(console.url + path, headers={"Origin": console.url, **kw.pop("headers", {})}, timeout=120, **kw)


# --------------------------------------------------------------------------- the token


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/search",
        "/gallery",
        "/mirror?name=catalogue&kind=rejected",
        "/api/status",
        "/static/console.js",
        "/thumb/file?mirror=catalogue&path=boat.jpg",
        "/nope",
    ],
)
def test_every_request_needs_the_token(shared, path: str) -> None:
    _, console = shared
    r = requests.get(console.url + path, timeout=60)
    assert r.status_code == 401
    assert "boat" not in r.text and "catalogue" not in r.text.replace("catalogue&", "")
    wrong = requests.get(console.url + path + ("&" if "?" in path else "?") + "token=" + "x" * 32, timeout=60)
    assert wrong.status_code == 401


def test_the_token_becomes_an_httponly_strict_cookie_and_leaves_the_address_bar(shared) -> None:
    _, console = shared
    r = requests.get(console.url + "/search?token=" + console.token, allow_redirects=False, timeout=60)
    assert r.status_code == 303 and r.headers["Location"] == "/search"
    cookie = r.headers["Set-Cookie"]
    assert console.token in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = signed_in(console)
    page = session.get(console.url + "/search", timeout=60)
    assert page.status_code == 200 and console.token not in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"


def test_a_foreign_host_name_gets_nothing(shared) -> None:
    _, console = shared
    # DNS rebinding: evil.example resolves to 127.0.0.1; the browser sends Host: evil.example:PORT.
    r = requests.get(console.login_url, headers={"Host": "evil.example"}, timeout=60, allow_redirects=False)
    assert r.status_code == 421 and "Set-Cookie" not in r.headers


# --------------------------------------------------------------------------- cross-site requests


def test_state_changing_requests_from_elsewhere_are_refused(console, setup) -> None:
    session = signed_in(console)
    for headers in (
        {},
        {"Origin": "http://127.0.0.1:1"},
        {"Origin": "null"},
        {"Origin": console.url, "Sec-Fetch-Site": "same-site"},
    ):
        r = session.post(console.url + "/api/sync", json={"mirror": "catalogue"}, headers=headers, timeout=60)
        assert r.status_code == 403, headers
        assert "refused" in r.json()["error"]
    assert session.get(console.url + "/api/status", timeout=60).status_code == 200
    # Nothing ran: the last run is still the one the fixture's reconcile made.
    with setup.open() as sync:
        runs_before = sync.status(limit=0).mirrors[0].last_run.id
    r = post(session, console, "/api/sync", json={"mirror": "catalogue"})
    assert r.status_code == 202
    job = _wait_job(session, console, r.json()["id"])
    assert job["state"] == "done" and job["exit_code"] == 0
    with setup.open() as sync:
        assert sync.status(limit=0).mirrors[0].last_run.id > runs_before


def _wait_job(session, console, job_id: str) -> dict:
    from conftest import wait_until

    seen: dict = {}

    def finished() -> bool:
        seen.update(session.get(f"{console.url}/api/jobs?id={job_id}", timeout=60).json())
        return seen["state"] != "running"

    wait_until(finished, timeout=180, what="the sync job to end")
    return seen


# --------------------------------------------------------------------------- paths and thumbnails


def test_thumbnails_only_for_files_inside_the_mirror(shared, tmp_path: Path) -> None:
    setup, console = shared
    secret = tmp_path / "outside" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(make_image(99))
    (setup.folder / "link-out.jpg").symlink_to(secret)
    (setup.folder / "dir-out").symlink_to(secret.parent, target_is_directory=True)
    session = signed_in(console)

    def thumb(path: str, mirror: str = "catalogue") -> requests.Response:
        return session.get(f"{console.url}/thumb/file", params={"mirror": mirror, "path": path}, timeout=60)

    ok = thumb("boat.jpg")
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "image/jpeg"
    for path in [
        "../outside/secret.jpg",
        "../config.toml",
        str(secret),
        str(setup.folder / "boat.jpg"),
        "link-out.jpg",
        "dir-out/secret.jpg",
        "./boat.jpg",
        "a/../boat.jpg",
    ]:
        r = thumb(path)
        assert r.status_code == 403, path
        assert r.headers["Content-Type"].startswith("text/plain")
    raw = session.get(f"{console.url}/thumb/file?mirror=catalogue&path=%2e%2e%2foutside%2fsecret.jpg", timeout=60)
    assert raw.status_code == 403
    assert thumb("nope.jpg").status_code == 404
    assert thumb("boat.jpg", mirror="../catalogue").status_code == 404


def test_rejected_files_have_thumbnails_where_they_decode(shared) -> None:
    setup, console = shared
    session = signed_in(console)
    page = session.get(console.url + "/mirror", params={"name": "catalogue", "kind": "rejected"}, timeout=60)
    assert page.status_code == 200
    assert TINY in page.text and TINY_REASON in page.text and NOTES in page.text
    tiny = session.get(f"{console.url}/thumb/file", params={"mirror": "catalogue", "path": TINY}, timeout=60)
    notes = session.get(f"{console.url}/thumb/file", params={"mirror": "catalogue", "path": NOTES}, timeout=60)
    assert tiny.headers["Content-Type"] == "image/jpeg"
    assert notes.headers["Content-Type"] == "image/svg+xml" and b"no preview" in notes.content
    assert list((setup.state / "console" / "thumbs").glob("*/*.jpg"))  # kept in the state dir
    again = session.get(
        f"{console.url}/thumb/file",
        params={"mirror": "catalogue", "path": TINY},
        timeout=60,
        headers={"If-None-Match": tiny.headers["ETag"]},
    )
    assert again.status_code == 304


def test_a_file_name_that_is_not_utf8_is_listed_and_pictured(tmp_path: Path) -> None:
    setup = catalogue(tmp_path, extra=False)
    name = os.fsdecode(b"caf\xe9-small.png")  # Latin-1 bytes: not valid UTF-8
    from consoletools import tiny_png

    old_path = setup.folder / name
    old_path.write_bytes(tiny_png())
    old(old_path)
    with setup.open() as sync:
        sync.reconcile(["catalogue"])
    with serving(setup) as console:
        session = signed_in(console)
        page = session.get(console.url + "/mirror?name=catalogue&kind=rejected", timeout=60)
        assert "caf\\xe9-small.png" in page.text
        src = re.search(r'src="(/thumb/file\?[^"]+)"', page.text).group(1).replace("&amp;", "&")
        assert "caf%E9-small.png" in src
        r = session.get(console.url + src, timeout=60)
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"


# --------------------------------------------------------------------------- sync now and the lock


def test_sync_now_is_refused_cleanly_while_another_run_holds_the_lock(console, setup) -> None:
    session = signed_in(console)
    with StateLock(setup.state):
        r = post(session, console, "/api/sync", json={"mirror": "catalogue"})
        assert r.status_code == 202
        job = _wait_job(session, console, r.json()["id"])
    assert job["state"] == "refused"
    assert f"pid {os.getpid()}" in job["message"] and "holds" in job["message"]
    assert "Try again" in job["message"]
    assert post(session, console, "/api/sync", json={"mirror": "nope"}).status_code == 404


# --------------------------------------------------------------------------- the gallery's entries


def test_entries_no_mirror_manages_can_be_edited_and_deleted_a_mirrors_cannot(console, setup) -> None:
    with setup.open() as sync, sync.open_gallery() as gallery:
        foreign = gallery.add("same_hq", image=make_image(500), brief="added by another tool", tags=[7])
    session = signed_in(console)
    page = session.get(console.url + "/gallery?library=same_hq", timeout=60)
    assert "added by another tool" in page.text and page.text.count('class="edit"') == 1
    assert page.text.count("Managed by mirror") == 6

    r = post(
        session,
        console,
        "/api/entry/edit",
        json={"library": "same_hq", "cont_sign": foreign, "brief": "renamed", "tags": "8,9"},
    )
    assert r.status_code == 200, r.text
    with setup.open() as sync:
        entry = next(e for e in sync.entries("same_hq").entries if e.cont_sign == foreign)
    assert (entry.brief, entry.tags, entry.mirror) == ("renamed", (8, 9), None)

    with setup.open() as sync:
        managed = next(e for e in sync.entries("same_hq").entries if e.mirror == "catalogue")
    for path, body in [("/api/entry/edit", {"brief": "x"}), ("/api/entry/delete", {})]:
        r = post(session, console, path, json={"library": "same_hq", "cont_sign": managed.cont_sign, **body})
        assert r.status_code == 409 and "mirror 'catalogue'" in r.json()["error"]

    r = post(session, console, "/api/entry/delete", json={"library": "same_hq", "cont_sign": foreign})
    assert r.status_code == 200
    with setup.open() as sync:
        signs = {e.cont_sign for e in sync.entries("same_hq").entries}
    assert foreign not in signs and managed.cont_sign in signs and len(signs) == 6
    gone = post(session, console, "/api/entry/delete", json={"library": "same_hq", "cont_sign": foreign})
    assert gone.status_code == 404


def test_a_fresh_state_dir_shows_how_to_start(tmp_path: Path) -> None:
    from consoletools import Setup

    config = tmp_path / "config.toml"
    config.write_text("")
    setup = Setup(config, tmp_path / "state", tmp_path, tmp_path)
    with serving(setup) as console:
        session = signed_in(console)
        assert "No mirror yet" in session.get(console.url + "/", timeout=60).text
        assert "No entries in same_hq" in session.get(console.url + "/gallery", timeout=60).text


def test_a_mirror_remembered_by_another_command_shows_at_once(console, setup, tmp_path: Path) -> None:
    session = signed_in(console)
    assert 'data-mirror="later"' not in session.get(console.url + "/", timeout=60).text
    later = tmp_path / "later"
    later.mkdir()
    (later / "one.jpg").write_bytes(make_image(61))
    old(later / "one.jpg")
    with setup.open() as sync:  # as `imgsync reconcile FOLDER` in another terminal would
        sync.reconcile([later])
    page = session.get(console.url + "/", timeout=60).text
    assert 'data-mirror="later"' in page and 'data-mirror="catalogue"' in page


def test_search_by_url_lets_the_gallery_fetch_the_image(tmp_path: Path, gallery_server) -> None:
    import http.server
    import threading
    from functools import partial

    from consoletools import EXAMPLES

    setup = catalogue(tmp_path, gallery=gallery_server, extra=False)  # this gallery may fetch from loopback
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(EXAMPLES))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    try:
        with serving(setup) as console:
            session = signed_in(console)
            query = f"http://127.0.0.1:{files.server_address[1]}/query.jpg"
            r = post(session, console, "/api/search?in=mirror:catalogue", json={"url": query})
            assert r.status_code == 200, r.text
            assert r.json()["hits"][0]["paths"] == [str(setup.folder / "boat.jpg")]
            bad = post(session, console, "/api/search?in=mirror:catalogue", json={"url": "file:///etc/passwd"})
            assert bad.status_code == 400 and "http(s) URL" in bad.json()["error"]
    finally:
        files.shutdown()
        files.server_close()
