"""The console in a real browser: Debian's chromium driven by Playwright for Python (its own browser
download is never used). The example catalogue is reconciled for real first; every wait is on a
condition in the page, never a sleep. Screenshots go to $IMGSYNC_SCREENSHOTS, else a temp dir; the
run's summary names it.

If no browser can start here (chromium not installed, Playwright missing), these tests skip and say
why: `apt-get install chromium chromium-driver` and `pip install playwright` (.ci/run does both)."""

from __future__ import annotations

import base64
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from conftest import SCREENSHOTS, make_image
from consoletools import EXAMPLES, NOTES, TINY, TINY_REASON, catalogue, old, serving
from imgsync.manifest.lock import StateLock

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
#: Generous: a first search starts the local gallery's engine, on a busy 2-core machine.
WAIT_MS = 120_000


def screenshot_dir() -> Path:
    where = Path(os.environ.get("IMGSYNC_SCREENSHOTS") or Path(tempfile.gettempdir()) / "imgsync-console-screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("no browser: Playwright for Python is not installed (pip install playwright)")
    executable = os.environ.get("IMGSYNC_CHROMIUM") or next(
        (c for c in CHROMIUM_CANDIDATES if os.path.exists(c)), shutil.which("chromium")
    )
    if not executable:
        pytest.skip("no browser: chromium is not installed (apt-get install chromium chromium-driver)")
    with sync_playwright() as p:
        try:
            # launch() gives the browser a fresh temporary profile (--user-data-dir) of its own.
            launched = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Error as e:
            pytest.skip(f"no browser: {executable} does not start here: {str(e).splitlines()[0]}")
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh browser context (no cookie) and page; dialogs (the console's confirmations) accepted."""
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("dialog", lambda dialog: dialog.accept())
    try:
        yield tab
        assert errors == [], f"script errors in the page: {errors}"
    finally:
        context.close()


@pytest.fixture
def shot(pytestconfig: pytest.Config):
    """shot(page, name): save a screenshot of the whole page (the run's summary names the folder)."""

    def take(tab, name: str) -> Path:
        path = screenshot_dir() / f"{name}.png"
        tab.screenshot(path=str(path), full_page=True)
        pytestconfig.stash.setdefault(SCREENSHOTS, []).append(path)
        return path

    return take


@pytest.fixture(scope="module")
def two_mirrors(tmp_path_factory: pytest.TempPathFactory):
    """The catalogue (6 pictures, 2 rejected files) and a second mirror of 2 pictures, one console."""
    setup = catalogue(tmp_path_factory.mktemp("browser"))
    second = setup.tmp / "drawings"
    second.mkdir()
    for i in range(2):
        (second / f"drawing-{i}.jpg").write_bytes(make_image(300 + i))
        old(second / f"drawing-{i}.jpg")
    with setup.open() as sync:
        sync.reconcile([second])
    with serving(setup) as running:
        yield setup, running


# --------------------------------------------------------------------------- tests


def test_the_token_is_required(page, two_mirrors) -> None:
    setup, console = two_mirrors
    response = page.goto(console.url + "/")
    assert response.status == 401
    assert "needs its access token" in page.inner_text("#error-message")
    assert "catalogue" not in page.content()
    assert page.goto(console.url + "/?token=not-the-token").status == 401
    assert page.goto(console.url + "/static/console.js").status == 401
    page.goto(console.login_url)
    assert page.url == console.url + "/"  # the token left the address bar
    page.wait_for_selector("article.mirror")
    assert page.goto(console.url + "/search").status == 200  # the cookie carries it from now on
    assert console.token not in page.content()


def test_the_mirrors_page_names_each_mirror_and_its_counts(page, shot, two_mirrors) -> None:
    setup, console = two_mirrors
    page.goto(console.login_url)
    cards = page.locator("article.mirror")
    assert cards.count() == 2
    catalogue_card = page.locator('article.mirror[data-mirror="catalogue"]')
    assert catalogue_card.locator("h2").inner_text() == "catalogue"
    assert str(setup.folder) in catalogue_card.inner_text()
    assert catalogue_card.locator('[data-count="synced"]').inner_text() == "6"
    assert catalogue_card.locator('[data-count="rejected"]').inner_text() == "2"
    assert catalogue_card.locator('[data-count="pending"]').inner_text() == "0"
    drawings = page.locator('article.mirror[data-mirror="drawings"]')
    assert drawings.locator('[data-count="synced"]').inner_text() == "2"
    assert drawings.locator('[data-count="rejected"]').inner_text() == "0"
    assert "same_hq" in drawings.inner_text() and "Last run: ok" in drawings.inner_text()
    assert "embedded local gallery" in page.inner_text(".summary") and "bound" in page.inner_text(".summary")
    shot(page, "mirrors")


def test_uploading_a_query_shows_the_right_files_thumbnail_first(page, shot, two_mirrors) -> None:
    setup, console = two_mirrors
    page.goto(console.login_url)
    page.click("text=Search by image")
    page.set_input_files("#query-file", str(EXAMPLES / "query.jpg"))
    page.wait_for_selector("#query-preview:not([hidden])")
    page.click("#search-button")
    first = page.locator("li.hit").first
    first.locator("img").wait_for()
    page.wait_for_function(
        "() => { const i = document.querySelector('li.hit img'); return i && i.complete && i.naturalWidth > 0; }"
    )
    assert first.locator(".path").first.inner_text() == str(setup.folder / "boat.jpg")
    src = first.locator("img").get_attribute("src")
    assert src == "/thumb/file?mirror=catalogue&path=boat.jpg"
    assert float(first.locator(".score").inner_text()) > 0.9
    # The picture shown is boat.jpg's thumbnail, not a placeholder.
    thumb = page.request.get(console.url + src)
    assert thumb.headers["content-type"] == "image/jpeg"
    assert _looks_alike(thumb.body(), (setup.folder / "boat.jpg").read_bytes())
    shot(page, "search")
    # the chooser stays for the next query (setting the status text once replaced it along with the hint)
    page.set_input_files("#query-file", str(setup.folder / "house.jpg"))
    page.wait_for_function("() => document.getElementById('drop-status').textContent.startsWith('house.jpg')")
    page.click("#search-button")
    page.wait_for_function(
        "() => { const p = document.querySelector('li.hit .path'); return p && p.textContent.endsWith('house.jpg'); }"
    )


def test_a_dropped_or_pasted_query_works_too(page, two_mirrors) -> None:
    setup, console = two_mirrors
    page.goto(console.login_url)
    page.goto(console.url + "/search")
    data = base64.b64encode((setup.tmp / "drawings" / "drawing-1.jpg").read_bytes()).decode()
    transfer = page.evaluate_handle(
        "(b64) => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));"
        " const dt = new DataTransfer(); dt.items.add(new File([bytes], 'q.jpg', {type: 'image/jpeg'})); return dt; }",
        data,
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.select_option("#scope", "library:same_hq")
    page.click("#search-button")
    page.wait_for_selector("li.hit")
    assert page.locator("li.hit .path").first.inner_text().endswith("drawing-1.jpg")
    # Paste: the clipboard's image replaces the query.
    data = base64.b64encode((setup.folder / "house.jpg").read_bytes()).decode()
    page.evaluate(
        "(b64) => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));"
        " const dt = new DataTransfer(); dt.items.add(new File([bytes], 'p.jpg', {type: 'image/jpeg'}));"
        " document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt})); }",
        data,
    )
    page.click("#search-button")
    page.wait_for_function(
        "() => { const p = document.querySelector('li.hit .path'); return p && p.textContent.endsWith('house.jpg'); }"
    )


def test_a_rejected_file_shows_its_reason(page, shot, two_mirrors) -> None:
    setup, console = two_mirrors
    page.goto(console.login_url)
    page.locator('article.mirror[data-mirror="catalogue"]').locator("text=Rejected files").click()
    page.wait_for_selector("table.files")
    rows = {
        page.locator("tr.file .path").nth(i).inner_text(): page.locator("tr.file .reason").nth(i).inner_text()
        for i in range(page.locator("tr.file").count())
    }
    assert set(rows) == {TINY, NOTES}
    assert TINY_REASON in rows[TINY] and "40x20" in rows[TINY]
    assert "not an image" in rows[NOTES]
    # The too-small picture decodes and is pictured; the text file gets "no preview".
    page.wait_for_function("() => [...document.querySelectorAll('td.thumb img')].every(i => i.complete)")
    tiny_src = page.locator("tr.file", has_text=TINY).locator("img").get_attribute("src")
    assert page.request.get(console.url + tiny_src).headers["content-type"] == "image/jpeg"
    notes_src = page.locator("tr.file", has_text=NOTES).locator("img").get_attribute("src")
    assert page.request.get(console.url + notes_src).headers["content-type"] == "image/svg+xml"
    shot(page, "rejected")


def test_traversal_attempts_are_refused(page, two_mirrors, tmp_path: Path) -> None:
    setup, console = two_mirrors
    outside = tmp_path / "private.jpg"
    outside.write_bytes(make_image(404))
    link = setup.folder / "shortcut.jpg"
    link.symlink_to(outside)
    try:
        page.goto(console.login_url)
        base = console.url + "/thumb/file?mirror=catalogue&path="
        for path in [
            "../config.toml",
            "..%2f..%2fetc%2fpasswd",
            "%2Fetc%2Fpasswd",
            str(outside).replace("/", "%2F"),
            "shortcut.jpg",
            "drawings%2F..%2F..%2Fconfig.toml",
        ]:
            response = page.goto(base + path)
            assert response.status == 403, path
            assert "refused" in page.inner_text("body")
        assert page.goto(base + "boat.jpg").status == 200
    finally:
        link.unlink()


def test_sync_now_brings_a_new_file_into_the_gallery(page, shot, tmp_path: Path) -> None:
    setup = catalogue(tmp_path, extra=False)
    new = setup.folder / "lighthouse.jpg"
    new.write_bytes(make_image(777, (480, 360)))
    old(new)
    with serving(setup) as console:
        page.goto(console.login_url)
        card = page.locator('article.mirror[data-mirror="catalogue"]')
        assert card.locator('[data-count="synced"]').inner_text() == "6"
        card.locator("button.sync-now").click()
        card.locator('.job[data-state="done"]').wait_for()
        assert "1 added" in card.locator(".job-lines").inner_text()
        page.wait_for_function(
            "() => document.querySelector("
            "'article[data-mirror=\"catalogue\"] [data-count=\"synced\"]').textContent === '7'"
        )
        shot(page, "sync-now")
        page.goto(console.url + "/gallery?library=same_hq")
        entry = page.locator("li.entry", has_text="lighthouse.jpg")
        entry.wait_for()
        assert "Managed by mirror catalogue" in entry.inner_text()
        page.wait_for_function(
            "() => [...document.querySelectorAll('li.entry img')].every(i => i.complete"
            " && i.naturalWidth > 0 && !i.dataset.failed)"
        )
        shot(page, "gallery")
    with setup.open() as sync:
        hits = sync.search(new)
    assert hits[0].paths == (setup.folder / "lighthouse.jpg",)


def test_sync_now_is_refused_while_another_run_holds_the_lock(page, two_mirrors) -> None:
    setup, console = two_mirrors
    page.goto(console.login_url)
    card = page.locator('article.mirror[data-mirror="drawings"]')
    with StateLock(setup.state):
        card.locator("button.sync-now").click()
        card.locator('.job[data-state="refused"]').wait_for()
    message = card.locator(".job-message").inner_text()
    assert "holds" in message and f"pid {os.getpid()}" in message
    assert card.locator("button.sync-now").is_enabled()


def test_entries_no_mirror_manages_are_edited_and_deleted_with_a_confirmation(page, tmp_path: Path) -> None:
    setup = catalogue(tmp_path, extra=False)
    with setup.open() as sync, sync.open_gallery() as gallery:
        foreign = gallery.add("same_hq", image=make_image(600), brief="from another tool", tags=[3])
    with serving(setup) as console:
        page.goto(console.login_url)
        page.goto(console.url + "/gallery?library=same_hq")
        entry = page.locator(f'li.entry[data-cont-sign="{foreign}"]')
        assert page.locator("li.entry button.edit").count() == 1  # the mirror's six have none
        entry.locator("button.edit").click()
        entry.locator('input[name="brief"]').fill("renamed in the console")
        entry.locator('input[name="tags"]').fill("3,4")
        entry.locator('button[type="submit"]').click()
        entry.locator(".entry-status", has_text="Saved.").wait_for()
        with setup.open() as sync:
            edited = next(e for e in sync.entries("same_hq").entries if e.cont_sign == foreign)
        assert (edited.brief, edited.tags) == ("renamed in the console", (3, 4))
        entry.locator("button.delete").click()
        entry.locator(".entry-status", has_text="Deleted").wait_for()
        with setup.open() as sync:
            assert foreign not in {e.cont_sign for e in sync.entries("same_hq").entries}


def test_search_works_against_a_gallery_by_url_through_the_manifest(page, tmp_path: Path) -> None:
    from imgsync.localgallery.server import start_in_thread

    gallery = start_in_thread(tmp_path / "served", port=0, keys=[("console-ak", "console-sk-very-secret")])
    try:
        setup = catalogue(tmp_path, gallery=gallery)
        with serving(setup) as console:
            page.goto(console.login_url)
            assert gallery.url in page.inner_text(".summary")
            page.goto(console.url + "/search")
            page.set_input_files("#query-file", str(EXAMPLES / "query.jpg"))
            page.click("#search-button")
            first = page.locator("li.hit").first
            first.wait_for()
            assert first.locator(".path").first.inner_text() == str(setup.folder / "boat.jpg")
            assert first.locator("img").get_attribute("src") == "/thumb/file?mirror=catalogue&path=boat.jpg"
            for url in ("/", "/search", "/gallery"):
                page.goto(console.url + url)
                assert "console-sk-very-secret" not in page.content() and "console-ak" not in page.content()
            assert "the manifest's view" in page.inner_text("main")
    finally:
        gallery.stop()


def _looks_alike(thumb: bytes, original: bytes) -> bool:
    """The thumbnail is the original, reduced: mean absolute difference of a few per cent at most."""
    with Image.open(io.BytesIO(thumb)) as a, Image.open(io.BytesIO(original)) as b:
        small = b.convert("RGB").resize(a.size)
        diff = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), small)).mean
    return max(diff) < 12
