"""The web console's pages over a mirror of 100k files: do they answer well under a second?

    /root/venv/bin/python -m benchmarks.bench_console [--files 100000] [--rejected 4000] [--pending 1000] [-n 20]

The state dir is seeded directly (a real manifest made by the migrations, then bulk SQL): one mirror
"big" of `--files` files, of which `--rejected` are rejected (with a reason) and `--pending` still
changing or unreadable, the rest synced (one live entry each); a second mirror of 10 files; the local
gallery's store with one entry per synced file (features are dummy bytes: listing never reads them).
The files themselves are not on disk: pages never read them.

The console runs as users run it, `imgsync ui --port 0 --no-browser` in a process of its own, twice:
configured for the embedded local gallery (its page lists the gallery's own store) and for a gallery
by URL (the cloud: the page is the manifest's view). Each page is fetched `-n` times over HTTP by
this process, with the session cookie, and timed from here. Printed: median and p95 per page, and
the ratio to a static file fetched the same way in the same run (the floor: HTTP, the token check,
one file read). For scale: `imgsync status` (which reads what the mirrors page reads) as a process.

No asserts: figures for benchmarks/README.md and the issue notes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from imgsync.manifest import Store

URL = re.compile(r"(http://[^\s/]+)/\?token=\S+")


def seed(state: Path, folder: Path, files: int, rejected: int, pending: int) -> None:
    """The manifest a big mirror leaves after its first sync, and the local gallery holding its entries."""
    state.mkdir(parents=True)
    folder.mkdir(parents=True)
    Store.open(state / "manifest.sqlite3").close()  # the schema, by the migrations
    now = time.time()
    con = sqlite3.connect(state / "manifest.sqlite3")
    with con:
        entries, rows = [], []
        for i in range(files):
            path = f"d{i // 1000:04d}/img{i:06d}.jpg"
            if i < rejected:
                verdict, reason = "rejected", f"image is 40x20 px; same_hq needs the shortest side ≥ 50 px ({i})"
            elif i < rejected + pending:
                verdict, reason = ("unstable", "still being written") if i % 2 else ("error", "cannot read it")
            else:
                verdict, reason = "ok", None
            entry_id = None
            if verdict == "ok":
                entry_id = len(entries) + 1
                entries.append(
                    (
                        entry_id,
                        "big",
                        "same_hq",
                        f"{i},{i}",
                        f"{i:064x}",
                        f'{{"id":{entry_id},"path":"{path}"}}',
                        "",
                        "live",
                        now,
                        now,
                    )
                )
            rows.append(("big", path, 1000 + i, 10**18 + i, i, f"{i:064x}", verdict, reason, entry_id, 0, now))
        for i in range(10):
            rows.append(("small", f"s{i}.jpg", 1000, 10**18, 10**7 + i, f"s{i:063x}", "ok", None, None, 0, now))
        con.executemany(
            "INSERT INTO entries (id, mirror, library, cont_sign, content_hash, brief, tags, state, "
            "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            entries,
        )
        con.executemany(
            "INSERT INTO files (mirror, path, size, mtime_ns, inode, content_hash, verdict, reason, "
            "entry_id, hashed_at_ns, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        for name in ("big", "small"):
            con.execute(
                "INSERT INTO runs (mirror, started_at, finished_at, status, counts) VALUES (?, ?, ?, 'partial', '{}')",
                (name, now - 60, now - 30),
            )
    con.close()
    from imgsync.localgallery.store import NewEntry
    from imgsync.localgallery.store import Store as GalleryStore

    (state / "gallery").mkdir()
    gallery = GalleryStore(state / "gallery" / "gallery.sqlite3")
    batch = [
        NewEntry(f"{i},{i}", f'{{"id":{n},"path":"d{i // 1000:04d}/img{i:06d}.jpg"}}', (0, 0), (0, 0), b"\0" * 64)
        for n, i in enumerate(range(rejected + pending, files), 1)
    ]
    for k in range(0, len(batch), 10_000):
        gallery.insert_many("same_hq", batch[k : k + 10_000])
    gallery.close()


def configs(tmp: Path, folder: Path) -> dict[str, Path]:
    mirrors = (
        f'[[mirror]]\nname = "big"\nfolder = "{folder}"\nlibrary = "same_hq"\n'
        f'[[mirror]]\nname = "small"\nfolder = "{folder}"\nlibrary = "same_hq"\n'
    )
    local, cloud = tmp / "local.toml", tmp / "cloud.toml"
    local.write_text(mirrors)
    cloud.write_text('[gallery]\nendpoint = "https://aip.baidubce.com"\napi_key = "k"\nsecret_key = "s"\n' + mirrors)
    return {"embedded local gallery": local, "gallery by URL (manifest's view)": cloud}


def serve(config: Path, state: Path) -> tuple[subprocess.Popen[str], str, str]:
    env = {**os.environ, "IMGSYNC_CONFIG": str(config), "IMGSYNC_STATE_DIR": str(state)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgsync", "ui", "--port", "0", "--no-browser"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = URL.search(line)
    if not match:
        proc.kill()
        raise SystemExit(f"imgsync ui did not print its URL: {line!r}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, match.group(1), match.group(0)


def timed(session: requests.Session, url: str, n: int) -> list[float]:
    session.get(url, timeout=60).raise_for_status()  # warm-up (and a check that it answers)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = session.get(url, timeout=60)
        times.append(time.perf_counter() - t)
        r.raise_for_status()
    return times


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(round(0.95 * len(xs))) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--rejected", type=int, default=4_000)
    ap.add_argument("--pending", type=int, default=1_000)
    ap.add_argument("-n", type=int, default=20)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="imgsync-bench-console-"))
    try:
        state, folder = tmp / "state", tmp / "folder"
        t = time.perf_counter()
        seed(state, folder, args.files, args.rejected, args.pending)
        print(
            f"seeded: {args.files} files ({args.rejected} rejected, {args.pending} pending/unreadable), "
            f"{args.files - args.rejected - args.pending} entries, in {time.perf_counter() - t:.1f} s"
        )
        last_rejected = -(-args.rejected // 50)
        last_entries = -(-(args.files - args.rejected - args.pending) // 60)
        pages = [
            ("static file (floor)", "/static/console.css"),
            ("mirrors page", "/"),
            ("status JSON (the page's refresh)", "/api/status"),
            ("rejected files, page 1", "/mirror?name=big&kind=rejected"),
            (f"rejected files, page {last_rejected} (last)", f"/mirror?name=big&kind=rejected&page={last_rejected}"),
            ("pending files, page 1", "/mirror?name=big&kind=pending"),
            ("gallery same_hq, page 1", "/gallery?library=same_hq"),
            (f"gallery same_hq, page {last_entries} (last)", f"/gallery?library=same_hq&page={last_entries}"),
        ]
        for label, config in configs(tmp, folder).items():
            proc, base, login = serve(config, state)
            try:
                session = requests.Session()
                session.get(login, timeout=60).raise_for_status()
                results = [(name, timed(session, base + path, args.n)) for name, path in pages]
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            floor = statistics.median(results[0][1])
            print(f"\n{label}: {args.n} fetches each, over HTTP from another process")
            print(f"{'page':<40} {'median':>9} {'p95':>9} {'× floor':>8}")
            for name, times in results:
                med = statistics.median(times)
                print(f"{name:<40} {med * 1000:7.1f} ms {p95(times) * 1000:7.1f} ms {med / floor:7.1f}x")
        env = {**os.environ, "IMGSYNC_CONFIG": str(tmp / "local.toml"), "IMGSYNC_STATE_DIR": str(state)}
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "imgsync", "status"], env=env, stdout=subprocess.DEVNULL, check=True)
            runs.append(time.perf_counter() - t)
        print(f"\nfor scale: `imgsync status` as a process, median of 5: {statistics.median(runs) * 1000:.0f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
