"""kill -9 of real `imgsync reconcile` processes, at arbitrary moments, while the folder keeps changing.

The processes talk to a local gallery served by this test process (so the gallery outlives them, as
the cloud would) at a low QPS, so that each kill lands in the middle of a run. Whatever the moment,
the next runs finish what was in flight: afterwards the library holds exactly the folder's images,
each once, and one more run changes nothing.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import make_image
from imgsync.localgallery.images import cont_sign_of


def _config(tmp_path: Path, server, folder: Path) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[gallery]\nendpoint = "{server.url}"\napi_key = "{server.api_key}"\nsecret_key = "{server.secret_key}"\n'
        f"qps = 25\n"
        f'[[mirror]]\nname = "pics"\nfolder = "{folder}"\nlibrary = "same_hq"\nmax_delete = "100%"\n'
    )
    cfg.chmod(0o600)
    return cfg


def _imgsync(cfg: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSYNC_")}
    return subprocess.Popen(
        [sys.executable, "-m", "imgsync", "--config", str(cfg), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def _put(folder: Path, rel: str, seed: int) -> None:
    p = folder / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".part")
    tmp.write_bytes(make_image(seed, size=(80, 64)))
    t = time.time_ns() - 3600 * 10**9
    os.utime(tmp, ns=(t, t))
    os.replace(tmp, p)


def _change(folder: Path, rnd: random.Random, seed: int) -> int:
    files = sorted(p for p in folder.rglob("*.jpg"))
    for _ in range(rnd.randint(1, 6)):
        op = rnd.choice(["add", "add", "delete", "move"]) if files else "add"
        if op == "add":
            seed += 1
            _put(folder, f"d{seed % 4}/s{seed}.jpg", seed)
        elif op == "delete":
            files.pop(rnd.randrange(len(files))).unlink()
        else:
            src = files.pop(rnd.randrange(len(files)))
            dest = folder / f"moved/{src.name}"
            dest.parent.mkdir(exist_ok=True)
            os.replace(src, dest)
    return seed


def test_kill_9_at_any_moment_never_loses_or_duplicates(tmp_path: Path, gallery_server) -> None:
    from imgsync.localgallery.engine import Engine

    rnd = random.Random(20261124)
    folder = tmp_path / "pics"
    seed = 0
    for seed in range(1, 41):
        _put(folder, f"d{seed % 4}/s{seed}.jpg", seed)
    cfg = _config(tmp_path, gallery_server, folder)
    killed = 0
    for _ in range(6):
        proc = _imgsync(cfg, "reconcile")
        time.sleep(rnd.uniform(0.3, 1.6))  # startup is ~0.5 s: some kills land before, most during the run
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=60)
        seed = _change(folder, rnd, seed)
    assert killed >= 3, "the runs finished before they could be killed: lower the QPS"

    for _ in range(2):  # the first clean run may still be finishing intents of the last killed one
        done = _imgsync(cfg, "reconcile", "--json")
        out, err = done.communicate(timeout=120)
        assert done.returncode == 0, err.decode()
    want = {cont_sign_of(p.read_bytes()) for p in folder.rglob("*.jpg")}
    eng = Engine(gallery_server.data_dir, read_only=True)
    try:
        remote = [e["cont_sign"] for e in eng.entries("same_hq")]
    finally:
        eng.close()
    assert sorted(remote) == sorted(want)  # exactly the folder: nothing orphaned, lost or twice

    last = _imgsync(cfg, "reconcile", "--json")
    out, err = last.communicate(timeout=120)
    assert last.returncode == 0, err.decode()
    [run] = json.loads(out)
    assert all(v == 0 for k, v in run["counts"].items()), run["counts"]
    assert not any((tmp_path / "state" / "spool").glob("*"))
