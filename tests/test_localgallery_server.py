"""The local gallery over real HTTP on 127.0.0.1: every call, every error path, restarts, concurrency,
and the `imgsync gallery` commands. The engine behind it is the real one.

Tests taking `gallery` or `place` run twice: on a data dir (a real SQLite in tmp_path), and on a real
PostgreSQL database served by two replicas, the client sending each call (token requests included)
to the next replica in turn, so every answer also checks that the replicas act as one gallery."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from conftest import Gallery, GalleryPlace, make_image
from imgsync.cli import cli
from imgsync.clock import FakeClock
from imgsync.libraries import LIBRARIES, TOKEN_PATH
from imgsync.localgallery.server import RunningGallery, start_in_thread

B64 = base64.b64encode


def image_for(library: str, seed: int, **kw: Any) -> bytes:
    """A picture every library accepts (product needs a 300 px short side)."""
    size = (400, 320) if library == "product" else (320, 240)
    return make_image(seed, size, **kw)


class Api:
    """A bare-bones client: just enough HTTP to talk the protocol (the real client lives elsewhere).
    Given several replicas, it sends each request to the next one in turn."""

    def __init__(self, gallery: RunningGallery | Gallery, ak: str | None = None, sk: str | None = None) -> None:
        self.urls = list(getattr(gallery, "urls", [gallery.url]))
        self._turn = 0
        self.http = requests.Session()
        self.http.trust_env = False
        self.ak, self.sk = ak or gallery.api_key, sk or gallery.secret_key
        self._token: str | None = None

    @property
    def url(self) -> str:
        """The replica the next request goes to (and the one after it, next time)."""
        url = self.urls[self._turn % len(self.urls)]
        self._turn += 1
        return url

    def token(self) -> str:
        if self._token is None:
            r = self.http.get(
                self.url + TOKEN_PATH,
                params={"grant_type": "client_credentials", "client_id": self.ak, "client_secret": self.sk},
            )
            self._token = r.json()["access_token"]
        return self._token

    def call(
        self, library: str, op: str, form: dict[str, Any] | None = None, *, token: str | None = "auto", **kw: Any
    ) -> dict[str, Any]:
        params = {} if token is None else {"access_token": self.token() if token == "auto" else token}
        r = self.http.post(self.url + LIBRARIES[library].path(op), params=params, data=form or {}, **kw)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("application/json")
        body: dict[str, Any] = r.json()
        assert isinstance(body["log_id"], int) and 0 <= body["log_id"] < 2**63
        return body


@pytest.fixture
def api(gallery: Gallery) -> Api:
    return Api(gallery)


class ImageHost:
    """A tiny http.server on 127.0.0.1 serving images (and failures) for url= inputs."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, str, bytes]] = {}
        self.hung_up: list[str] = []  # trickled paths whose client went away before the host was done
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("=", 1)[1])
                    self.end_headers()
                    return
                if self.path == "/slow":
                    time.sleep(1.5)
                if self.path == "/trickle-headers":  # a header a byte at a time, then a good image
                    _, _, image = host.files["/after-trickle"]
                    try:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                        for _ in range(30):
                            self.wfile.write(b"z")
                            self.wfile.flush()
                            time.sleep(0.1)
                        self.wfile.write(b"\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(image))
                        self.wfile.write(image)
                    except OSError:
                        host.hung_up.append(self.path)  # the gallery gave up on it: that is the point
                    self.close_connection = True
                    return
                if self.path == "/trickle":  # a byte at a time, each read well inside any read timeout
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    try:
                        for _ in range(200):
                            self.wfile.write(b"\xff")
                            self.wfile.flush()
                            time.sleep(0.1)
                    except OSError:
                        host.hung_up.append(self.path)  # the gallery gave up on it: that is the point
                    return
                status, ctype, body = host.files.get(self.path, (404, "text/plain", b"not found"))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the gallery hung up early (a body over its size cap): that is the point

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def put(self, path: str, body: bytes, *, status: int = 200, ctype: str = "image/jpeg") -> str:
        self.files[path] = (status, ctype, body)
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def image_host() -> Iterator[ImageHost]:
    host = ImageHost()
    yield host
    host.close()


def _until(condition: Any, limit_s: float = 60.0) -> None:
    """Wait for `condition()`; fail if it has not come true long after it should (a liveness bound)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.02)


def code(body: dict[str, Any]) -> int | None:
    return body.get("error_code")


# --- the token endpoint ---------------------------------------------------------------------------


def test_token_get_and_post_give_an_sdk_compatible_answer(gallery: Gallery) -> None:
    params = {"grant_type": "client_credentials", "client_id": "test-ak", "client_secret": "test-sk"}
    got = requests.get(gallery.url + TOKEN_PATH, params=params)
    posted = requests.post(gallery.urls[-1] + TOKEN_PATH, data=params)
    for r in (got, posted):
        body = r.json()
        assert r.status_code == 200
        assert body["expires_in"] == 2592000
        assert "brain_all_scope" in body["scope"].split(" ")
        assert body["access_token"].startswith("24.") and body["refresh_token"].startswith("25.")
        assert body["session_key"] and body["session_secret"]
    assert got.json()["access_token"] != posted.json()["access_token"]


@pytest.mark.parametrize(
    ("client_id", "secret", "status", "error", "description"),
    [
        ("nobody", "test-sk", 401, "invalid_client", "unknown client id"),
        ("test-ak", "wrong", 401, "invalid_client", "Client authentication failed"),
    ],
)
def test_token_refused_for_bad_credentials(
    gallery: Gallery, client_id: str, secret: str, status: int, error: str, description: str
) -> None:
    r = requests.get(
        gallery.url + TOKEN_PATH,
        params={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert r.status_code == status
    assert r.json() == {"error": error, "error_description": description}
    assert "test-sk" not in r.text and "wrong" not in r.text


def test_token_refused_for_other_grant_types(gallery: Gallery) -> None:
    r = requests.post(
        gallery.url + TOKEN_PATH, data={"grant_type": "password", "client_id": "test-ak", "client_secret": "test-sk"}
    )
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


# --- all 20 calls ----------------------------------------------------------------------------------


@pytest.mark.parametrize("library", list(LIBRARIES))
def test_every_call_of_a_library_works_by_image_url_and_cont_sign(
    api: Api, image_host: ImageHost, library: str
) -> None:
    labels = {"class_id1": "7", "class_id2": "9"} if library == "product" else {"tags": "7,9"}
    a, b, c = (image_for(library, seed) for seed in (11, 12, 13))
    url_b = image_host.put("/b.jpg", b)

    sign_a = api.call(library, "add", {"image": B64(a), "brief": "a", **labels})["cont_sign"]
    sign_b = api.call(library, "add", {"url": url_b, "brief": "b"})["cont_sign"]
    sign_c = api.call(library, "add", {"image": B64(c), "brief": "c"})["cont_sign"]
    for sign in (sign_a, sign_b, sign_c):
        assert all(part.isdigit() and int(part) < 2**32 for part in sign.split(","))
    assert len({sign_a, sign_b, sign_c}) == 3

    found = api.call(library, "search", {"image": B64(a)})
    assert found["result_num"] == len(found["result"]) and isinstance(found["has_more"], bool)
    assert found["result"][0]["cont_sign"] == sign_a and found["result"][0]["brief"] == "a"
    assert 0.0 <= found["result"][0]["score"] <= 1.0
    assert api.call(library, "search", {"url": url_b})["result"][0]["brief"] == "b"
    filtered = api.call(library, "search", {"image": B64(a), **labels})
    assert [r["cont_sign"] for r in filtered["result"]] == [sign_a]

    assert code(api.call(library, "update", {"image": B64(a), "brief": "a2"})) is None
    assert code(api.call(library, "update", {"url": url_b, "brief": "b2"})) is None
    assert code(api.call(library, "update", {"cont_sign": sign_c, "brief": "c2"})) is None
    briefs = {r["cont_sign"]: r["brief"] for r in api.call(library, "search", {"image": B64(a)})["result"]}
    assert briefs.get(sign_a) == "a2"
    assert api.call(library, "search", {"image": B64(c)})["result"][0]["brief"] == "c2"
    assert api.call(library, "search", {"url": url_b})["result"][0]["brief"] == "b2"

    assert code(api.call(library, "delete", {"image": B64(a)})) is None
    assert code(api.call(library, "delete", {"url": url_b})) is None
    assert code(api.call(library, "delete", {"cont_sign": f"{sign_c};{sign_a}"})) is None  # a is gone already
    assert code(api.call(library, "delete", {"cont_sign": sign_c})) == 216680


def test_update_of_tags_changes_what_a_tag_filter_finds(api: Api) -> None:
    img = image_for("similar", 21)
    sign = api.call("similar", "add", {"image": B64(img), "brief": "x", "tags": "1"})["cont_sign"]
    assert api.call("similar", "search", {"image": B64(img), "tags": "2"})["result_num"] == 0
    api.call("similar", "update", {"cont_sign": sign, "tags": "2,3"})
    hit = api.call("similar", "search", {"image": B64(img), "tags": "2"})["result"]
    assert [r["cont_sign"] for r in hit] == [sign] and hit[0]["brief"] == "x"


def test_duplicate_add_answers_216681_with_the_existing_cont_sign(api: Api) -> None:
    img = image_for("same_hq", 31)
    sign = api.call("same_hq", "add", {"image": B64(img), "brief": "first"})["cont_sign"]
    dup = api.call("same_hq", "add", {"image": B64(img), "brief": "second"})
    assert dup["error_code"] == 216681 and dup["cont_sign"] == sign and dup["error_msg"]


def test_paging_caps_and_reports_has_more(api: Api) -> None:
    signs = [
        api.call("similar", "add", {"image": B64(make_image(41, quality=q)), "brief": str(q)})["cont_sign"]
        for q in (95, 85, 75)
    ]
    query = B64(make_image(41, quality=90))
    everything = api.call("similar", "search", {"image": query})["result"]
    assert {r["cont_sign"] for r in everything} >= set(signs)
    n = len(everything)
    first = api.call("similar", "search", {"image": query, "pn": "0", "rn": "1"})
    assert first["result_num"] == 1 and first["has_more"] is True
    last = api.call("similar", "search", {"image": query, "pn": str(n - 1), "rn": "5"})
    assert last["result_num"] == 1 and last["has_more"] is False
    assert api.call("similar", "search", {"image": query, "pn": "999", "rn": "1000"})["has_more"] is False


# --- error paths -----------------------------------------------------------------------------------

GOOD = B64(image_for("same_hq", 1)).decode()
SIGN = "1,2"


@pytest.mark.parametrize(
    ("library", "op", "form", "expected", "msg_part"),
    [
        # 216101: each missing parameter, named
        ("same_hq", "add", {"brief": "x"}, 216101, "param image not exist"),
        ("same_hq", "add", {"image": GOOD}, 216101, "param brief not exist"),
        ("product", "add", {"image": GOOD, "brief": ""}, 216101, "param brief not exist"),
        ("similar", "search", {}, 216101, "param image not exist"),
        ("picturebook", "update", {"brief": "x"}, 216101, "param image not exist"),
        ("materiel", "update", {"cont_sign": SIGN}, 216101, "param brief not exist"),
        ("same_hq", "delete", {}, 216101, "param image not exist"),
        ("same_hq", "delete", {"cont_sign": " ; "}, 216101, "param cont_sign not exist"),
        # 216100: bad values
        ("same_hq", "add", {"image": GOOD, "brief": "x" * 257}, 216100, "brief"),
        ("same_hq", "add", {"image": GOOD, "brief": "图" * 86}, 216100, "brief"),  # 258 bytes of UTF-8
        ("same_hq", "add", {"image": GOOD, "brief": "x", "tags": "1,2,3"}, 216100, "tags"),
        ("same_hq", "add", {"image": GOOD, "brief": "x", "tags": "0"}, 216100, "tags"),
        ("same_hq", "add", {"image": GOOD, "brief": "x", "tags": "65536"}, 216100, "tags"),
        ("same_hq", "add", {"image": GOOD, "brief": "x", "tags": "a"}, 216100, "tags"),
        ("similar", "search", {"image": GOOD, "tag_logic": "2"}, 216100, "tag_logic"),
        ("product", "add", {"image": GOOD, "brief": "x", "class_id1": "0"}, 216100, "class_id1"),
        ("product", "search", {"image": GOOD, "class_id2": "70000"}, 216100, "class_id2"),
        ("same_hq", "search", {"image": GOOD, "pn": "-1"}, 216100, "pn"),
        ("same_hq", "search", {"image": GOOD, "pn": "1000"}, 216100, "pn"),
        ("same_hq", "search", {"image": GOOD, "rn": "0"}, 216100, "rn"),
        ("same_hq", "search", {"image": GOOD, "rn": "1001"}, 216100, "rn"),
        ("same_hq", "search", {"image": GOOD, "rn": "x"}, 216100, "rn"),
        ("same_hq", "update", {"cont_sign": "1,2;3,4", "brief": "x"}, 216100, "single"),
        ("same_hq", "delete", {"cont_sign": "abc"}, 216100, "cont_sign"),
        ("same_hq", "delete", {"cont_sign": ";".join(f"{i},{i}" for i in range(1001))}, 216100, "at most 1000"),
        ("picturebook", "delete", {"cont_sign": ";".join(f"{i},{i}" for i in range(101))}, 216100, "at most 100"),
        # 2162xx: bad images
        ("same_hq", "add", {"image": "", "brief": "x"}, 216200, ""),
        ("same_hq", "add", {"image": "!!!not base64!!!", "brief": "x"}, 216203, "base64"),
        ("same_hq", "add", {"image": "data:image/jpeg;base64," + GOOD, "brief": "x"}, 216203, "data:"),
        ("same_hq", "add", {"image": "A" * (4 * 1024 * 1024 + 4), "brief": "x"}, 216202, ""),
        ("same_hq", "add", {"image": B64(b"just some text, not a picture").decode(), "brief": "x"}, 216203, ""),
        ("same_hq", "add", {"image": B64(make_image(2, fmt="GIF")).decode(), "brief": "x"}, 216201, ""),
        ("same_hq", "add", {"image": B64(make_image(3, (40, 40))).decode(), "brief": "x"}, 216202, ""),
        ("product", "add", {"image": B64(make_image(4, (320, 240))).decode(), "brief": "x"}, 216202, ""),
        ("same_hq", "add", {"image": B64(make_image(5)[:2000]).decode(), "brief": "x"}, 216203, ""),
        # 216680: nothing there
        ("similar", "update", {"cont_sign": SIGN, "brief": "x"}, 216680, ""),
        ("similar", "update", {"image": GOOD, "brief": "x"}, 216680, ""),
        ("similar", "delete", {"cont_sign": SIGN}, 216680, ""),
        ("similar", "delete", {"image": GOOD}, 216680, ""),
    ],
)
def test_bad_requests_get_the_clouds_error_code(
    api: Api, library: str, op: str, form: dict[str, str], expected: int, msg_part: str
) -> None:
    body = api.call(library, op, form)
    assert body["error_code"] == expected, body
    assert isinstance(body["error_msg"], str) and msg_part in body["error_msg"]
    assert set(body) == {"error_code", "error_msg", "log_id"}


def test_missing_and_unknown_tokens_are_110_and_checked_before_params(api: Api) -> None:
    assert code(api.call("same_hq", "add", {}, token=None)) == 110
    assert code(api.call("same_hq", "add", {}, token="24.deadbeef")) == 110
    assert code(api.call("same_hq", "add", {})) == 216101  # with a token, the params are judged


def test_node_sdk_token_quirk_and_any_host_header_are_accepted(api: Api) -> None:
    r = api.http.post(
        api.url + LIBRARIES["same_hq"].path("search") + "?aipSdk=node&access_token=" + api.token() + "?aipSdk=node",
        data={"image": GOOD},
        headers={"Host": "aip.baidubce.com"},
    )
    assert r.status_code == 200 and "error_code" not in r.json()


def test_expired_token_is_111_and_a_new_one_works(place: GalleryPlace) -> None:
    clock = FakeClock()
    gallery = place.start(keys=[("k", "s")], token_ttl=100, clock=clock)
    try:
        api = Api(gallery)
        old = api.token()
        assert code(api.call("same_hq", "search", {"image": GOOD}, token=old)) is None
        clock.advance(101)
        assert code(api.call("same_hq", "search", {"image": GOOD}, token=old)) == 111
        api._token = None
        assert code(api.call("same_hq", "search", {"image": GOOD})) is None
    finally:
        gallery.stop()


def test_qps_limit_answers_18_until_the_window_moves(tmp_path: Path) -> None:
    clock = FakeClock()
    gallery = start_in_thread(tmp_path, keys=[("k1", "s1"), ("k2", "s2")], qps=2, clock=clock)
    try:
        one, two = Api(gallery, "k1", "s1"), Api(gallery, "k2", "s2")
        answers = [code(one.call("same_hq", "search", {"image": GOOD})) for _ in range(3)]
        assert answers == [None, None, 18]
        assert code(two.call("same_hq", "search", {"image": GOOD})) is None  # per key
        clock.advance(1.0)
        assert code(one.call("same_hq", "search", {"image": GOOD})) is None
    finally:
        gallery.stop()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/rest/2.0/realtime_search/same_hq/list"),
        ("POST", "/"),
        ("POST", "/rest/2.0/realtime_search/same_hq/add/"),
        ("GET", "/rest/2.0/realtime_search/same_hq/add"),
        ("PUT", "/rest/2.0/image-classify/v1/realtime_search/similar/search"),
        ("DELETE", "/rest/2.0/imagesearch/v1/realtime_search/picturebook/delete"),
    ],
)
def test_unknown_paths_and_wrong_methods_are_error_3(api: Api, method: str, path: str) -> None:
    r = api.http.request(method, api.url + path, params={"access_token": api.token()})
    assert r.status_code == 200
    assert r.json()["error_code"] == 3 and r.json()["error_msg"] == "Unsupported openapi method"


def test_non_form_bodies_carry_no_fields(api: Api) -> None:
    r = api.http.post(
        api.url + LIBRARIES["same_hq"].path("add"),
        params={"access_token": api.token()},
        json={"image": GOOD, "brief": "x"},
    )
    assert r.json()["error_code"] == 216101
    r = api.http.post(
        api.url + LIBRARIES["same_hq"].path("add"),
        params={"access_token": api.token()},
        data=b"image=%ff%fe&brief=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.json()["error_code"] == 216100


def test_oversize_body_is_refused_early_and_the_server_keeps_serving(api: Api) -> None:
    r = api.http.post(
        api.url + LIBRARIES["same_hq"].path("add"),
        params={"access_token": api.token()},
        data=b"image=" + b"A" * (13 * 1024 * 1024),
    )
    assert r.status_code == 413
    assert code(api.call("same_hq", "search", {"image": GOOD})) is None


# --- url inputs ------------------------------------------------------------------------------------


def test_url_errors(api: Api, image_host: ImageHost) -> None:
    image_host.put("/page.html", b"<html>hello</html>", ctype="text/html")
    image_host.put("/huge.jpg", b"\xff\xd8\xff" + b"0" * (3 * 1024 * 1024 + 10))
    cases = {
        "http://127.0.0.1/" + "x" * 1100: 282114,
        "ftp://127.0.0.1/a.jpg": 282111,
        "not a url": 282111,
        image_host.base + "/missing.jpg": 282113,
        image_host.base + "/page.html": 282113,
        image_host.base + "/huge.jpg": 282113,
        image_host.base + "/redirect?to=file:///etc/passwd": 282111,
    }
    for url, expected in cases.items():
        assert code(api.call("same_hq", "search", {"url": url})) == expected, url


def test_url_redirects_are_followed(api: Api, image_host: ImageHost) -> None:
    img = image_for("same_hq", 51)
    target = image_host.put("/real.jpg", img)
    sign = api.call("same_hq", "add", {"url": f"{image_host.base}/redirect?to={target}", "brief": "r"})["cont_sign"]
    assert api.call("same_hq", "search", {"image": B64(img)})["result"][0]["cont_sign"] == sign


def test_url_download_timeout_is_282112(tmp_path: Path, image_host: ImageHost) -> None:
    image_host.put("/slow", image_for("same_hq", 52))
    gallery = start_in_thread(tmp_path, keys=[("k", "s")], allow_private_urls=True, fetch_timeout=0.3)
    try:
        assert code(Api(gallery).call("same_hq", "search", {"url": image_host.base + "/slow"})) == 282112
    finally:
        gallery.stop()


def test_a_url_that_trickles_its_body_ends_at_the_download_deadline(tmp_path: Path, image_host: ImageHost) -> None:
    """requests' timeout is per read: a host sending a byte every 0.1 s, of its body or of its headers, never
    trips it, and one such URL held a server thread for as long as the host liked (here 20 s then "not an
    image", or 3 s then a good image). The fetch's deadline covers the whole download: 282112."""
    image_host.put("/after-trickle", image_for("same_hq", 54))  # (sent whole once the headers are done)
    gallery = start_in_thread(tmp_path, keys=[("k", "s")], allow_private_urls=True, fetch_timeout=0.5)
    try:
        for path in ("/trickle", "/trickle-headers"):
            assert code(Api(gallery).call("same_hq", "search", {"url": image_host.base + path})) == 282112, path
            # and the gallery hung up at its deadline, not once the host had sent it all
            _until(lambda path=path: path in image_host.hung_up)
    finally:
        gallery.stop()


def test_private_addresses_are_refused_unless_allowed_and_fetching_can_be_off(
    tmp_path: Path, image_host: ImageHost
) -> None:
    url = image_host.put("/a.jpg", image_for("same_hq", 53))
    strict = start_in_thread(tmp_path / "strict", keys=[("k", "s")])
    off = start_in_thread(tmp_path / "off", keys=[("k", "s")], allow_private_urls=True, allow_url_fetch=False)
    try:
        for u in (
            url,
            url.replace("127.0.0.1", "localhost"),
            "http://[::1]/a.jpg",
            "http://169.254.169.254/x",
            "http://10.0.0.1/a.jpg",
            "http://224.0.0.1/a.jpg",
        ):
            body = Api(strict).call("same_hq", "add", {"url": u, "brief": "x"})
            assert body["error_code"] == 282111 and "address" in body["error_msg"], u
        body = Api(off).call("same_hq", "add", {"url": url, "brief": "x"})
        assert body["error_code"] == 282111 and "switched off" in body["error_msg"]
    finally:
        strict.stop()
        off.stop()


# --- persistence and concurrency -------------------------------------------------------------------


def test_entries_and_tokens_survive_a_restart(place: GalleryPlace) -> None:
    first = place.start(keys=[("k", "s")])
    api = Api(first)
    token = api.token()
    img = image_for("same_hq", 61)
    sign = api.call("same_hq", "add", {"image": B64(img), "brief": "kept", "tags": "5"})["cont_sign"]
    first.stop()

    second = place.start(keys=[("k", "s")])
    try:
        again = Api(second)
        hit = again.call("same_hq", "search", {"image": B64(img), "tags": "5"}, token=token)
        assert [(r["cont_sign"], r["brief"]) for r in hit["result"]] == [(sign, "kept")]
    finally:
        second.stop()
    # A token is only good while its key is configured.
    third = place.start(keys=[("other", "s")])
    try:
        assert code(Api(third).call("same_hq", "search", {"image": B64(img)}, token=token)) == 110
    finally:
        third.stop()


def test_a_created_key_is_saved_and_reused(place: GalleryPlace) -> None:
    first = place.start()
    first.stop()
    second = place.start()
    try:
        assert first.created_key and not second.created_key
        assert (second.api_key, second.secret_key) == (first.api_key, first.secret_key)
        assert code(Api(second).call("same_hq", "search", {"image": GOOD})) is None
        if os.name == "posix" and place.data_dir is not None:
            assert (place.data_dir / "server-key.json").stat().st_mode & 0o077 == 0
    finally:
        second.stop()


def test_concurrent_adds_and_searches_keep_every_entry_exactly_once(api: Api, gallery: Gallery) -> None:
    images = {seed: image_for("similar", seed) for seed in range(100, 124)}

    def work(seed: int) -> tuple[int, str]:
        sign = api.call("similar", "add", {"image": B64(images[seed]), "brief": f"img-{seed}"})["cont_sign"]
        api.call("similar", "search", {"image": B64(images[seed])})
        again = api.call("similar", "add", {"image": B64(images[seed]), "brief": "dup"})
        assert again["error_code"] == 216681 and again["cont_sign"] == sign
        return seed, sign

    with ThreadPoolExecutor(max_workers=8) as pool:
        signs = dict(pool.map(work, images))
    result = CliRunner().invoke(cli, ["gallery", "ls", *gallery.place.cli_args(), "--library", "similar", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert sorted(e["cont_sign"] for e in listed) == sorted(signs.values())
    assert {e["cont_sign"]: e["brief"] for e in listed} == {s: f"img-{seed}" for seed, s in signs.items()}
    for seed, sign in signs.items():
        top = api.call("similar", "search", {"image": B64(images[seed])})["result"][0]
        assert top["cont_sign"] == sign and top["brief"] == f"img-{seed}"


# --- the CLI ---------------------------------------------------------------------------------------


def test_gallery_ls_prints_a_table_and_refuses_a_missing_dir(api: Api, gallery: Gallery, tmp_path: Path) -> None:
    sign = api.call("same_hq", "add", {"image": GOOD, "brief": "hello", "tags": "3,4"})["cont_sign"]
    ok = CliRunner().invoke(cli, ["gallery", "ls", *gallery.place.cli_args(), "--library", "same_hq"])
    assert ok.exit_code == 0 and ok.output.split("\n")[0].split("\t") == [sign, "tags=3,4", "hello"]
    missing = CliRunner().invoke(cli, ["gallery", "ls", "--data", str(tmp_path / "nope"), "--library", "same_hq"])
    assert missing.exit_code == 2 and "no local gallery data" in missing.output


@pytest.mark.parametrize("bad", ["nocolon", ":topsecret", "someid:"])
def test_gallery_serve_refuses_a_bad_key_with_usage_error(bad: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["gallery", "serve", "--data", str(tmp_path), "--key", bad])
    assert result.exit_code == 2 and "KEY:SECRET" in result.output
    assert "topsecret" not in result.output


def test_gallery_serve_runs_as_a_process_and_stops_on_sigterm(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "imgsync", "gallery", "serve", "--port", "0", "--data", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(3)]
            url = lines[0].split(" at ")[1].split(" ")[0]
            ak = lines[1].split(": ")[1].strip()
            sk = lines[2].split(": ")[1].strip()
            r = requests.get(
                url + TOKEN_PATH, params={"grant_type": "client_credentials", "client_id": ak, "client_secret": sk}
            )
            assert r.status_code == 200 and r.json()["access_token"]
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
            assert proc.returncode == 0, err
            assert "stopped" in out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert json.loads((tmp_path / "server-key.json").read_text()) == {"api_key": ak, "secret_key": sk}


def test_requests_waiting_for_a_worker_thread_log_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Eight searches at once against one worker thread queue up, which is how a gallery works under
    load: waitress's "Task queue depth is N" warning, one line per waiting request in the operator's
    log, stays out (its errors would not)."""
    running = start_in_thread(tmp_path, host="127.0.0.1", port=0, keys=[("k", "s")], threads=1)
    try:
        token = Api(running, "k", "s").token()
        image = B64(image_for("same_hq", 5)).decode()
        search = running.url + LIBRARIES["same_hq"].path("search")

        def one(_: int) -> int:
            r = requests.post(search, params={"access_token": token}, data={"image": image})
            return int(r.json().get("error_code", 0))

        with caplog.at_level("WARNING"), ThreadPoolExecutor(8) as pool:
            assert list(pool.map(one, range(8))) == [0] * 8
    finally:
        running.stop()
    assert [r for r in caplog.records if r.name.startswith("waitress")] == []


# --- an unexpected failure -------------------------------------------------------------------------


class _ExplodingEngine:
    """Fault injection: every engine call fails with a message that (carelessly) holds the token."""

    secret = ""

    def __getattr__(self, name: str) -> Any:
        def boom(*args: Any, **kw: Any) -> Any:
            raise RuntimeError(f"engine exploded while holding {self.secret}")

        return boom


def test_an_unexpected_exception_is_282000_logged_without_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import io

    from imgsync.localgallery.app import GalleryApp
    from imgsync.localgallery.auth import Authority
    from imgsync.localgallery.fetch import UrlFetcher

    authority = Authority([("k", "s")])
    token = str(
        authority.issue({"grant_type": "client_credentials", "client_id": "k", "client_secret": "s"}).body[
            "access_token"
        ]
    )
    engine = _ExplodingEngine()
    engine.secret = token
    app = GalleryApp(engine, authority, UrlFetcher())  # type: ignore[arg-type]
    body = b"image=" + B64(image_for("same_hq", 91)).replace(b"+", b"%2B").replace(b"/", b"%2F") + b"&brief=x"
    statuses: list[str] = []
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": LIBRARIES["same_hq"].path("add"),
        "QUERY_STRING": f"access_token={token}",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    with caplog.at_level("ERROR", logger="imgsync.localgallery"):
        out = b"".join(app(environ, lambda status, headers: statuses.append(status)))
    answer = json.loads(out)
    assert statuses == ["200 OK"] and answer["error_code"] == 282000 and answer["error_msg"] == "internal error"
    assert "RuntimeError" in caplog.text and "engine exploded" in caplog.text
    assert token not in caplog.text and token not in out.decode()


def test_gallery_serve_on_a_taken_port_is_a_clear_error(gallery: Gallery, tmp_path: Path) -> None:
    from conftest import wait_until

    port = gallery.url.rsplit(":", 1)[1]
    before = set(threading.enumerate())
    result = CliRunner().invoke(cli, ["gallery", "serve", "--data", str(tmp_path), "--port", port])
    assert result.exit_code == 1 and f"cannot serve the local gallery on 127.0.0.1:{port}" in result.output
    # waitress starts its workers before it binds: a refused port must not leave them running
    wait_until(lambda: set(threading.enumerate()) <= before, what="no thread left behind by the refused port")


def test_a_large_add_is_served_without_a_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body over waitress's default 512 kB spill threshold (a real photo's add is 0.5-1 MB encoded) stays in
    memory: with no usable temp dir (/tmp full, say) the add still works."""
    import io
    import tempfile

    import numpy as np
    from PIL import Image

    from imgsync.gallery.client import GalleryClient
    from imgsync.gallery.retry import RetryPolicy

    noise = np.random.default_rng(5).integers(0, 256, (700, 900, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG", quality=95)
    assert len(B64(buf.getvalue())) > 600_000
    running = start_in_thread(tmp_path / "data", keys=[("ak", "sk")])
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no such dir"))
        client = GalleryClient(running.url, "ak", "sk", retry=RetryPolicy(attempts=1))
        sign = client.add("same_hq", image=buf.getvalue(), brief="large")
        assert [h.cont_sign for h in client.search("same_hq", image=buf.getvalue()).hits][:1] == [sign]
        client.close()
    finally:
        running.stop()
