"""Render an entry's brief: the text the gallery stores and returns with every search hit.

The brief is how a search result leads back to local files, so it carries the entry's stable id
(always whole) and, space permitting, the path. The cloud allows 256 bytes. When the rendered
template is too long the *path* is shortened from the front ("…/dir/file.jpg": the file name is
the most telling part), and it is shortened as text before escaping, so the result is never cut
mid-character or mid-escape; when the template is JSON the result is valid JSON.
"""

from __future__ import annotations

import functools
import json
import posixpath
import re

from imgsync.libraries import MAX_BRIEF_BYTES

_FIELD = re.compile(r"\{(id|path|name|stem|mirror|library)\}")
ELLIPSIS = "…"


def is_json_template(template: str) -> bool:
    """True when the template is JSON once its placeholders are filled (then values are JSON-escaped)."""
    probe = _FIELD.sub(lambda m: "1" if m.group(1) == "id" else "x", template)
    try:
        json.loads(probe)
    except ValueError:
        return False
    return True


def render_brief(
    template: str, *, entry_id: int, path: str, mirror: str, library: str, limit: int = MAX_BRIEF_BYTES
) -> str:
    """The brief for entry `entry_id` whose primary file is `path`; at most `limit` UTF-8 bytes."""
    parts, as_json = _compiled(template)
    # A file name that is not valid UTF-8 reaches us with surrogate escapes (os.fsdecode), which UTF-8 on
    # the wire cannot carry. A JSON brief (the default) keeps them as JSON escapes ("\udcff"): json.loads
    # gives back the very str, and os.fsencode the file's bytes. A plain template shows them as "\xff".
    if not as_json and not path.isascii():
        path = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    escape = _json_escape if as_json else _plain

    def fill(p: str) -> str:
        name = posixpath.basename(p)
        values = {
            "id": str(entry_id),
            "path": p,
            "name": name,
            "stem": posixpath.splitext(name)[0],
            "mirror": mirror,
            "library": library,
        }
        # Literal text at even positions, field names at odd ones (see _compiled).
        return "".join(part if i % 2 == 0 else escape(values[part]) for i, part in enumerate(parts))

    text = fill(path)
    if len(text) <= limit and (text.isascii() or _size(text) <= limit):
        return text
    # Too long: keep the tail of the path, dropping whole characters from the front.
    chars = list(path)
    lo, hi = 0, len(chars)  # binary search for the fewest characters to drop
    while lo < hi:
        mid = (lo + hi) // 2
        if _size(fill(ELLIPSIS + "".join(chars[mid:]))) <= limit:
            hi = mid
        else:
            lo = mid + 1
    text = fill(ELLIPSIS + "".join(chars[lo:]))
    if _size(text) > limit:
        # Even an empty path does not fit: the template or mirror name is too long. Config validation
        # should catch that; fall back to the id alone, which always fits.
        return str(entry_id)
    return text


@functools.lru_cache(maxsize=64)
def _compiled(template: str) -> tuple[tuple[str, ...], bool]:
    """The template split into literal text and field names (alternating), and whether it is JSON.
    Cached: a plan renders one brief per entry, 100k of them for a big folder."""
    return tuple(_FIELD.split(template)), is_json_template(template)


_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\ud800-\udfff]')  # json.dumps' escapes, and lone surrogates
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _json_escape(value: str) -> str:
    # json.dumps(...)[1:-1] escapes quotes, backslashes and control characters; ensure_ascii=False
    # keeps non-ASCII names readable (and shorter than \uXXXX escapes). Most paths need none of it.
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    return escape_surrogates(json.dumps(value, ensure_ascii=False)[1:-1])


def escape_surrogates(json_text: str) -> str:
    """JSON text from json.dumps(ensure_ascii=False) with its lone surrogates (undecodable bytes of a file
    name) written as \\uXXXX escapes, so the text is valid UTF-8 and json.loads returns the same str."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json_text)


def _plain(value: str) -> str:
    return value


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def entry_id_from_brief(brief: str) -> int | None:
    """The entry id a brief carries, for mapping a search hit back to local files; None if foreign."""
    try:
        value = json.loads(brief)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("id"), int):
        return value["id"]
    if isinstance(value, int):
        return value
    m = re.match(r"^\s*(\d+)\b", brief)
    return int(m.group(1)) if m else None
