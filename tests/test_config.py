"""Config parsing: every key of config.example.toml parses; every mistake names its key."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

from imgsync.config import adhoc_mirror, load_config, parse_config
from imgsync.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_parses_with_every_documented_key():
    data = tomllib.loads((ROOT / "config.example.toml").read_text(encoding="utf-8"))
    cfg = parse_config(data, env={})
    assert [m.name for m in cfg.mirrors] == ["catalogue", "products"]
    assert cfg.mirrors[0].label_for("shoes/boot.jpg").tags == (1, 12)
    assert cfg.mirrors[1].label_for("x.jpg").class_id1 == 3
    assert cfg.gallery.is_local


def test_in_flight_is_auto_unless_a_number_is_given():
    assert parse_config({}, env={}).gallery.in_flight is None
    assert parse_config({"gallery": {"in_flight": "auto"}}, env={}).gallery.in_flight is None
    assert parse_config({"gallery": {"in_flight": 6}}, env={}).gallery.in_flight == 6


def test_zero_config_means_local_gallery_and_no_mirrors(tmp_path):
    cfg = load_config(None, env={"IMGSYNC_STATE_DIR": str(tmp_path)})
    assert cfg.gallery.endpoint == "local" and cfg.mirrors == () and cfg.state_dir == tmp_path


def test_state_dir_precedence(tmp_path):
    data = {"state_dir": str(tmp_path / "file")}
    assert parse_config(data, env={}).state_dir == tmp_path / "file"
    assert parse_config(data, env={"IMGSYNC_STATE_DIR": str(tmp_path / "env")}).state_dir == tmp_path / "env"
    assert parse_config(data, env={"IMGSYNC_STATE_DIR": "x"}, state_dir=tmp_path / "cli").state_dir == tmp_path / "cli"


def test_keys_from_environment_win_and_never_show_in_repr():
    cfg = parse_config(
        {"gallery": {"api_key": "AK-file", "secret_key": "SK-file"}}, env={"IMGSYNC_SECRET_KEY": "SK-env"}
    )
    assert cfg.gallery.api_key == "AK-file" and cfg.gallery.secret_key == "SK-env"
    assert "SK-" not in repr(cfg) and "AK-" not in repr(cfg)


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"galery": {}}, "galery"),
        ({"gallery": {"endpoint": "ftp://x"}}, "gallery.endpoint"),
        ({"gallery": {"qps": -1}}, "gallery.qps"),
        ({"gallery": {"qps": "fast"}}, "gallery.qps"),
        ({"gallery": {"qps": float("nan")}}, "gallery.qps"),  # TOML's nan and inf are floats too
        ({"gallery": {"timeout": float("inf")}}, "gallery.timeout"),
        ({"gallery": {"timeout": 1e300}}, "gallery.timeout"),
        ({"watch": {"debounce": float("nan")}}, "watch.debounce"),
        ({"gallery": {"in_flight": 0}}, "gallery.in_flight"),
        ({"gallery": {"in_flight": 33}}, "gallery.in_flight"),
        ({"gallery": {"in_flight": "many"}}, "gallery.in_flight"),
        ({"gallery": {"in_flight": True}}, "gallery.in_flight"),
        ({"mirror": [{"folder": "/x"}]}, "mirror[0].name"),
        ({"mirror": [{"name": "a"}]}, "mirror 'a'.folder"),
        ({"mirror": [{"name": "a", "folder": "/x", "library": "faces"}]}, "mirror 'a'.library"),
        ({"mirror": [{"name": "a", "folder": "/x", "brief": "{path}"}]}, "mirror 'a'.brief"),
        ({"mirror": [{"name": "a", "folder": "/x", "brief": "{id} {size}"}]}, "mirror 'a'.brief"),
        ({"mirror": [{"name": "a", "folder": "/x", "fit": "crop"}]}, "mirror 'a'.fit"),
        ({"mirror": [{"name": "a", "folder": "/x", "max_delete": "lots"}]}, "mirror 'a'.max_delete"),
        (
            {"mirror": [{"name": "a", "folder": "/x", "labels": [{"glob": "*", "tags": [1, 2, 3]}]}]},
            "mirror 'a'.labels[0].tags",
        ),
        (
            {"mirror": [{"name": "a", "folder": "/x", "labels": [{"glob": "*", "tags": [0]}]}]},
            "mirror 'a'.labels[0].tags",
        ),
        (
            {"mirror": [{"name": "a", "folder": "/x", "labels": [{"glob": "*", "class_id1": 3}]}]},
            "mirror 'a'.labels[0].class_id1",
        ),
        ({"mirror": [{"name": "a", "folder": "/x"}, {"name": "a", "folder": "/y"}]}, "mirror.name"),
        ({"mirror": [{"name": "a b", "folder": "/x"}]}, "mirror[0].name"),
    ],
)
def test_errors_name_the_key(data, names):
    with pytest.raises(ConfigError) as err:
        parse_config(data, env={})
    assert str(err.value).startswith(names), str(err.value)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("[gallery\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", env={})
    bad.write_text('[[mirror]]\nname = "a"\nfolder = "/x"\nlibrary = "nope"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c\.toml: mirror 'a'\.library"):
        load_config(bad, env={})


def test_world_readable_secret_gets_a_warning(tmp_path, caplog):
    f = tmp_path / "c.toml"
    f.write_text('[gallery]\nendpoint = "https://aip.baidubce.com"\napi_key = "ak"\nsecret_key = "TOPSECRET"\n')
    f.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        load_config(f, env={})
    assert "chmod 600" in caplog.text and "TOPSECRET" not in caplog.text
    caplog.clear()
    f.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        load_config(f, env={})
    assert "chmod" not in caplog.text


def test_adhoc_mirror_name_is_stable_and_distinct(tmp_path):
    a, b = tmp_path / "x" / "photos", tmp_path / "y" / "photos"
    a.mkdir(parents=True), b.mkdir(parents=True)
    assert adhoc_mirror(a).name == adhoc_mirror(a).name != adhoc_mirror(b).name
    assert adhoc_mirror(a).name.startswith("photos-")
