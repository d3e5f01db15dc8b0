"""Fuzzing the local gallery over HTTP: whatever arrives, the answer is JSON with a success shape or a
documented error code, never a 5xx and never 282000 (which would mean a bug), and the server keeps
answering normal calls afterwards."""

from __future__ import annotations

import base64
import io
import string
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import make_image
from imgsync.libraries import LIBRARIES, TOKEN_PATH, route_table
from imgsync.localgallery.server import RunningGallery, start_in_thread

DOCUMENTED = {
    3,
    18,
    110,
    111,
    216100,
    216101,
    216200,
    216201,
    216202,
    216203,
    216680,
    216681,
    282111,
    282112,
    282113,
    282114,
}
SUCCESS_KEYS = {
    "add": {"log_id", "cont_sign"},
    "search": {"log_id", "result_num", "result", "has_more"},
    "update": {"log_id"},
    "delete": {"log_id"},
}
ROUTES = route_table()
PATHS = sorted(ROUTES)
# database=None: no .hypothesis/ directory is written into the repo.
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


class Caller:
    def __init__(self, gallery: RunningGallery) -> None:
        self.url = gallery.url
        self.http = requests.Session()
        self.http.trust_env = False
        r = self.http.get(
            self.url + TOKEN_PATH,
            params={
                "grant_type": "client_credentials",
                "client_id": gallery.api_key,
                "client_secret": gallery.secret_key,
            },
        )
        self.token = r.json()["access_token"]

    def post(self, path: str, data: Any = None, **kw: Any) -> requests.Response:
        return self.http.post(self.url + path, params={"access_token": self.token}, data=data, **kw)

    def still_serving(self) -> None:
        r = self.post(LIBRARIES["same_hq"].path("search"), {"image": base64.b64encode(make_image(1))})
        assert r.status_code == 200 and "error_code" not in r.json(), r.text


@pytest.fixture(scope="module")
def caller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Caller]:
    # Module-scoped so hypothesis can reuse it; private urls stay refused (no fuzzed fetch leaves the box).
    gallery = start_in_thread(tmp_path_factory.mktemp("fuzz-gallery"), keys=[("fz", "fz-secret")])
    c = Caller(gallery)
    good = base64.b64encode(make_image(2)).decode()
    c.post(LIBRARIES["same_hq"].path("add"), {"image": good, "brief": "seed", "tags": "1"})
    yield c
    gallery.stop()


def judge(response: requests.Response, path: str) -> None:
    assert response.status_code < 500, response.text
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["log_id"], int)
    if "error_code" in body:
        assert body["error_code"] in DOCUMENTED, body
        assert isinstance(body["error_msg"], str) and body["error_msg"]
        return
    op = ROUTES[path][1]
    assert set(body) == SUCCESS_KEYS[op], body


# --- random form fields on every endpoint ----------------------------------------------------------

GOOD_IMAGES = [base64.b64encode(make_image(s, size)).decode() for s, size in ((3, (320, 240)), (4, (400, 320)))]
FIELD_NAMES = ["image", "url", "brief", "tags", "tag_logic", "class_id1", "class_id2", "pn", "rn", "cont_sign"]
INTERESTING = st.sampled_from(
    [
        "",
        " ",
        "0",
        "1",
        "-1",
        "2",
        "65535",
        "65536",
        "1,2",
        "1,2,3",
        ",",
        "1;2",
        "999",
        "1000",
        "1001",
        "1,2;3,4",
        "4294967295,4294967295",
        "x" * 300,
        "图" * 100,
        "data:image/png;base64,AAAA",
        "http://127.0.0.1:1/x.jpg",
        "https://localhost/a.jpg",
        "ftp://a/b",
        "http://[::1]/",
        "http://" + "a" * 1100,
        "%00",
        "\x00",
        "null",
        "[]",
        "{}",
        "NaN",
        "1e3",
        "0x10",
        " 7 ",
        *GOOD_IMAGES,
    ]
)
VALUES = st.one_of(
    INTERESTING, st.text(max_size=40), st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode())
)
FORMS = st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)), VALUES, max_size=8)


