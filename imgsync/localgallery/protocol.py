"""The wire protocol's parameters, parsed and judged: form fields in, typed requests out (or ApiError).

Pure: no I/O, no engine, no HTTP. app.py hands this module the decoded form of one API call and gets
back one of AddRequest / SearchRequest / UpdateRequest / DeleteRequest, or an ApiError carrying the
code the cloud would answer. Keeping it pure is what lets tests/test_localgallery_protocol.py try
every parameter rule without a server.

Order of checks, per call (first failure wins, as a single error answer can only name one thing):
  1. the image source: image > url > cont_sign (216101 "param image not exist" when none is given),
  2. brief (add: required; ≤ 256 bytes UTF-8), 3. tags / tag_logic or class_id1/class_id2,
  4. paging (search), 5. the base64 text of `image` (size, then decoding).
Where the cloud's exact behaviour is unconfirmed the choice made here is listed in docs/local-gallery.md.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from imgsync.libraries import (
    DEFAULT_RN,
    MAX_BRIEF_BYTES,
    MAX_IMAGE_BASE64,
    MAX_RESULTS,
    MAX_TAGS,
    TAG_RANGE,
    Library,
    Operation,
)
from imgsync.localgallery.errors import (
    EMPTY_IMAGE,
    IMAGE_DECODE_ERROR,
    IMAGE_SIZE_ERROR,
    INVALID_PARAM,
    ApiError,
    missing,
)

#: Most form fields one request may carry; far above any real call, low enough to bound parsing work.
MAX_FORM_FIELDS = 64
CLASS_ID_RANGE = (1, 65535)
# A cont_sign is two unsigned decimal integers ("4261577168,501945506"). Every example fits uint32 but
# one doc example does not ("932301884,10680062193"), so any digit run up to 20 is accepted as well-formed.
_CONT_SIGN = re.compile(r"\d{1,20},\d{1,20}")
#: What decode_image drops from base64 text (MIME-style line breaks).
_LINE_BREAKS = {ord(c): None for c in "\r\n\t"}
_DATA_URI = re.compile(r"^\s*data:[^,]{0,100},", re.IGNORECASE)


# --- typed requests -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageBytes:
    data: bytes


@dataclass(frozen=True, slots=True)
class ImageUrl:
    url: str


@dataclass(frozen=True, slots=True)
class ContSigns:
    #: one for update; one or more (deduplicated, in order) for delete.
    signs: tuple[str, ...]


ImageSource = ImageBytes | ImageUrl
Target = ImageBytes | ImageUrl | ContSigns
ClassIds = tuple[int | None, int | None]


@dataclass(frozen=True, slots=True)
class AddRequest:
    library: str
    source: ImageSource
    brief: str
    tags: tuple[int, ...] = ()
    class_ids: ClassIds = (None, None)


@dataclass(frozen=True, slots=True)
class SearchRequest:
    library: str
    source: ImageSource
    tags: tuple[int, ...] = ()
    tag_logic: int = 0
    class_ids: ClassIds = (None, None)
    pn: int = 0
    #: already capped so that pn + rn ≤ MAX_RESULTS.
    rn: int = DEFAULT_RN


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    library: str
    target: Target
    brief: str | None = None
    tags: tuple[int, ...] | None = None
    class_ids: ClassIds | None = None


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    library: str
    target: Target


ApiRequest = AddRequest | SearchRequest | UpdateRequest | DeleteRequest


# --- the form body ---------------------------------------------------------------------------------


def parse_form(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body → {name: value}; the first of repeated names wins.

    Values arrive percent-decoded as UTF-8; a body that is not valid UTF-8 or has absurdly many
    fields is refused with 216100 rather than guessed at. The result is urllib.parse.parse_qsl's
    (keep_blank_values, strict UTF-8), field by field: an ASCII field is decoded in C (_unquote),
    anything else by urllib. (urllib walks a 1 MB base64 image escape by escape: ~10 ms per add, and
    its garbage kept the cyclic collector busy.)
    """
    if body and body.count(b"&") + 1 > MAX_FORM_FIELDS:
        raise ApiError(INVALID_PARAM, f"more than {MAX_FORM_FIELDS} form fields")
    form: dict[str, str] = {}
    try:
        for field in body.split(b"&"):
            if not field:
                continue
            raw_name, _, raw_value = field.partition(b"=")
            name = _unquote(raw_name) if field.isascii() else None
            value = _unquote(raw_value) if name is not None else None
            if name is None or value is None:
                # Raw (un-escaped) UTF-8 is tolerated as well as %-escapes: some clients do not escape briefs.
                pairs = parse_qsl(field.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict")
                name, value = pairs[0]
            form.setdefault(name, value)
    except UnicodeDecodeError:
        raise ApiError(INVALID_PARAM, "form body is not valid UTF-8 url-encoding") from None
    return form


#: '+' is a space; '%' becomes quoted-printable's '=', so that binascii.a2b_qp decodes the escapes in C.
_TO_QP = bytes.maketrans(b"+%", b" =")


def _unquote(raw: bytes) -> str | None:
    """urllib.parse.unquote_plus(raw, errors="strict") of an ASCII field part, or None when it holds
    something only urllib should judge (a line break, which a2b_qp reads as a soft line break)."""
    if b"%" not in raw:
        return raw.replace(b"+", b" ").decode("ascii")
    if b"\r" in raw or b"\n" in raw:
        return None
    # A literal '=' would be an escape to a2b_qp: decode between them ('%' next to '=' is no escape).
    parts = [_unquote_qp(p) for p in raw.split(b"=")] if b"=" in raw else [_unquote_qp(raw)]
    if None in parts:
        return None
    return b"=".join(parts).decode("utf-8")  # type: ignore[arg-type]  # (no None: checked above)


def _unquote_qp(raw: bytes) -> bytes | None:
    out = binascii.a2b_qp(raw.translate(_TO_QP))
    # Each '%' with two hex digits after it shortens the text by 2, any other '%' by less (urllib
    # keeps such a '%' as it is; a2b_qp does not): then urllib decodes it.
    return out if len(out) == len(raw) - 2 * raw.count(b"%") else None


def clean_access_token(raw: str | None) -> str | None:
    """The token from the query string. The Node SDK sends `access_token=TOKEN?aipSdk=node`, so
    everything from the first '?' is dropped; surrounding whitespace too."""
    if raw is None:
        return None
    token = raw.split("?", 1)[0].strip()
    return token or None


# --- the dispatcher --------------------------------------------------------------------------------


def parse_request(library: Library, op: Operation, form: Mapping[str, str]) -> ApiRequest:
    """One API call's form → its typed request, or ApiError naming the first bad parameter."""
    if op == "add":
        return _parse_add(library, form)
    if op == "search":
        return _parse_search(library, form)
    if op == "update":
        return _parse_update(library, form)
    return _parse_delete(library, form)


def _parse_add(library: Library, form: Mapping[str, str]) -> AddRequest:
    source = parse_source(form)
    brief = parse_brief(form.get("brief"))
    if brief is None:
        raise missing("brief")
    tags, class_ids = _labels(library, form)
    return AddRequest(library.name, decode_source(source), brief, tags or (), class_ids or (None, None))


def _parse_search(library: Library, form: Mapping[str, str]) -> SearchRequest:
    source = parse_source(form)
    tags, class_ids = _labels(library, form)
    tag_logic = parse_tag_logic(form.get("tag_logic")) if library.labels == "tags" else 0
    pn, rn = parse_paging(form.get("pn"), form.get("rn"))
    return SearchRequest(library.name, decode_source(source), tags or (), tag_logic, class_ids or (None, None), pn, rn)


def _parse_update(library: Library, form: Mapping[str, str]) -> UpdateRequest:
    target = parse_target(form, allow_batch=False, batch_max=1)
    brief = parse_brief(form.get("brief"))
    tags, class_ids = _labels(library, form)
    if brief is None and tags is None and class_ids is None:
        # Nothing to change. The cloud's answer is unconfirmed; the SDKs always send brief, so we
        # ask for it by name.
        raise missing("brief")
    return UpdateRequest(library.name, decode_target(target), brief, tags, class_ids)


def _parse_delete(library: Library, form: Mapping[str, str]) -> DeleteRequest:
    target = parse_target(form, allow_batch=True, batch_max=library.batch_delete_max)
    return DeleteRequest(library.name, decode_target(target))


def _labels(library: Library, form: Mapping[str, str]) -> tuple[tuple[int, ...] | None, ClassIds | None]:
    """(tags, None) for tag libraries, (None, class_ids) for product; the other kind is ignored,
    as unknown parameters are. None means "not given"."""
    if library.labels == "class_id":
        return None, parse_class_ids(form.get("class_id1"), form.get("class_id2"))
    return parse_tags(form.get("tags")), None


# --- single parameters -----------------------------------------------------------------------------


def _given(value: str | None) -> bool:
    return value is not None and value.strip() != ""


def parse_source(form: Mapping[str, str]) -> ImageSource | _RawImage:
    """image (priority) or url; neither → 216101 "param image not exist"."""
    image = form.get("image")
    if image is not None:
        # A present-but-empty image field is an empty image (216200), not a missing one.
        return _RawImage(image)
    url = form.get("url")
    if _given(url):
        assert url is not None
        return ImageUrl(url.strip())
    raise missing("image")


def parse_target(form: Mapping[str, str], *, allow_batch: bool, batch_max: int) -> Target | _RawImage:
    """image > url > cont_sign; none → 216101 "param image not exist"."""
    if "image" in form or _given(form.get("url")):
        return parse_source(form)
    raw = form.get("cont_sign")
    if not _given(raw):
        raise missing("image")
    assert raw is not None
    return ContSigns(parse_cont_signs(raw, allow_batch=allow_batch, batch_max=batch_max))


def parse_cont_signs(raw: str, *, allow_batch: bool, batch_max: int) -> tuple[str, ...]:
    """ "a,b;c,d;..." → ("a,b", "c,d", ...), deduplicated in order; empty items between ';' are skipped."""
    items = [s.strip() for s in raw.split(";") if s.strip()]
    if not items:
        raise missing("cont_sign")
    if len(items) > 1 and not allow_batch:
        raise ApiError(INVALID_PARAM, "update takes a single cont_sign, not a batch")
    bad = next((s for s in items if not _CONT_SIGN.fullmatch(s)), None)
    if bad is not None:
        raise ApiError(INVALID_PARAM, f"cont_sign {bad[:40]!r} is not two comma-separated integers")
    unique = tuple(dict.fromkeys(items))
    if len(unique) > batch_max:
        raise ApiError(INVALID_PARAM, f"{len(unique)} cont_signs in one call; at most {batch_max}")
    return unique


def parse_brief(raw: str | None) -> str | None:
    """None when absent or empty; 216100 when longer than 256 bytes of UTF-8."""
    if raw is None or raw == "":
        return None
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_BRIEF_BYTES:
        raise ApiError(INVALID_PARAM, f"brief too long (more than {MAX_BRIEF_BYTES} bytes)")
    return raw


def parse_tags(raw: str | None) -> tuple[int, ...] | None:
    """ "100,11" → (100, 11); absent or empty → None; at most 2 integers in 1..65535 (216100 otherwise)."""
    if raw is None or raw.strip() == "":
        return None
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) > MAX_TAGS:
        raise ApiError(INVALID_PARAM, f"tags: at most {MAX_TAGS} tags, got {len(parts)}")
    tags = tuple(_int_in_range("tags", p, TAG_RANGE) for p in parts)
    return tuple(dict.fromkeys(tags))


