"""The pure parts of the local gallery's protocol layer, without HTTP: parameter parsing (protocol.py),
the token authority (auth.py, on a real SQLite file), the QPS limiter and the URL judgements."""

from __future__ import annotations

import base64
import random
import re
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from imgsync.clock import FakeClock
from imgsync.libraries import LIBRARIES
from imgsync.localgallery import protocol
from imgsync.localgallery.auth import Authority, load_or_create_key
from imgsync.localgallery.errors import ApiError
from imgsync.localgallery.fetch import UrlFetcher, is_public_address, judge_url, looks_like_image
from imgsync.localgallery.protocol import (
    AddRequest,
    ContSigns,
    DeleteRequest,
    ImageBytes,
    ImageUrl,
    SearchRequest,
    UpdateRequest,
    parse_request,
)
from imgsync.localgallery.ratelimit import RateLimiter

PIXELS = b"\x89PNG\r\n\x1a\n fake but non-empty"
IMG = base64.b64encode(PIXELS).decode()


def parse(library: str, op: str, **form: str) -> protocol.ApiRequest:
    return parse_request(LIBRARIES[library], op, form)  # type: ignore[arg-type]


def error_of(library: str, op: str, **form: str) -> tuple[int, str]:
    with pytest.raises(ApiError) as info:
        parse(library, op, **form)
    return info.value.code, info.value.message


# --- typed requests --------------------------------------------------------------------------------


def test_add_parses_image_brief_and_tags() -> None:
    assert parse("same_hq", "add", image=IMG, brief="b", tags="100, 11") == AddRequest(
        "same_hq", ImageBytes(PIXELS), "b", (100, 11)
    )


def test_product_uses_class_ids_and_ignores_tags() -> None:
    req = parse("product", "add", image=IMG, brief="b", tags="junk", class_id1="3")
    assert req == AddRequest("product", ImageBytes(PIXELS), "b", (), (3, None))


def test_tag_libraries_ignore_class_ids() -> None:
    assert parse("similar", "add", image=IMG, brief="b", class_id1="junk") == AddRequest(
        "similar", ImageBytes(PIXELS), "b"
    )


def test_image_has_priority_over_url_and_url_over_cont_sign() -> None:
    assert parse("same_hq", "add", image=IMG, url="http://x/a.jpg", brief="b").source == ImageBytes(PIXELS)
    assert parse("same_hq", "search", url=" http://x/a.jpg ").source == ImageUrl("http://x/a.jpg")
    upd = parse("picturebook", "update", url="http://x/a.jpg", cont_sign="1,2", brief="b")
    assert isinstance(upd, UpdateRequest) and upd.target == ImageUrl("http://x/a.jpg")
    assert parse("picturebook", "delete", cont_sign="1,2").target == ContSigns(("1,2",))


def test_search_defaults_and_paging_cap() -> None:
    assert parse("same_hq", "search", image=IMG) == SearchRequest("same_hq", ImageBytes(PIXELS), pn=0, rn=300)
    req = parse("same_hq", "search", image=IMG, pn="900", rn="500", tags="1,2", tag_logic="1")
    assert isinstance(req, SearchRequest) and (req.pn, req.rn, req.tag_logic, req.tags) == (900, 100, 1, (1, 2))
    assert parse("product", "search", image=IMG, tag_logic="9").tag_logic == 0  # type: ignore[union-attr]


def test_update_keeps_absent_fields_as_none() -> None:
    assert parse("same_hq", "update", cont_sign="1,2", tags="4") == UpdateRequest(
        "same_hq", ContSigns(("1,2",)), None, (4,), None
    )
    assert parse("product", "update", cont_sign="1,2", class_id2="8") == UpdateRequest(
        "product", ContSigns(("1,2",)), None, None, (None, 8)
    )


def test_batch_delete_dedupes_and_skips_empty_items() -> None:
    req = parse("same_hq", "delete", cont_sign="1,2; 3,4;;1,2;")
    assert req == DeleteRequest("same_hq", ContSigns(("1,2", "3,4")))


@pytest.mark.parametrize(("library", "cap"), [(name, lib.batch_delete_max) for name, lib in LIBRARIES.items()])
def test_batch_delete_cap_per_library(library: str, cap: int) -> None:
    at_cap = ";".join(f"{i},{i}" for i in range(cap))
    assert len(parse(library, "delete", cont_sign=at_cap).target.signs) == cap  # type: ignore[union-attr]
    code, msg = error_of(library, "delete", cont_sign=at_cap + f";{cap},{cap}")
    assert code == 216100 and f"at most {cap}" in msg


