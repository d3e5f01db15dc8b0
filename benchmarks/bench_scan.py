"""How fast is a scan that finds nothing new, next to `find` listing the same tree?

    /root/venv/bin/python benchmarks/bench_scan.py [--files 100000] [--dir DIR] [--keep]

The tree: `--files` files in directories of 1000, each a hard link to one of 100 real, distinct
64x64 JPEGs (hard links: the tree costs no disk and builds in seconds; the scan still stats every
path, and the cold scan still reads, hashes and decodes every one, from the page cache).
Their mtime is an hour in the past, so every hash is trusted on the second scan.

Printed: the time of `find DIR -type f -printf '%s %T@\\n'` (best of 3), of a cold scan (every file
read, hashed and validated), of a no-op scan (every hash reused; best of 3), the no-op/find ratio
(goal ≤ 2x), and the no-op scan's peak memory (goal ≤ 200 MB): tracemalloc's peak of what the scan
itself allocated, and the process's max RSS (which includes the cold scan and the `known` map).
No asserts: these are figures for the README.
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
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

from imgsync.config import MirrorConfig
from imgsync.model import KnownFile, ScannedFile
from imgsync.scan import scan_folder

PER_DIR = 1000
SOURCES = 100


def tiny_jpeg(seed: int) -> bytes:
    px = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(px, "RGB").resize((64, 64), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def build_tree(root: Path, files: int) -> None:
    src = root / ".sources"  # hidden: excluded by the default ".*" pattern
    src.mkdir(parents=True)
    old = time.time_ns() - 3600 * 10**9
    sources = []
    for i in range(SOURCES):
        p = src / f"s{i:03d}.jpg"
        p.write_bytes(tiny_jpeg(i))
        os.utime(p, ns=(old, old))
        sources.append(p)
    for n in range(files):
        d = root / f"d{n // PER_DIR:04d}"
        if n % PER_DIR == 0:
            d.mkdir()
        os.link(sources[n % SOURCES], d / f"img{n:06d}.jpg")


def best_of(n: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def traced_peak(fn):  # type: ignore[no-untyped-def]
    """(fn's result, the peak bytes tracemalloc saw it allocate)."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def as_known(files: dict[str, ScannedFile]) -> dict[str, KnownFile]:
    return {
        p: KnownFile(f.path, f.size, f.mtime_ns, f.inode, f.content_hash, f.verdict, f.reason, None, f.hashed_at_ns)
        for p, f in files.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=None, help="where to build the tree (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="leave the tree in place")
    args = ap.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="imgsync-bench-"))
    root = base / "tree"
    try:
        t = time.perf_counter()
        build_tree(root, args.files)
        print(f"tree: {args.files} files in {args.files // PER_DIR} dirs, built in {time.perf_counter() - t:.1f} s")
        mirror = MirrorConfig(name="bench", folder=root, library="same_hq")
        find_s = best_of(
            3,
            lambda: subprocess.run(
                ["find", str(root), "-type", "f", "-printf", "%s %T@\n"], stdout=subprocess.DEVNULL, check=True
            ),
        )
        t = time.perf_counter()
        cold = scan_folder(root, mirror, {}, now_ns=time.time_ns())
        cold_s = time.perf_counter() - t
        ok = sum(f.verdict == "ok" for f in cold.files.values())
        known = as_known(cold.files)
        del cold
        noop_s = best_of(3, lambda: scan_folder(root, mirror, known, now_ns=time.time_ns()))
        result, peak = traced_peak(lambda: scan_folder(root, mirror, known, now_ns=time.time_ns()))
        maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"find -printf '%s %T@':        {find_s:7.3f} s")
        print(f"cold scan (read+hash+judge):  {cold_s:7.3f} s  ({ok} ok, {cold_s / args.files * 1e6:.0f} µs/file)")
        print(f"no-op scan (hashes reused):   {noop_s:7.3f} s  ({len(result.files)} files)")
        print(f"ratio no-op / find:           {noop_s / find_s:7.2f} x   (goal ≤ 2x)")
        print(f"no-op scan peak (tracemalloc): {peak / 2**20:6.1f} MB  (goal ≤ 200 MB)")
        print(f"process max RSS:               {maxrss_mb:6.1f} MB  (includes the cold scan and `known`)")
    finally:
        if args.keep:
            print(f"tree kept at {root}")
        else:
            shutil.rmtree(base if args.dir is None else root, ignore_errors=True)


if __name__ == "__main__":
    main()
