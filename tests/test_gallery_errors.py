"""Errors: the cloud's codes → imgsync's classes (one table), redaction of secrets, and the boundary where
network failures become GalleryUnavailableError. Pure tests first; then faults injected by a scripted
stand-in server (only for answers the real local gallery never gives: 5xx, HTML, a BCE-scope token, ...)
and the real local gallery for bad credentials and dead ports."""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from conftest import make_image
from imgsync.clock import FakeClock
from imgsync.errors import (
    GalleryAuthError,
    GalleryDuplicateError,
    GalleryError,
    GalleryNotFoundError,
    GalleryPermissionError,
    GalleryQuotaError,
    GalleryRateError,
    GalleryRejectedError,
    GalleryUnavailableError,
)
from imgsync.gallery.auth import parse_token_answer, refresh_margin
from imgsync.gallery.client import (
    GalleryClient,
    build_form,
    parse_has_more,
    parse_search_answer,
    raise_for_error,
)
from imgsync.gallery.redact import REDACTED, redact
from imgsync.gallery.retry import RetryPolicy

# --------------------------------------------------------------------------- the error table (pure)

TABLE = [
    (110, GalleryAuthError),
    (111, GalleryAuthError),
    (100, GalleryAuthError),
    (14, GalleryAuthError),
    (6, GalleryPermissionError),
    (216017, GalleryPermissionError),
    (17, GalleryQuotaError),
    (19, GalleryQuotaError),
    (18, GalleryRateError),
    (1, GalleryUnavailableError),
    (2, GalleryUnavailableError),
    (4, GalleryUnavailableError),
    (282000, GalleryUnavailableError),
    (216630, GalleryUnavailableError),
    (216681, GalleryDuplicateError),
    (216680, GalleryNotFoundError),
    (216100, GalleryRejectedError),
    (216101, GalleryRejectedError),
    (216200, GalleryRejectedError),
    (216201, GalleryRejectedError),
    (216202, GalleryRejectedError),
    (216203, GalleryRejectedError),
    (282110, GalleryRejectedError),
    (282111, GalleryRejectedError),
    (282112, GalleryRejectedError),
    (282113, GalleryRejectedError),
    (282114, GalleryRejectedError),
    (216103, GalleryRejectedError),
    (3, GalleryRejectedError),
    (999999, GalleryRejectedError),
]


@pytest.mark.parametrize(("code", "cls"), TABLE)
def test_every_code_maps_to_its_class(code: int, cls: type[GalleryError]) -> None:
    with pytest.raises(GalleryError) as info:
        raise_for_error({"error_code": code, "error_msg": "some text", "log_id": 1}, "same_hq add")
    assert type(info.value) is cls
    assert info.value.code == code
    assert str(info.value).startswith(f"same_hq add failed: {code} some text")


def test_code_as_string_is_read_as_a_number() -> None:
    with pytest.raises(GalleryRateError) as info:
        raise_for_error({"error_code": "18", "error_msg": "Open api qps request limit reached"})
    assert info.value.code == 18


def test_message_says_what_was_attempted() -> None:
    with pytest.raises(GalleryRejectedError) as info:
        raise_for_error({"error_code": 216202, "error_msg": "image size error"}, "same_hq add")
    assert str(info.value) == "same_hq add failed: 216202 image size error"


def test_wrong_endpoint_codes_point_at_the_config() -> None:
    with pytest.raises(GalleryRejectedError, match="check gallery.endpoint"):
        raise_for_error({"error_code": 3, "error_msg": "Unsupported openapi method"})


@pytest.mark.parametrize("payload", [{"log_id": 5, "cont_sign": "1,2"}, {"error_code": 0}, {}])
def test_success_answers_pass(payload: dict[str, object]) -> None:
    raise_for_error(payload)  # no exception


def test_duplicate_carries_the_existing_cont_sign() -> None:
    with pytest.raises(GalleryDuplicateError) as info:
        raise_for_error({"error_code": 216681, "error_msg": "item has existed", "cont_sign": "891323463,589568413"})
    assert info.value.cont_sign == "891323463,589568413"
    with pytest.raises(GalleryDuplicateError) as info2:
        raise_for_error({"error_code": 216681, "error_msg": "item exist"})
    assert info2.value.cont_sign is None