@FUZZ
@given(path=st.sampled_from(PATHS), form=FORMS)
def test_random_form_fields_on_every_endpoint(caller: Caller, path: str, form: dict[str, str]) -> None:
    judge(caller.post(path, form), path)


@FUZZ
@given(
    path=st.sampled_from(PATHS),
    body=st.binary(max_size=300),
    ctype=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "",
            "multipart/form-data; boundary=x",
            "application/json",
            "text/plain; charset=latin-1",
        ]
    ),
)
def test_random_raw_bodies(caller: Caller, path: str, body: bytes, ctype: str) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    judge(caller.post(path, body, headers=headers), path)


@FUZZ
@given(
    segments=st.lists(
        st.text(alphabet=string.ascii_letters + string.digits + "-_.%", min_size=1, max_size=12), max_size=6
    ),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
)
def test_unknown_paths_and_methods_are_error_3(caller: Caller, segments: list[str], method: str) -> None:
    path = "/" + "/".join(segments)
    if path in ROUTES and method == "POST" or path == TOKEN_PATH:
        return
    r = caller.http.request(method, caller.url + path, params={"access_token": caller.token})
    assert r.status_code == 200 and r.json()["error_code"] == 3


# --- hostile images --------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int = 100_000) -> bytes:
    """A tiny PNG whose header claims side × side pixels (a decompression bomb if anyone decodes it)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def bmp_claiming(width: int, height: int) -> bytes:
    header = struct.pack("<2sIHHI", b"BM", 54, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + info + b"\x00" * 64


def truncated(fmt: str, fraction: float) -> bytes:
    data = make_image(5, (320, 240), fmt)
    return data[: max(1, int(len(data) * fraction))]


def gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (100, 100), "red").save(buf, "GIF")
    return buf.getvalue()


HOSTILE = {
    "bomb": (png_bomb(), {216202}),
    "bmp-huge": (bmp_claiming(200_000, 200_000), {216202, 216203}),
    "bmp-negative": (bmp_claiming(-5, 100), {216202, 216203}),
    "text": (b"hello, I am not a picture", {216203}),
    "pdf": (b"%PDF-1.4\n" + b"0" * 500, {216203}),
    "zeros": (b"\x00" * 1000, {216203}),
    "gif": (gif(), {216201}),
    "jpeg-head-only": (truncated("JPEG", 0.02), {216203}),
    "jpeg-half": (truncated("JPEG", 0.5), {216203}),
    "png-half": (truncated("PNG", 0.5), {216203}),
    "bmp-half": (truncated("BMP", 0.5), {216203}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize("op", ["add", "search", "update", "delete"])
def test_hostile_images_get_an_image_error(caller: Caller, name: str, op: str) -> None:
    data, codes = HOSTILE[name]
    path = LIBRARIES["similar"].path(op)
    r = caller.post(path, {"image": base64.b64encode(data), "brief": "x", "tags": "1"})
    judge(r, path)
    assert r.json()["error_code"] in codes, (name, r.json())
    caller.still_serving()


@pytest.mark.parametrize("text", ["%%%%", "QUJD*", "data:image/jpeg;base64,/9j/4AAQ", "A", "====", "   a"])
def test_garbage_base64_is_216203(caller: Caller, text: str) -> None:
    r = caller.post(LIBRARIES["same_hq"].path("add"), {"image": text, "brief": "x"})
    assert r.json()["error_code"] == 216203


def test_oversize_bodies_are_refused_without_harm(caller: Caller) -> None:
    path = LIBRARIES["same_hq"].path("add")
    just_over = caller.post(path, {"image": "A" * (4 * 1024 * 1024 + 4), "brief": "x"})
    assert just_over.status_code == 200 and just_over.json()["error_code"] == 216202
    way_over = caller.post(
        path, b"image=" + b"A" * (12 * 1024 * 1024 + 1), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert way_over.status_code == 413
    caller.still_serving()


@pytest.mark.parametrize("path", PATHS)
def test_missing_fields_name_the_first_missing_parameter(caller: Caller, path: str) -> None:
    body = caller.post(path, {}).json()
    assert body["error_code"] == 216101 and "param image not exist" in body["error_msg"]


def test_server_still_answers_after_the_fuzzing(caller: Caller) -> None:
    caller.still_serving()