# --- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("library", "op", "form", "expected"),
    [
        ("same_hq", "add", {}, (216101, "param image not exist")),
        ("same_hq", "add", {"url": "  "}, (216101, "param image not exist")),
        ("same_hq", "add", {"image": IMG}, (216101, "param brief not exist")),
        ("same_hq", "update", {"image": IMG}, (216101, "param brief not exist")),
        ("same_hq", "update", {"brief": "x"}, (216101, "param image not exist")),
        (
            "same_hq",
            "add",
            {"image": IMG, "brief": "é" * 129},
            (216100, "invalid param: brief too long (more than 256 bytes)"),
        ),
        (
            "same_hq",
            "add",
            {"image": IMG, "brief": "x", "tags": "1,"},
            (216100, "invalid param: tags must be an integer in 1..65535"),
        ),
        (
            "same_hq",
            "add",
            {"image": IMG, "brief": "x", "tags": "١"},
            (216100, "invalid param: tags must be an integer in 1..65535"),
        ),
        (
            "same_hq",
            "add",
            {"image": IMG, "brief": "x", "tags": "+5"},
            (216100, "invalid param: tags must be an integer in 1..65535"),
        ),
        (
            "same_hq",
            "search",
            {"image": IMG, "tag_logic": "and"},
            (216100, "invalid param: tag_logic must be 0 (and) or 1 (or)"),
        ),
        (
            "product",
            "search",
            {"image": IMG, "class_id1": "1.5"},
            (216100, "invalid param: class_id1 must be an integer in 1..65535"),
        ),
        (
            "same_hq",
            "search",
            {"image": IMG, "pn": "99999999999"},
            (216100, "invalid param: pn must be an integer in 0..999"),
        ),
        (
            "same_hq",
            "update",
            {"cont_sign": "1,2;3,4", "brief": "x"},
            (216100, "invalid param: update takes a single cont_sign, not a batch"),
        ),
        (
            "same_hq",
            "delete",
            {"cont_sign": "1,2,3"},
            (216100, "invalid param: cont_sign '1,2,3' is not two comma-separated integers"),
        ),
    ],
)
def test_refusals_name_the_parameter(library: str, op: str, form: dict[str, str], expected: tuple[int, str]) -> None:
    assert error_of(library, op, **form) == expected


def test_cheap_parameter_errors_come_before_decoding_the_image() -> None:
    assert error_of("same_hq", "add", image="%%%garbage", brief="x" * 300)[0] == 216100


def test_brief_of_exactly_256_bytes_is_accepted() -> None:
    assert parse("same_hq", "add", image=IMG, brief="é" * 128).brief == "é" * 128  # type: ignore[union-attr]


# --- the image's base64 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (IMG, PIXELS),
        (IMG.replace("+", " "), PIXELS),  # '+' sent without url-encoding
        (IMG.rstrip("="), PIXELS),  # padding dropped
        ("\n".join(IMG[i : i + 8] for i in range(0, len(IMG), 8)), PIXELS),  # MIME line breaks
    ],
)
def test_decode_image_tolerates_common_encoder_habits(text: str, expected: bytes) -> None:
    assert protocol.decode_image(text) == expected


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", 216200),
        ("   ", 216200),
        ("====", 216203),
        ("abc*", 216203),
        ("A", 216203),
        ("-_-_", 216203),
        ("data:image/jpeg;base64," + IMG, 216203),
        ("DATA:image/png;base64," + IMG, 216203),
        ("A" * (4 * 1024 * 1024 + 1), 216202),
    ],
)
def test_decode_image_refusals(text: str, code: int) -> None:
    with pytest.raises(ApiError) as info:
        protocol.decode_image(text)
    assert info.value.code == code


def test_base64_of_exactly_4_mb_is_not_a_size_error() -> None:
    assert len(protocol.decode_image("A" * (4 * 1024 * 1024))) == 3 * 1024 * 1024


# --- form body and token --------------------------------------------------------------------------


def test_parse_form_first_value_wins_and_utf8_is_decoded() -> None:
    assert protocol.parse_form(b"a=1&a=2&brief=%E5%9B%BE&b=") == {"a": "1", "brief": "图", "b": ""}
    assert protocol.parse_form("brief=图".encode()) == {"brief": "图"}