@pytest.mark.parametrize(
    ("description", "hint"),
    [
        ("unknown client id", "does not know this API key"),
        ("Client authentication failed", "secret key does not match"),
    ],
)
def test_invalid_client_says_which_key_is_wrong(description: str, hint: str) -> None:
    with pytest.raises(GalleryAuthError) as info:
        raise_for_error({"error": "invalid_client", "error_description": description}, "getting an access token")
    assert hint in str(info.value)
    assert info.value.code == "invalid_client"


def test_other_oauth_errors_are_auth_errors() -> None:
    with pytest.raises(GalleryAuthError, match="unsupported_grant_type"):
        raise_for_error({"error": "unsupported_grant_type", "error_description": "nope"})


# --------------------------------------------------------------------------- answers (pure)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("false", False),
        (" TRUE ", True),
        ("False", False),
        (None, False),
        (1, True),
        (0, False),
        ("1", True),
        ("0", False),
    ],
)
def test_has_more_accepts_bool_and_string(value: object, expected: bool) -> None:
    assert parse_has_more(value) is expected


@pytest.mark.parametrize("value", ["maybe", 2, 0.5, [True]])
def test_has_more_refuses_other_values(value: object) -> None:
    with pytest.raises(ValueError, match="has_more"):
        parse_has_more(value)


def test_search_answer_parses_hits() -> None:
    result = parse_search_answer(
        {
            "result_num": 1,
            "log_id": 1,
            "has_more": "false",
            "result": [{"score": 0.979767, "brief": "./data/jay1.jpg", "cont_sign": "475124309,1080176642"}],
        }
    )
    assert result.has_more is False
    assert [(h.cont_sign, h.brief) for h in result.hits] == [("475124309,1080176642", "./data/jay1.jpg")]
    assert result.hits[0].score == pytest.approx(0.979767)
    assert parse_search_answer({"log_id": 1}).hits == []  # no result key: no hits
    with pytest.raises(ValueError, match="cont_sign"):
        parse_search_answer({"result": [{"score": 0.5}]})


def test_token_answer_checks_scope_and_computes_refresh() -> None:
    token = parse_token_answer(
        {"access_token": "24.abc", "expires_in": "2592000", "scope": "public brain_all_scope brain_realtime_same_hq"},
        now=1000.0,
    )
    assert token.value == "24.abc"
    assert token.refresh_at == 1000.0 + 2592000 - 86400  # a day early for a 30-day token
    assert refresh_margin(100) == 10  # a tenth for short-lived ones
    with pytest.raises(GalleryAuthError, match="BCE") as info:
        parse_token_answer({"access_token": "24.abc", "expires_in": 2592000, "scope": "public bce_foo"}, 0.0)
    assert "24.abc" not in str(info.value)
    with pytest.raises(GalleryUnavailableError, match="expires_in"):
        parse_token_answer({"access_token": "t", "expires_in": "soon", "scope": "brain_all_scope"}, 0.0)


# --------------------------------------------------------------------------- forms (pure)


def test_form_values_are_strings_and_image_is_plain_base64() -> None:
    form = build_form("same_hq", "add", image=b"\xff\xd8\xffabc", brief="b", tags=[1, 2])
    assert form == {"image": "/9j/YWJj", "brief": "b", "tags": "1,2"}
    search = build_form("similar", "search", url="http://x/y.jpg", tags=[3, 4], tag_logic="or", rn=5)
    assert search == {"url": "http://x/y.jpg", "tags": "3,4", "tag_logic": "1", "pn": "0", "rn": "5"}
    product = build_form("product", "update", cont_sign="1,2", brief="b", class_ids=(7, None))
    assert product == {"cont_sign": "1,2", "brief": "b", "class_id1": "7"}


