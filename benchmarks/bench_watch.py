"""The watch daemon: latency from a file's close to its entry being searchable, and idle cost.

    /root/venv/bin/python benchmarks/bench_watch.py [--files 200] [--rate 4] [--idle-files 100000]
                                                    [--idle-seconds 60] [--skip-idle]

Latency: the daemon runs in this process with the default [watch] settings (1 s quiet, 1 s min
age, 3 s delete delay) against a local gallery served over HTTP on 127.0.0.1. `--files` distinct
320x240 JPEGs are written and closed one after another at `--rate` files per second; a file's latency
is from its close() to the moment the gallery answered its add (the local gallery indexes before it
answers, so the entry is searchable then: a search for a sample of the files checks it).
Goal: p95 ≤ 2 s.

Idle: `imgsync watch` runs as a process (embedded local gallery, the default config) over
`--idle-files` files (hard links to 100 distinct 64x64 JPEGs in directories of 1000, as in
bench_scan.py). Once its start-up full scan is done and its queue is empty, its CPU time and RSS
are read from /proc over `--idle-seconds`. Goal: < 1 % CPU, < 200 MB.
No asserts: these are figures for the docs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imgsync.config import MirrorConfig
from imgsync.gallery.client import GalleryClient
from imgsync.localgallery.server import start_in_thread
from imgsync.manifest import StateLock, Store
from imgsync.watch.daemon import Daemon
from imgsync.watch.debounce import Timing


def jpeg(seed: int, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(base, "RGB").resize(size, Image.Resampling.BICUBIC)
    px = np.clip(np.asarray(img).astype(np.int16) + rng.integers(-8, 8, size=(size[1], size[0], 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(px.astype(np.uint8), "RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def latency(files: int, rate: float, work: Path) -> None:
    folder, state = work / "pics", work / "state"
    folder.mkdir()
    state.mkdir()
    gallery = start_in_thread(work / "gallery", host="127.0.0.1", port=0, keys=[("ak", "sk")])
    client = GalleryClient(gallery.url, "ak", "sk")
    store = Store.open(state / "manifest.sqlite3")
    lock = StateLock(state)
    lock.acquire()
    done: dict[str, float] = {}
    cond = threading.Condition()

    def on_run(name, work_, run) -> None:
        t = time.monotonic()
        with cond:
            for p in run.report.added:
                done.setdefault(p, t)
            cond.notify_all()

    mirror = MirrorConfig(name="bench", folder=folder, library="same_hq")
    daemon = Daemon([mirror], store, client, state_dir=state, timing=Timing(), on_run=on_run)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    time.sleep(1.5)  # the start-up full scan of the empty folder
    images = [jpeg(10_000 + i, (320, 240)) for i in range(files)]
    closed: dict[str, float] = {}
    start = time.monotonic()
    for i, data in enumerate(images):
        name = f"f{i:04d}.jpg"
        with open(folder / name, "wb") as f:
            f.write(data)
        closed[name] = time.monotonic()
        time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
    with cond:
        cond.wait_for(lambda: len(done) >= files, timeout=120)
    lat = [done[n] - closed[n] for n in closed if n in done]
    sample = random.Random(1).sample(range(files), min(10, files))
    found = 0
    for i in sample:
        hits = client.search("same_hq", image=images[i])
        found += any(f'"f{i:04d}.jpg"' in h.brief for h in hits.hits[:1])
    daemon.stop()
    thread.join(timeout=20)
    print(
        f"latency close → searchable, {len(lat)}/{files} files at {rate:g}/s, default settings: "
        f"p50 {statistics.median(lat):.2f} s, p95 {pct(lat, 0.95):.2f} s, max {max(lat):.2f} s "
        f"(goal p95 ≤ 2 s); search found {found}/{len(sample)} sampled files"
    )
    client.close()
    store.close()
    lock.release()
    gallery.stop()


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def idle(n: int, seconds: float, work: Path) -> None:
    folder, state = work / "tree", work / "istate"
    src = work / "src"
    src.mkdir()
    for i in range(100):
        (src / f"{i}.jpg").write_bytes(jpeg(i, (64, 64)))
    t = time.time() - 3600
    for i in range(100):
        os.utime(src / f"{i}.jpg", (t, t))
    t0 = time.monotonic()
    for i in range(n):
        d = folder / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        os.link(src / f"{i % 100}.jpg", d / f"{i}.jpg")
    print(f"idle: built {n} files in {time.monotonic() - t0:.1f} s")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgsync", "--state-dir", str(state), "watch", str(folder)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        t0 = time.monotonic()
        while True:
            try:
                status = json.loads((state / "daemon.json").read_text())
                mirror = next(iter(status["mirrors"].values()))
                if mirror.get("last_run") and status["queue"] == 0:
                    break
            except (FileNotFoundError, ValueError, StopIteration):
                pass
            if proc.poll() is not None:
                raise SystemExit(f"imgsync watch exited with {proc.returncode}")
            time.sleep(1.0)
        print(f"idle: start-up full scan of {n} files took {time.monotonic() - t0:.0f} s ({mirror['last_run']})")
        time.sleep(5.0)
        c0, w0 = proc_cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        c1, w1 = proc_cpu_seconds(proc.pid), time.monotonic()
        print(
            f"idle: watching {n} files in {n // 1000} directories for {w1 - w0:.0f} s: "
            f"CPU {100 * (c1 - c0) / (w1 - w0):.2f} % of one core (goal < 1 %), "
            f"RSS {proc_rss_mb(proc.pid):.0f} MB (goal < 200 MB; includes the embedded gallery)"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--rate", type=float, default=4.0, help="files written per second")
    ap.add_argument("--idle-files", type=int, default=100_000)
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--skip-idle", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    try:
        latency(args.files, args.rate, work)
        if not args.skip_idle:
            idle(args.idle_files, args.idle_seconds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