@pytest.mark.parametrize("body", [b"brief=%ff", b"\xff\xfe=1", b"&".join(b"k%d=1" % i for i in range(100))])
def test_parse_form_refuses_undecodable_or_huge_forms(body: bytes) -> None:
    with pytest.raises(ApiError) as info:
        protocol.parse_form(body)
    assert info.value.code == 216100


def _form_by_urllib(body: bytes) -> dict[str, str] | int:
    """What parse_form answered when it was urllib's parse_qsl on the whole body (the reference)."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        return 216100
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form


def _random_body(rng: random.Random) -> bytes:
    """A form body made of the pieces that make url-decoding hard: '+' and '%2B', escapes that are not
    escapes ('%', '%4', '%zz', '%%41'), '=' and '&' in odd places, line breaks, raw and escaped UTF-8
    (valid and not), long base64 text, and the odd byte that is not UTF-8 at all."""
    atoms = [
        "+", "%2B", "%2b", "%2F", "%3D", "%3d", "%20", "%", "%4", "%zz", "%%41", "%G1", "=", "==", "&", "&&",
        "\r", "\n", "%0A", "%0D", "=\n", "%=", "é", "图", "%E5%9B%BE", "%E5%9B", "%C3", "%C3%A9", "%FF",
        "%80", "a", "Z", "0", "_", "-", ".", "~", " ", "brief", "image", "tags",
        base64.b64encode(rng.randbytes(rng.randrange(0, 600))).decode().replace("+", "%2B").replace("/", "%2F"),
    ]  # fmt: skip
    text = "".join(rng.choice(atoms) for _ in range(rng.randrange(0, 40)))
    raw = text.encode()
    if rng.random() < 0.03:
        at = rng.randrange(len(raw) + 1)
        raw = raw[:at] + rng.choice([b"\xff", b"\xc3", b"\x80"]) + raw[at:]
    return raw


def test_parse_form_answers_what_urllib_answers_on_random_bodies() -> None:
    rng = random.Random(1414)
    bodies = [_random_body(rng) for _ in range(2500)]
    bodies += [b"&".join(b"k%d=1" % i for i in range(n)) for n in (63, 64, 65)]
    for body in bodies:
        try:
            got: dict[str, str] | int = protocol.parse_form(body)
        except ApiError as e:
            got = e.code
        assert got == _form_by_urllib(body), body


def test_parse_form_decodes_an_image_without_urllib(monkeypatch: pytest.MonkeyPatch) -> None:
    """The usual add body (escaped base64, an escaped UTF-8 brief, tags) is decoded in C: urllib's
    unquote walks a 1 MB image escape by escape."""
    image = base64.b64encode(random.Random(3).randbytes(30_000)).decode()
    body = "image={}&brief=%E5%9B%BE+1&tags=1%2C2".format(
        image.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    ).encode()
    monkeypatch.setattr(protocol, "parse_qsl", lambda *a, **k: pytest.fail("urllib decoded the form"))
    assert protocol.parse_form(body) == {"image": image, "brief": "图 1", "tags": "1,2"}


@pytest.mark.parametrize(
    ("raw", "token"),
    [
        ("24.abc.2592000", "24.abc.2592000"),
        ("24.abc?aipSdk=node", "24.abc"),
        (" t ", "t"),
        ("", None),
        ("?aipSdk=node", None),
        (None, None),
    ],
)
def test_clean_access_token(raw: str | None, token: str | None) -> None:
    assert protocol.clean_access_token(raw) == token


# --- auth ------------------------------------------------------------------------------------------


def test_authority_issues_checks_and_expires_tokens_that_need_no_storage() -> None:
    clock = FakeClock()
    auth = Authority([("ak", "sk")], ttl=60, clock=clock)
    answer = auth.issue({"grant_type": "client_credentials", "client_id": " ak ", "client_secret": "sk"})
    token = str(answer.body["access_token"])
    assert answer.status == 200 and answer.body["expires_in"] == 60 and ".60." in token
    assert re.fullmatch(r"24\.[0-9a-f]{32}\.60\.\d+\.282335-\d+", token)
    assert auth.check(token) == "ak"
    # Another process of this gallery (a restart, another replica) with the same key accepts it; with
    # another secret for that key, without the key, or in another gallery (realm), it does not.
    assert Authority([("other", "x"), ("ak", "sk")], ttl=60, clock=clock).check(token) == "ak"
    for keys, realm in (([("ak", "new-secret")], ""), ([("other", "sk")], ""), ([("ak", "sk")], "another gallery")):
        with pytest.raises(ApiError) as info:
            Authority(keys, clock=clock, realm=realm).check(token)
        assert info.value.code == 110
    clock.advance(60)
    with pytest.raises(ApiError) as info:
        auth.check(token)
    assert info.value.code == 111
    forged = token.replace(".60.", ".6000.")  # a longer life is not the signed one
    tampered = token[:3] + ("0" if token[3] != "0" else "1") + token[4:]
    for bad in (None, "", token + "x", forged, tampered, "24.deadbeef", "24." + "0" * 32 + ".60.1.282335-1"):
        with pytest.raises(ApiError) as info:
            auth.check(bad)
        assert info.value.code == 110, bad


def test_authority_refusals() -> None:
    auth = Authority([("ak", "sk")])
    assert auth.issue({"client_id": "ak", "client_secret": "sk"}).body["error"] == "unsupported_grant_type"
    bad = auth.issue({"grant_type": "client_credentials", "client_id": "ak", "client_secret": "nope"})
    assert (bad.status, bad.body["error_description"]) == (401, "Client authentication failed")
    unknown = auth.issue({"grant_type": "client_credentials", "client_secret": "sk"})
    assert (unknown.status, unknown.body["error_description"]) == (401, "unknown client id")


def test_created_key_is_private_and_stable(tmp_path: Path) -> None:
    key, created = load_or_create_key(tmp_path)
    again, created_again = load_or_create_key(tmp_path)
    assert created and not created_again and key == again
    assert (tmp_path / "server-key.json").stat().st_mode & 0o077 == 0


# --- rate limit ------------------------------------------------------------------------------------


def test_rate_limiter_sliding_window_per_key() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
    clock.advance(0.5)
    assert not limiter.allow("a")
    clock.advance(0.5)
    assert limiter.allow("a")


def test_rate_limiter_fractional_rate_widens_the_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.5, clock=clock)
    assert limiter.allow("a") and not limiter.allow("a")
    clock.advance(1.5)
    assert not limiter.allow("a")
    clock.advance(0.5)
    assert limiter.allow("a")


@pytest.mark.parametrize("qps", [0, -1, float("inf"), float("nan")])
def test_rate_limiter_refuses_nonsense_rates(qps: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter(qps)


# --- url judgements --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("", 282114),
        ("http://a.example/" + "x" * 1024, 282114),
        ("ftp://a.example/x.jpg", 282111),
        ("file:///etc/passwd", 282111),
        ("gopher://a/", 282111),
        ("http:///x.jpg", 282111),
        ("http://a.example/ x.jpg", 282111),
        ("http://[::1/x", 282111),
        ("http://a.example:99999/x", 282111),
        ("javascript:alert(1)", 282111),
    ],
)
def test_judge_url_refusals(url: str, code: int) -> None:
    with pytest.raises(ApiError) as info:
        judge_url(url)
    assert info.value.code == code


def test_judge_url_accepts_http_and_https() -> None:
    assert judge_url("HTTPS://Example.com/a.jpg") == ("example.com", 443)
    assert judge_url("http://example.com:8080/a.jpg?x=1") == ("example.com", 8080)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("ff02::1", False),
        ("not-an-ip", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_fetcher_refuses_hosts_resolving_to_any_internal_address_before_connecting() -> None:
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["93.184.216.34", "10.0.0.5"]  # one internal answer is enough to refuse

    with pytest.raises(ApiError) as info:
        UrlFetcher(resolver=resolver).fetch("http://mixed.example/a.jpg")
    assert info.value.code == 282111 and calls == ["mixed.example"]


def test_fetcher_switched_off_refuses_every_url() -> None:
    with pytest.raises(ApiError) as info:
        UrlFetcher(enabled=False).fetch("http://example.com/a.jpg")
    assert info.value.code == 282111


def test_looks_like_image() -> None:
    assert looks_like_image(b"\xff\xd8\xff\xe0") and looks_like_image(b"\x89PNG\r\n\x1a\n....")
    assert not looks_like_image(b"<html>") and not looks_like_image(b"")
