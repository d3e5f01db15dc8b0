"""kill -9 of real `imgsync reconcile` processes, at arbitrary moments, while the folder keeps changing.

The processes talk to a local gallery served by this test process (so the gallery outlives them, as
the cloud would) at a low QPS, so that each kill lands in the middle of a run. Whatever the moment,
the next runs finish what was in flight: afterwards the library holds exactly the folder's images,
each once, and one more run changes nothing.

The second test puts benchmarks/latency_proxy.py between the processes and the gallery, adding a
cloud-like delay to every call, with `in_flight = 4`: its kills land while several calls are on the
wire, some of which reach the gallery after their process is gone.
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

from benchmarks.latency_proxy import LatencyProxy
from conftest import PROCESS_DEADLINE, make_image, wait_until
from imgsync.localgallery.images import cont_sign_of


def _config(tmp_path: Path, server, folder: Path, endpoint: str | None = None, extra: str = "") -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[gallery]\nendpoint = "{endpoint or server.url}"\napi_key = "{server.api_key}"\n'
        f'secret_key = "{server.secret_key}"\nqps = 25\n{extra}'
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
    _assert_converges(tmp_path, cfg, folder, gallery_server)


def _assert_converges(tmp_path: Path, cfg: Path, folder: Path, gallery_server) -> None:
    """Clean runs finish what the killed ones left: the library is exactly the folder, and the run after
    that has nothing to do."""
    from imgsync.localgallery.engine import Engine

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


def _until(pred, what: str) -> None:
    """Poll `pred` often: a kill should land within the few tenths of a second a condition lasts."""
    deadline = time.monotonic() + PROCESS_DEADLINE
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_kill_9_with_several_calls_in_flight_never_loses_or_duplicates(tmp_path: Path, gallery_server) -> None:
    """As above, with every call held 0.15 s on its way (a cloud-like latency) and up to 4 calls in flight.
    Every other kill waits for the proxy to hold at least two of the run's calls, then lands anywhere within
    their latency; the others land at a random moment, start-up included.

    Needs an executor that keeps several calls in flight: with one call at a time the proxy never holds two,
    and the assertions on that fail (and `in_flight` is an unknown key to such an imgsync)."""
    rnd = random.Random(20261207)
    folder = tmp_path / "pics"
    seed = 0
    for seed in range(1, 61):
        _put(folder, f"d{seed % 4}/s{seed}.jpg", seed)
    killed = killed_in_flight = 0
    with LatencyProxy(gallery_server.url, latency_s=0.15) as proxy:
        cfg = _config(tmp_path, gallery_server, folder, endpoint=proxy.url, extra="in_flight = 4\n")
        for round_ in range(8):
            if round_ % 2 == 0 and round_:
                for _ in range(8):  # enough adds for several calls in flight, whatever _change left
                    seed += 1
                    _put(folder, f"d{seed % 4}/s{seed}.jpg", seed)
            proc = _imgsync(cfg, "reconcile")
            if round_ % 2 == 0:
                _until(lambda p=proc: proxy.in_flight >= 2 or p.poll() is not None, "calls in flight")
                time.sleep(rnd.uniform(0, 0.15))
            else:
                time.sleep(rnd.uniform(0.3, 2.0))
            was_killed = proc.poll() is None
            if was_killed:
                killed_in_flight += proxy.in_flight >= 2
                proc.send_signal(signal.SIGKILL)
                killed += 1
            _, err = proc.communicate(timeout=PROCESS_DEADLINE)
            assert was_killed or proc.returncode == 0, err.decode()  # a run not killed finished cleanly
            # The killed run's calls still on the wire reach the gallery; the next run starts once they have
            # (a call landing after a later run has looked for it is a race no client can close).
            wait_until(lambda: proxy.in_flight == 0, PROCESS_DEADLINE, "the killed run's calls to land")
            seed = _change(folder, rnd, seed)
        assert killed >= 4, "the runs finished before they could be killed: lower the QPS or add images"
        assert proxy.max_in_flight >= 2, f"imgsync never had 2 calls in flight (at most {proxy.max_in_flight})"
        assert killed_in_flight >= 2, "fewer than 2 kills landed with several calls in flight"
        _assert_converges(tmp_path, cfg, folder, gallery_server)