def parse_tag_logic(raw: str | None) -> int:
    """ "0" (AND, the default) or "1" (OR)."""
    if raw is None or raw.strip() == "":
        return 0
    if raw.strip() not in ("0", "1"):
        raise ApiError(INVALID_PARAM, "tag_logic must be 0 (and) or 1 (or)")
    return int(raw.strip())


def parse_class_ids(raw1: str | None, raw2: str | None) -> ClassIds | None:
    """product's class_id1 / class_id2, each 1..65535 or absent; both absent → None."""
    ids = tuple(
        None if r is None or r.strip() == "" else _int_in_range(name, r, CLASS_ID_RANGE)
        for name, r in (("class_id1", raw1), ("class_id2", raw2))
    )
    if ids == (None, None):
        return None
    return ids[0], ids[1]


def parse_paging(raw_pn: str | None, raw_rn: str | None) -> tuple[int, int]:
    """pn in 0..999 (default 0), rn in 1..1000 (default 300); rn is then cut so pn + rn ≤ 1000,
    the most results a search can ever reach (the doc's "900 + 500 → results 900-1000")."""
    pn = 0 if not _given(raw_pn) else _int_in_range("pn", raw_pn or "", (0, MAX_RESULTS - 1))
    rn = DEFAULT_RN if not _given(raw_rn) else _int_in_range("rn", raw_rn or "", (1, MAX_RESULTS))
    return pn, min(rn, MAX_RESULTS - pn)