@pytest.mark.parametrize(
    ("op", "kwargs"),
    [
        ("add", {"brief": "b"}),  # no source
        ("add", {"image": b"x", "url": "http://x", "brief": "b"}),  # two sources
        ("add", {"cont_sign": "1,2", "brief": "b"}),  # cont_sign is not a source for add
        ("search", {"image": b"x", "cont_sign": "1,2"}),
        ("delete", {"image": b"x", "cont_sign": "1,2"}),
        ("add", {"image": b"x", "brief": ""}),  # brief required
        ("update", {"cont_sign": "1,2"}),  # nothing to change
    ],
)
def test_programming_errors_are_value_errors(op: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_form("same_hq", op, **kwargs)  # type: ignore[arg-type]


def test_labels_must_fit_the_library() -> None:
    with pytest.raises(ValueError, match="class ids, not tags"):
        build_form("product", "add", image=b"x", brief="b", tags=[1])
    with pytest.raises(ValueError, match="only the product library"):
        build_form("same_hq", "add", image=b"x", brief="b", class_ids=(1, 2))


# --------------------------------------------------------------------------- redaction (pure)


def test_redact_replaces_known_secrets_and_token_parameters() -> None:
    text = (
        "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: "
        "/rest/2.0/realtime_search/same_hq/add?access_token=24.deadbeef.2592000.1.282335-1 (Caused by ...) "
        "client_secret=S3cr%2Bt&x=1 key my-api-key secret S3cr+t"
    )
    out = redact(text, ["my-api-key", "S3cr+t", None, ""])
    for secret in ("24.deadbeef", "my-api-key", "S3cr+t", "S3cr%2Bt"):
        assert secret not in out
    assert f"access_token={REDACTED}" in out
    assert "port=1" in out and "x=1" in out  # the rest stays readable


def test_redact_leaves_short_values_alone() -> None:
    assert redact("a b c", ["a"]) == "a b c"


# --------------------------------------------------------------------------- scripted faults over HTTP

Answer = tuple[int, object]  # (HTTP status, JSON body or raw str)
GOOD_TOKEN: Answer = (
    200,
    {"access_token": "24.scripted-token-value", "expires_in": 2592000, "scope": "public brain_all_scope"},
)


class Scripted:
    """A stand-in gallery that answers from a script: one queue of answers per path (last one repeats)."""

    def __init__(self) -> None:
        self.script: dict[str, list[Answer]] = {}
        self.seen: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                path = urlsplit(self.path).path
                outer.seen.append(path)
                queue = outer.script.get(path) or [(404, "not here")]
                status, body = queue.pop(0) if len(queue) > 1 else queue[0]
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    s = Scripted()
    s.script["/oauth/2.0/token"] = [GOOD_TOKEN]
    yield s
    s.stop()


ADD = "/rest/2.0/realtime_search/same_hq/add"
SEARCH = "/rest/2.0/realtime_search/same_hq/search"
PB_SEARCH = "/rest/2.0/imagesearch/v1/realtime_search/picturebook/search"


def _client(url: str, clock: FakeClock, attempts: int = 3, **kw: object) -> GalleryClient:
    return GalleryClient(
        url,
        "scripted-api-key",
        "scripted-secret",
        clock=clock,
        retry=RetryPolicy(attempts=attempts),
        rng=random.Random(1),
        **kw,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "answer", [(502, "<html>Bad Gateway</html>"), (200, "not json"), (503, {"oops": 1}), (200, [1, 2])]
)
def test_5xx_and_non_json_are_unavailable_after_retries(scripted: Scripted, answer: Answer) -> None:
    scripted.script[ADD] = [answer]
    clock = FakeClock()
    with _client(scripted.url, clock) as client, pytest.raises(GalleryUnavailableError) as info:
        client.add("same_hq", image=b"x", brief="b")
    assert str(info.value).startswith("same_hq add failed:")
    assert scripted.seen.count(ADD) == 3  # all three tries were made
    assert len(clock.sleeps) == 2  # and slept (on the fake clock) between them


def test_transient_error_then_success(scripted: Scripted) -> None:
    scripted.script[ADD] = [
        (200, {"error_code": 282000, "error_msg": "internal error"}),
        (200, {"error_code": 2, "error_msg": "Service temporarily unavailable"}),
        (200, {"log_id": 1, "cont_sign": "1,2"}),
    ]
    with _client(scripted.url, FakeClock()) as client:
        assert client.add("same_hq", image=b"x", brief="b") == "1,2"
        assert client.stats.retries == 2


def test_retried_add_that_had_reached_the_gallery_surfaces_the_duplicate(scripted: Scripted) -> None:
    # First try: the gateway fails after the gallery stored the image; the retry is told "item has existed".
    scripted.script[ADD] = [
        (504, "gateway timeout"),
        (200, {"error_code": 216681, "error_msg": "item has existed", "cont_sign": "7,8"}),
    ]
    with _client(scripted.url, FakeClock()) as client, pytest.raises(GalleryDuplicateError) as info:
        client.add("same_hq", image=b"x", brief="b")
    assert info.value.cont_sign == "7,8"


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (216202, GalleryRejectedError),
        (17, GalleryQuotaError),
        (6, GalleryPermissionError),
        (216680, GalleryNotFoundError),
    ],
)
def test_non_transient_errors_are_not_retried(scripted: Scripted, code: int, cls: type[GalleryError]) -> None:
    scripted.script[ADD] = [(200, {"error_code": code, "error_msg": "x"})]
    clock = FakeClock()
    with _client(scripted.url, clock) as client, pytest.raises(cls):
        client.add("same_hq", image=b"x", brief="b")
    assert scripted.seen.count(ADD) == 1
    assert clock.sleeps == []


