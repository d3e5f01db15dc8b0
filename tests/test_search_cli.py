"""`imgsync search` end to end: CliRunner, the embedded local gallery in a temp state dir (started in-process
by open_gallery, real HTTP on 127.0.0.1), real images on disk."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

import imgsync.cli.search_cmd  # noqa: F401 - registers `search` on the root group
from conftest import make_image
from imgsync.cli import cli
from imgsync.config import load_config
from imgsync.embedded import open_gallery
from imgsync.errors import ConfigError, UsageError
from imgsync.query import parse_tags


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text("")
    return {"IMGSYNC_STATE_DIR": str(tmp_path / "state"), "IMGSYNC_CONFIG": str(config)}


def _populate(env: dict[str, str], library: str = "same_hq") -> dict[str, str]:
    """Add three images to the embedded gallery; returns {brief: cont_sign}."""
    config = load_config(env=env)
    with open_gallery(config) as gallery:
        return {
            f"photo-{i}.jpg": gallery.add(library, image=make_image(40 + i), brief=f"photo-{i}.jpg") for i in range(3)
        }


def test_search_prints_a_ranked_table(env: dict[str, str], tmp_path: Path) -> None:
    signs = _populate(env)
    query = tmp_path / "query.png"
    query.write_bytes(make_image(41, fmt="PNG"))  # the same picture as photo-1, in another format
    result = CliRunner().invoke(cli, ["search", str(query)], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["#", "score", "cont_sign", "brief"]
    rank, score, cont_sign, brief = lines[1].split()
    assert (rank, cont_sign, brief) == ("1", signs["photo-1.jpg"], "photo-1.jpg")
    assert 0.5 < float(score) <= 1.0


def test_search_json(env: dict[str, str], tmp_path: Path) -> None:
    signs = _populate(env)
    query = tmp_path / "q.jpg"
    query.write_bytes(make_image(42))
    result = CliRunner().invoke(cli, ["search", str(query), "--json", "--top", "1"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    rows = json.loads(result.stdout)
    assert len(rows) == 1
    assert rows[0]["cont_sign"] == signs["photo-2.jpg"] and rows[0]["brief"] == "photo-2.jpg"
    assert set(rows[0]) == {"cont_sign", "score", "brief", "paths"} and isinstance(rows[0]["score"], float)
    assert rows[0]["paths"] == []  # nothing reconciled here: no file to lead back to


def test_no_match_is_not_an_error(env: dict[str, str], tmp_path: Path) -> None:
    _populate(env)
    query = tmp_path / "other.jpg"
    query.write_bytes(make_image(999))
    result = CliRunner().invoke(cli, ["search", str(query), "--json"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads(result.stdout) == []


def test_tags_filter_reaches_the_gallery(env: dict[str, str], tmp_path: Path) -> None:
    config = load_config(env=env)
    image = make_image(77)
    with open_gallery(config) as gallery:
        gallery.add("same_hq", image=image, brief="tagged", tags=[5])
    query = tmp_path / "q.jpg"
    query.write_bytes(image)
    hit = CliRunner().invoke(cli, ["search", str(query), "--tags", "5", "--json"], env=env)
    miss = CliRunner().invoke(cli, ["search", str(query), "--tags", "6", "--json"], env=env)
    assert (hit.exit_code, miss.exit_code) == (0, 0), (hit.output, miss.output, hit.exception, miss.exception)
    assert [r["brief"] for r in json.loads(hit.stdout)] == ["tagged"]
    assert json.loads(miss.stdout) == []


def test_library_defaults_to_the_mirrors_library(env: dict[str, str], tmp_path: Path) -> None:
    Path(env["IMGSYNC_CONFIG"]).write_text(
        f'[[mirror]]\nname = "pics"\nfolder = "{tmp_path / "pics"}"\nlibrary = "similar"\n'
    )
    signs = _populate(env, library="similar")
    query = tmp_path / "q.jpg"
    query.write_bytes(make_image(40))
    result = CliRunner().invoke(cli, ["search", str(query), "--json"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    assert [r["cont_sign"] for r in json.loads(result.stdout)][:1] == [signs["photo-0.jpg"]]


def test_missing_file_is_a_usage_error(env: dict[str, str], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["search", str(tmp_path / "nope.jpg")], env=env)
    assert result.exit_code == 2
    assert "nope.jpg: no such file" in result.output


@pytest.mark.parametrize("tags", ["1,2,3", "0", "70000", "a"])
def test_bad_tags_are_a_usage_error(env: dict[str, str], tmp_path: Path, tags: str) -> None:
    query = tmp_path / "q.jpg"
    query.write_bytes(make_image(1))
    result = CliRunner().invoke(cli, ["search", str(query), "--tags", tags], env=env)
    assert result.exit_code == 2
    assert "--tags" in result.output


def test_tags_on_product_are_refused(env: dict[str, str], tmp_path: Path) -> None:
    query = tmp_path / "q.jpg"
    query.write_bytes(make_image(1))
    result = CliRunner().invoke(cli, ["search", str(query), "--library", "product", "--tags", "1"], env=env)
    assert result.exit_code == 2 and "class ids, not tags" in result.output


def test_a_url_is_sent_for_the_gallery_to_fetch(env: dict[str, str]) -> None:
    # The embedded gallery refuses loopback URLs (no SSRF): the refusal proves the URL went as url=.
    result = CliRunner().invoke(cli, ["search", "http://127.0.0.1:9/x.jpg"], env=env)
    assert result.exit_code == 1
    assert "same_hq search failed: 2821" in result.output


def test_embedded_key_is_created_once_and_private(env: dict[str, str]) -> None:
    config = load_config(env=env)
    with open_gallery(config) as first:
        first.add("same_hq", image=make_image(1), brief="kept")
    key_file = config.state_dir / "gallery" / "server-key.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    saved = key_file.read_text()
    with open_gallery(config) as second:  # a new process would do the same: same key, same data
        assert second.search("same_hq", image=make_image(1)).hits[0].brief == "kept"
    assert key_file.read_text() == saved


def test_remote_endpoint_needs_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[gallery]\nendpoint = "https://aip.baidubce.com"\n')
    config = load_config(cfg, env={}, state_dir=tmp_path / "s")
    with pytest.raises(ConfigError, match="IMGSYNC_API_KEY"), open_gallery(config):
        pass
    config = load_config(cfg, env={"IMGSYNC_API_KEY": "k"}, state_dir=tmp_path / "s")
    with pytest.raises(ConfigError, match="IMGSYNC_SECRET_KEY"), open_gallery(config):
        pass


def test_remote_endpoint_with_keys_from_the_environment(gallery_server, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[gallery]\nendpoint = "{gallery_server.url}"\n')
    env = {
        "IMGSYNC_CONFIG": str(cfg),
        "IMGSYNC_STATE_DIR": str(tmp_path / "s"),
        "IMGSYNC_API_KEY": gallery_server.api_key,
        "IMGSYNC_SECRET_KEY": gallery_server.secret_key,
    }
    with open_gallery(load_config(env=env)) as gallery:
        sign = gallery.add("same_hq", image=make_image(8), brief="remote")
    query = tmp_path / "q.jpg"
    query.write_bytes(make_image(8))
    result = CliRunner().invoke(cli, ["search", str(query), "--json"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads(result.stdout)[0]["cont_sign"] == sign
    assert not (tmp_path / "s" / "gallery").exists()  # nothing started locally


def test_bad_secret_exits_4_without_showing_it(gallery_server, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[gallery]\nendpoint = "{gallery_server.url}"\n')
    env = {
        "IMGSYNC_CONFIG": str(cfg),
        "IMGSYNC_STATE_DIR": str(tmp_path / "s"),
        "IMGSYNC_API_KEY": gallery_server.api_key,
        "IMGSYNC_SECRET_KEY": "not-the-secret",
    }
    query = tmp_path / "q.jpg"
    query.write_bytes(make_image(8))
    result = CliRunner().invoke(cli, ["search", str(query)], env=env)
    assert result.exit_code == 4
    assert "secret key does not match" in result.output and "not-the-secret" not in result.output


# --------------------------------------------------------------------------- pure helpers


def test_the_table_names_files_and_falls_back_to_briefs() -> None:
    from imgsync.api import Hit
    from imgsync.render import hits_table

    lines = hits_table([Hit(0.9, "2,2", "a", (Path("/p/a.jpg"), Path("/p/copy.jpg"))), Hit(0.5, "1,1", "b")])
    assert lines[0].split() == ["#", "score", "cont_sign", "file"]
    assert lines[1].split() == ["1", "0.9000", "2,2", "/p/a.jpg"] and lines[2].split() == ["/p/copy.jpg"]
    assert lines[3].split() == ["2", "0.5000", "1,1", "b"]  # an entry no mirror here added: its brief


def test_parse_tags() -> None:
    assert parse_tags("1, 65535") == (1, 65535)
    assert parse_tags(None) == () and parse_tags(" ") == ()
    with pytest.raises(UsageError):
        parse_tags("1,,2")


def test_hits_lead_back_to_local_files_through_the_manifest(env: dict[str, str], tmp_path: Path) -> None:
    import imgsync.cli.reconcile_cmd  # noqa: F401 - registers `reconcile`

    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    image = make_image(5)
    for rel in ("a.jpg", "sub/copy.jpg"):  # one entry, two files
        (folder / rel).write_bytes(image)
    (folder / "b.jpg").write_bytes(make_image(6))
    for p in folder.rglob("*.jpg"):
        p.touch()
        import os

        t = p.stat().st_mtime_ns - 10**10
        os.utime(p, ns=(t, t))
    done = CliRunner().invoke(cli, ["reconcile", str(folder)], env=env)
    assert done.exit_code == 0, (done.output, done.exception)
    query = tmp_path / "q.png"
    query.write_bytes(make_image(5, fmt="PNG"))
    result = CliRunner().invoke(cli, ["search", str(query), "--json", "--top", "1"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    [row] = json.loads(result.stdout)
    assert row["paths"] == [str(folder / "a.jpg"), str(folder / "sub" / "copy.jpg")]
    table = CliRunner().invoke(cli, ["search", str(query), "--top", "1"], env=env)
    assert str(folder / "a.jpg") in table.stdout and str(folder / "sub" / "copy.jpg") in table.stdout


def test_search_reaches_the_embedded_gallery_another_process_holds(env: dict[str, str], tmp_path: Path) -> None:
    """While `imgsync watch` (or a reconcile) holds the embedded gallery, `imgsync search` talks to it
    over HTTP instead of opening the same data dir twice."""
    config = load_config(env=env)
    image = make_image(61)
    with open_gallery(config) as holder:  # the holder: its engine has the data dir's lock
        holder.add("same_hq", image=image, brief="held")
        query = tmp_path / "q.png"
        query.write_bytes(make_image(61, fmt="PNG"))
        result = CliRunner().invoke(cli, ["search", str(query), "--json"], env=env)
        assert result.exit_code == 0, (result.output, result.exception)
        assert [r["brief"] for r in json.loads(result.stdout)] == ["held"]
    # once the holder is gone, search opens the gallery itself again
    result = CliRunner().invoke(cli, ["search", str(query), "--json"], env=env)
    assert result.exit_code == 0 and [r["brief"] for r in json.loads(result.stdout)] == ["held"]


def test_a_query_below_the_library_minimum_is_enlarged_with_a_note(env: dict[str, str], tmp_path: Path) -> None:
    """product refuses pictures under 300 px (216202, as the cloud does); `imgsync search` enlarges a
    too-small *query* instead, says so on stderr, and still finds the entry."""
    config = load_config(env=env)
    with open_gallery(config) as gallery:
        sign = gallery.add("product", image=make_image(77, (480, 400)), brief="box.jpg")
    query = tmp_path / "small.jpg"
    query.write_bytes(make_image(77, (240, 200)))
    result = CliRunner().invoke(cli, ["search", str(query), "--library", "product", "--json"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "240x200 px is below the 300 px product accepts" in result.stderr
    assert "enlarged to 360x300" in result.stderr
    rows = json.loads(result.stdout)
    assert rows and rows[0]["cont_sign"] == sign


def test_an_entry_below_the_minimum_is_still_refused(env: dict[str, str]) -> None:
    """Only queries are enlarged: adding a too-small picture is refused as the cloud would."""
    from imgsync.errors import GalleryError

    config = load_config(env=env)
    with open_gallery(config) as gallery, pytest.raises(GalleryError) as err:
        gallery.add("product", image=make_image(78, (240, 200)), brief="small.jpg")
    assert "216202" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"just some text", b"\xff\xd8\xff\xe0 a JPEG cut short"])
def test_a_query_that_is_no_picture_is_a_usage_error(env: dict[str, str], tmp_path: Path, content: bytes) -> None:
    """Empty, text or truncated: exit 2 with the reason (as a sync names it), not the gallery's error code."""
    query = tmp_path / "q.jpg"
    query.write_bytes(content)
    result = CliRunner().invoke(cli, ["search", str(query)], env=env)
    assert result.exit_code == 2, result.output
    assert "q.jpg: " in result.output and "nothing was searched" in result.output and "2162" not in result.output
