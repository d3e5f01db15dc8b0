"""Briefs: ≤ 256 bytes, the id always whole, never cut mid-character or mid-JSON."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from imgsync.brief import entry_id_from_brief, render_brief

TEMPLATE = '{"id":{id},"path":"{path}"}'


def test_short_path_is_kept_whole():
    b = render_brief(TEMPLATE, entry_id=7, path='dir/a "quoted" \\ name.jpg', mirror="m", library="same_hq")
    assert json.loads(b) == {"id": 7, "path": 'dir/a "quoted" \\ name.jpg'}


@given(path=st.text(min_size=1, max_size=600), entry_id=st.integers(1, 10**12))
def test_any_path_gives_valid_json_within_256_bytes(path, entry_id):
    b = render_brief(TEMPLATE, entry_id=entry_id, path=path, mirror="m", library="same_hq")
    assert len(b.encode("utf-8")) <= 256
    value = json.loads(b)  # never cut mid-escape
    assert value["id"] == entry_id and entry_id_from_brief(b) == entry_id
    assert value["path"] == path or (value["path"].startswith("…") and path.endswith(value["path"][1:]))


@given(path=st.text(min_size=1, max_size=600))
def test_plain_template_is_cut_on_character_boundaries(path):
    b = render_brief("{id} {path}", entry_id=42, path=path, mirror="m", library="same_hq")
    assert len(b.encode("utf-8")) <= 256
    b.encode("utf-8").decode("utf-8")
    assert b.startswith("42 ") and entry_id_from_brief(b) == 42


def test_other_placeholders():
    b = render_brief(
        "{id}|{name}|{stem}|{mirror}|{library}", entry_id=1, path="a/b/c.d.jpg", mirror="m", library="similar"
    )
    assert b == "1|c.d.jpg|c.d|m|similar"


def test_undecodable_file_name_gives_valid_utf8_that_leads_back_to_the_exact_bytes():
    import os

    path = b'caf\xe9/\xff "q".jpg'.decode("utf-8", "surrogateescape")
    b = render_brief(TEMPLATE, entry_id=3, path=path, mirror="m", library="same_hq")
    value = json.loads(b.encode("utf-8"))  # valid UTF-8 on the wire
    assert value["id"] == 3 and os.fsencode(value["path"]) == b'caf\xe9/\xff "q".jpg'  # reversible


def test_undecodable_file_name_in_a_plain_template_shows_its_bytes():
    path = b"caf\xe9/\xff.jpg".decode("utf-8", "surrogateescape")
    b = render_brief("{id} {path}", entry_id=3, path=path, mirror="m", library="same_hq")
    assert b == "3 caf\\xe9/\\xff.jpg" and b.encode("utf-8")