def test_has_more_as_string_over_http(scripted: Scripted) -> None:
    scripted.script[PB_SEARCH] = [
        (
            200,
            {
                "log_id": 1,
                "result_num": 1,
                "has_more": "true",
                "result": [{"cont_sign": "1,2", "score": 0.9, "brief": "b"}],
            },
        )
    ]
    with _client(scripted.url, FakeClock()) as client:
        result = client.search("picturebook", image=b"x", rn=1)
    assert result.has_more is True and result.hits[0].cont_sign == "1,2"


def test_malformed_search_answer_is_an_error_not_a_crash(scripted: Scripted) -> None:
    scripted.script[SEARCH] = [(200, {"log_id": 1, "result": [{"score": 0.9}], "has_more": False})]
    with _client(scripted.url, FakeClock()) as client, pytest.raises(GalleryUnavailableError, match="unexpected"):
        client.search("same_hq", image=b"x")


def test_bce_key_scope_is_explained(scripted: Scripted) -> None:
    scripted.script["/oauth/2.0/token"] = [
        (200, {"access_token": "24.bce-token-value", "expires_in": 2592000, "scope": "public wise_adapt"})
    ]
    with _client(scripted.url, FakeClock()) as client, pytest.raises(GalleryAuthError) as info:
        client.search("same_hq", image=b"x")
    message = str(info.value)
    assert "not an AI application" in message
    for secret in ("24.bce-token-value", "scripted-api-key", "scripted-secret"):
        assert secret not in message
    assert SEARCH not in scripted.seen  # no API call with a token the API would refuse


def test_read_timeout_is_unavailable_and_names_the_limit() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections (the kernel does) but never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with (
            _client(url, FakeClock(), attempts=2, timeout=(1.0, 0.2)) as client,
            pytest.raises(GalleryUnavailableError, match="no answer within 0.2 s"),
        ):
            client.search("same_hq", image=b"x")
    finally:
        listener.close()


# --------------------------------------------------------------------------- the real local gallery


def test_unknown_api_key(gallery_server) -> None:
    with (
        GalleryClient(gallery_server.url, "wrong-api-key", gallery_server.secret_key) as client,
        pytest.raises(GalleryAuthError) as info,
    ):
        client.search("same_hq", image=make_image(1))
    message = str(info.value)
    assert "does not know this API key" in message
    assert "wrong-api-key" not in message and gallery_server.secret_key not in message


def test_wrong_secret_key(gallery_server) -> None:
    with (
        GalleryClient(gallery_server.url, gallery_server.api_key, "wrong-secret-key") as client,
        pytest.raises(GalleryAuthError) as info,
    ):
        client.search("same_hq", image=make_image(1))
    message = str(info.value)
    assert "secret key does not match" in message
    assert "wrong-secret-key" not in message and gallery_server.api_key not in message
    assert info.value.exit_code == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dead_port_is_unavailable_after_retries() -> None:
    clock = FakeClock()
    with (
        _client(f"http://127.0.0.1:{_free_port()}", clock, attempts=4) as client,
        pytest.raises(GalleryUnavailableError) as info,
    ):
        client.add("same_hq", image=b"x", brief="b")
    assert "cannot reach the gallery" in str(info.value)
    assert len(clock.sleeps) == 3
    assert info.value.exit_code == 3