def _int_in_range(name: str, raw: str, bounds: tuple[int, int]) -> int:
    text = raw.strip()
    # isdecimal() also accepts non-ASCII digits ("١٢"), which the cloud would not; insist on ASCII.
    if not (text.isascii() and text.isdecimal()) or len(text) > 10:
        raise ApiError(INVALID_PARAM, f"{name} must be an integer in {bounds[0]}..{bounds[1]}")
    value = int(text)
    if not bounds[0] <= value <= bounds[1]:
        raise ApiError(INVALID_PARAM, f"{name} must be an integer in {bounds[0]}..{bounds[1]}")
    return value


# --- the image's base64 ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _RawImage:
    """The `image` field before decoding: decoded last, so cheap parameter errors are reported first."""

    text: str


def decode_source(source: ImageSource | _RawImage) -> ImageSource:
    return ImageBytes(decode_image(source.text)) if isinstance(source, _RawImage) else source


def decode_target(target: Target | _RawImage) -> Target:
    return ImageBytes(decode_image(target.text)) if isinstance(target, _RawImage) else target


def decode_image(text: str) -> bytes:
    """The `image` field → raw bytes.

    216202 when the base64 text is over 4 MB; 216203 when it is not base64 (including a data-URI
    header, which the doc says must be removed); 216200 when it is empty. A space is read as '+'
    (a client that forgot to url-encode sends '+' which the form decoding turns into ' '), line
    breaks are dropped (MIME-style encoders) and missing '=' padding is tolerated.
    """
    if len(text) > MAX_IMAGE_BASE64:
        raise ApiError(IMAGE_SIZE_ERROR, f"image base64 is {len(text)} bytes; at most {MAX_IMAGE_BASE64}")
    if _DATA_URI.match(text):
        raise ApiError(IMAGE_DECODE_ERROR, "image must be bare base64, without a 'data:...;base64,' header")
    if text.strip() == "":
        raise ApiError(EMPTY_IMAGE)
    cleaned = text.replace(" ", "+")
    if "\n" in cleaned or "\r" in cleaned or "\t" in cleaned:  # (a translate() walks every character: 0.7 ms)
        cleaned = cleaned.translate(_LINE_BREAKS)
    if cleaned == "":
        raise ApiError(EMPTY_IMAGE)
    if len(cleaned) % 4 == 1:
        raise ApiError(IMAGE_DECODE_ERROR, "image is not valid base64")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        data = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(IMAGE_DECODE_ERROR, "image is not valid base64") from None
    if not data:
        raise ApiError(EMPTY_IMAGE)
    return data
