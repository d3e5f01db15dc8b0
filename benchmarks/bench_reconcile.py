"""reconcile's two costs that users feel: a run that finds nothing to do over a big folder, and the
first sync of a folder into a gallery that enforces a QPS cap.

    /root/venv/bin/python -m benchmarks.bench_reconcile [--files 100000] [--images 2000] [--qps 20]
                                                        [--quick] [--skip-noop] [--skip-sync]

1. No-op reconcile: `--files` distinct tiny JPEGs (64x64, each made unique by bytes after its end
   marker, which decoders ignore) in directories of 1000, already in sync: the manifest is seeded as a
   finished first sync would leave it (one entry per file). Timed: `reconcile_mirror` end to end
   (journal check, manifest reads, scan, plan, nothing to save, nothing to call: the gallery given
   refuses any call) next to `find DIR -type f -printf '%s %T@'`, best of 3 each, and the run's peak
   memory (tracemalloc: what the run allocated; and the process's max RSS). Goals: ≤ 2x find,
   ≤ 200 MB.
2. Initial sync under a QPS cap: `--images` distinct 320x240 JPEGs into a local gallery that enforces
   `--qps` (answering error 18 beyond it), once by `reconcile_mirror` through imgsync's client (its
   qps set to the cap), once by a sequential loop over the vendor's baidu-aip SDK (`sameHqAdd`,
   retrying an image after error 18 - the SDK has no pacing of its own). Printed: images/s, the
   fraction of the cap reached, and how many rate errors each met. Goal: imgsync ≥ 90 % of the cap
   with zero rate errors.

No asserts: figures for benchmarks/README.md and the issue notes.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.bench_scan import best_of, traced_peak
from imgsync.config import DeleteGuard, MirrorConfig
from imgsync.manifest import Store
from imgsync.pipeline import reconcile_mirror
from imgsync.scan import scan_folder

PER_DIR = 1000


def jpeg(seed: int, size: tuple[int, int], quality: int = 85) -> bytes:
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(px, "RGB").resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(img).astype(np.int16) + rng.integers(-8, 9, size=(size[1], size[0], 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


class NoCalls:
    """A gallery that must not be called: a no-op run that called it would be a bug."""

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        raise AssertionError(f"a no-op reconcile called the gallery ({name})")


# --------------------------------------------------------------------------- 1. no-op reconcile


def build_tree(root: Path, files: int) -> None:
    bases = [jpeg(i, (64, 64)) for i in range(100)]
    old = time.time_ns() - 3600 * 10**9
    for n in range(files):
        d = root / f"d{n // PER_DIR:04d}"
        if n % PER_DIR == 0:
            d.mkdir(parents=True)
        p = d / f"img{n:06d}.jpg"
        p.write_bytes(bases[n % 100] + n.to_bytes(4, "big"))
        os.utime(p, ns=(old, old))


def seed_manifest(store: Store, mirror: MirrorConfig) -> None:
    """The manifest a finished first sync leaves: every file scanned and mapped to its own entry.
    Written with two bulk statements (the real path would take 100k add calls)."""
    from sqlalchemy import insert, text

    from imgsync.manifest.tables import EntryRow

    scan = scan_folder(mirror.folder, mirror, {}, now_ns=time.time_ns())
    store.save_scan(mirror.name, scan.files.values())
    now = time.time()
    rows = [
        {
            "mirror": mirror.name,
            "library": mirror.library,
            "cont_sign": f"{i},{i}",
            "content_hash": f.content_hash,
            "brief": f'{{"id":{i},"path":"{f.path}"}}',
            "tags": "",
            "state": "live",
            "created_at": now,
            "updated_at": now,
            "id": i,
        }
        for i, f in enumerate(sorted(scan.files.values(), key=lambda f: f.path), 1)
    ]
    with store._engine.begin() as conn:  # noqa: SLF001 - benchmark seeding
        conn.execute(insert(EntryRow), rows)
        # state != 'deleting': the condition of the partial unique index (mirror, library, content_hash)
        conn.execute(
            text(
                "UPDATE files SET entry_id = (SELECT e.id FROM entries e WHERE "
                "e.mirror = files.mirror AND e.library = :lib AND e.content_hash = files.content_hash "
                "AND e.state != 'deleting') "
                "WHERE mirror = :m"
            ),
            {"m": mirror.name, "lib": mirror.library},
        )
    store.set_mirror_state(
        mirror.name, str(mirror.folder), os.stat(mirror.folder).st_dev, len(rows), f"{mirror.library}:{mirror.fit}"
    )


def bench_noop(files: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="imgsync-bench-reconcile-"))
    try:
        root = tmp / "tree"
        t = time.perf_counter()
        build_tree(root, files)
        mirror = MirrorConfig(name="big", folder=root, library="same_hq", max_delete=DeleteGuard(max_count=10**9))
        store = Store.open(tmp / "manifest.sqlite3")
        seed_manifest(store, mirror)
        print(
            f"tree: {files} distinct files in {files // PER_DIR} dirs, built and seeded in "
            f"{time.perf_counter() - t:.1f} s"
        )

        def find() -> None:
            subprocess.run(
                ["find", str(root), "-type", "f", "-printf", "%s %T@\n"], stdout=subprocess.DEVNULL, check=True
            )

        def noop() -> None:
            run = reconcile_mirror(mirror, store, NoCalls(), spool_dir=tmp / "spool")  # type: ignore[arg-type]
            assert run.plan is not None and run.plan.is_empty and run.report.ok, run.report

        noop()  # warm the page cache and SQLite's
        find_s = best_of(3, find)
        noop_s = best_of(3, noop)
        _, peak = traced_peak(noop)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"find -printf '%s %T@':          {find_s:7.3f} s")
        print(f"no-op reconcile (end to end):   {noop_s:7.3f} s  ({noop_s / files * 1e6:.1f} µs/file)")
        print(f"ratio no-op reconcile / find:   {noop_s / find_s:7.2f} x   (goal ≤ 2x)")
        print(f"no-op reconcile peak (tracemalloc): {peak / 2**20:6.1f} MB  (goal ≤ 200 MB)")
        print(f"process max RSS:                    {rss:6.1f} MB  (includes building and seeding)")
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- 2. initial sync at a QPS cap


def sdk_client(url: str, ak: str, sk: str):  # type: ignore[no-untyped-def]
    from aip import AipImageSearch

    cloud = "https://aip.baidubce.com"
    client = AipImageSearch("1", ak, sk)
    for name in dir(client):
        value = getattr(client, name, None)
        if name.startswith(("_AipImageSearch__", "_AipBase__")) and isinstance(value, str) and cloud in value:
            setattr(client, name, value.replace(cloud, url))
    return client


def bench_sync(images: int, qps: float) -> None:
    from imgsync.gallery.client import GalleryClient
    from imgsync.localgallery.server import start_in_thread

    tmp = Path(tempfile.mkdtemp(prefix="imgsync-bench-sync-"))
    try:
        folder = tmp / "pics"
        folder.mkdir()
        old = time.time_ns() - 3600 * 10**9
        datas = []
        for i in range(images):
            data = jpeg(10**6 + i, (320, 240))
            p = folder / f"p{i:05d}.jpg"
            p.write_bytes(data)
            os.utime(p, ns=(old, old))
            datas.append(data)
        print(f"\ninitial sync: {images} distinct 320x240 JPEGs, gallery capped at {qps:g} QPS")

        server = start_in_thread(tmp / "g1", keys=[("ak", "sk")], qps=qps)
        client = GalleryClient(server.url, "ak", "sk", qps=qps)
        mirror = MirrorConfig(name="s", folder=folder, library="same_hq")
        with Store.open(tmp / "m.sqlite3") as store:
            t = time.perf_counter()
            run = reconcile_mirror(mirror, store, client, spool_dir=tmp / "spool")
            ours = time.perf_counter() - t
        assert len(run.report.added) == images and run.report.ok, run.report
        rate = images / ours
        print(
            f"imgsync reconcile:        {ours:7.1f} s  {rate:6.2f} images/s  {rate / qps:6.1%} of the cap  "
            f"{client.stats.rate_errors} rate errors  (goal ≥ 90 %, 0 errors)"
        )
        client.close()
        server.stop()

        server = start_in_thread(tmp / "g2", keys=[("ak", "sk")], qps=qps)
        sdk = sdk_client(server.url, "ak", "sk")
        rate_errors = 0
        t = time.perf_counter()
        for i, data in enumerate(datas):
            while True:
                answer = sdk.sameHqAdd(data, f'{{"id":{i}}}')
                if answer.get("error_code") in (18, "18"):
                    rate_errors += 1
                    continue
                assert "cont_sign" in answer, answer
                break
        theirs = time.perf_counter() - t
        rate = images / theirs
        print(
            f"baidu-aip SDK loop:       {theirs:7.1f} s  {rate:6.2f} images/s  {rate / qps:6.1%} of the cap  "
            f"{rate_errors} rate errors (retried at once)"
        )
        print(f"ratio imgsync / SDK time: {ours / theirs:7.2f} x")
        server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--qps", type=float, default=20)
    ap.add_argument("--quick", action="store_true", help="10k files, 200 images")
    ap.add_argument("--skip-noop", action="store_true")
    ap.add_argument("--skip-sync", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.files, args.images = 10_000, 200
    if not args.skip_noop:
        bench_noop(args.files)
    if not args.skip_sync:
        bench_sync(args.images, args.qps)


if __name__ == "__main__":
    main()