class RecordingSession(requests.Session):
    """Records every URL sent (observing, not mocking: the request still goes out)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def request(self, method, url, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        response = super().request(method, url, *args, **kwargs)
        self.urls.append(response.request.url or url)
        return response


def test_connection_error_after_token_does_not_leak_the_token(tmp_path: Path) -> None:
    from imgsync.localgallery.server import start_in_thread

    server = start_in_thread(tmp_path / "g", keys=[("leak-test-key", "leak-test-secret")])
    session = RecordingSession()
    client = GalleryClient(
        server.url,
        "leak-test-key",
        "leak-test-secret",
        session=session,
        retry=RetryPolicy(attempts=2),
        clock=FakeClock(),
    )
    try:
        client.search("same_hq", image=make_image(3))
        token = parse_qs(urlsplit(session.urls[-1]).query)["access_token"][0]
        server.stop()
        with pytest.raises(GalleryUnavailableError) as info:
            client.search("same_hq", image=make_image(3))
    finally:
        client.close()
        server.stop()
    error = info.value
    shown = "".join(traceback.format_exception(error)) + str(error) + repr(error)
    assert len(token) > 20
    for secret in (token, "leak-test-key", "leak-test-secret"):
        assert secret not in shown
    # The raw requests exception (whose text holds the URL with the token) is not kept anywhere.
    assert error.__cause__ is None and error.__context__ is None


def test_logs_never_contain_secrets(gallery_server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    session = RecordingSession()
    with GalleryClient(
        gallery_server.url,
        gallery_server.api_key,
        gallery_server.secret_key,
        session=session,
        clock=FakeClock(),
        retry=RetryPolicy(attempts=2),
    ) as client:
        image = make_image(5)
        client.add("same_hq", image=image, brief="log-test")
        with pytest.raises(GalleryDuplicateError):
            client.add("same_hq", image=image, brief="log-test")
    token = parse_qs(urlsplit(session.urls[-1]).query)["access_token"][0]
    messages = [r.getMessage() for r in caplog.records]
    # urllib3 logs each request line at DEBUG, query string included: our filter must have cleaned it.
    assert any("access_token=" + REDACTED in m for m in messages)
    for secret in (token, gallery_server.api_key, gallery_server.secret_key):
        assert all(secret not in m for m in messages)


def test_token_is_refreshed_once_per_try_not_forever(scripted: Scripted) -> None:
    scripted.script[SEARCH] = [(200, {"error_code": 110, "error_msg": "Access token invalid or no longer valid"})]
    clock = FakeClock()
    with _client(scripted.url, clock, attempts=5) as client, pytest.raises(GalleryAuthError) as info:
        client.search("same_hq", image=b"x")
    assert info.value.code == 110
    assert scripted.seen.count(SEARCH) == 2  # the call, then once more with a fresh token
    assert scripted.seen.count("/oauth/2.0/token") == 2
    assert clock.sleeps == []  # auth errors are not retried by the backoff loop


def test_fast_form_encoding_matches_urlencode():
    import base64
    import os
    from urllib.parse import urlencode

    from imgsync.gallery.client import encode_form

    for form in (
        {
            "image": base64.b64encode(os.urandom(3000)).decode(),
            "brief": '{"id":1,"path":"a b/ü+&=.jpg"}',
            "tags": "1,2",
        },
        {"image": "short+/=", "url": "http://x/y?z=1&w=ä"},
        # long values that are not base64 text: one character away from it, and not ASCII at all
        {"image": base64.b64encode(os.urandom(3000)).decode() + " ", "brief": "ü" * 300, "x": "a%b&c" * 100},
    ):
        assert encode_form(form) == urlencode(form).encode("ascii")


def test_image_form_from_build_form_encodes_as_urlencode():
    """The image's text as build_form makes it (with its bytes, so that encode_form skips the character
    check and the '=' pass) gives urlencode's bytes for every padding length, anywhere in the form."""
    import base64
    import random
    from urllib.parse import urlencode

    from imgsync.gallery.client import build_form, encode_form

    rng = random.Random(4)
    for n in [*range(0, 40), *(rng.randrange(40, 400_000) for _ in range(60))]:
        image = rng.randbytes(n) if n else b"\x00"
        form = build_form("same_hq", "add", image=image, brief="a b/ü+&=.jpg", tags=[3, 1])
        assert isinstance(form["image"], str) and form["image"] == base64.b64encode(image).decode("ascii")
        assert encode_form(form) == urlencode(form).encode("ascii")
        reordered = {"brief": form["brief"], "image": form["image"]}
        assert encode_form(reordered) == urlencode(reordered).encode("ascii")
