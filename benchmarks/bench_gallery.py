"""Benchmark the local gallery's engine: add throughput and same_hq search latency.

    python benchmarks/bench_gallery.py [--sizes 10000,100000] [--adds 200] [--queries 200]

Prints figures; asserts nothing. What it measures:

1. add throughput for ~1-megapixel JPEGs (1152x864, q90), through Engine.add directly, then over
   HTTP against the real server (imgsync.localgallery.server.start_in_thread), if it exists.
2. same_hq search latency (p50/p95 of Engine.search, image bytes in → results out, so it includes
   decoding and feature extraction) at each size. The library is filled fast through
   Engine.bulk_load with synthetic features (random pHashes and random unit DCT descriptors); the
   queries are real images (re-encoded copies of real added pictures) through the real search path.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imgsync.localgallery.engine import BulkEntry, Engine
from imgsync.localgallery.matchers.features import CROPS, FINE_DIM


def picture(seed: int, size: tuple[int, int] = (1152, 864), quality: int = 90) -> bytes:
    """A distinct photo-like JPEG: smooth colour field, a few rectangles, sensor noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8), "RGB")
    px = np.asarray(img.resize((w, h), Image.Resampling.BICUBIC)).copy()
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        px[y0 : y0 + int(rng.integers(4, h // 3)), x0 : x0 + int(rng.integers(4, w // 3))] = rng.integers(0, 256, 3)
    px = np.clip(px + rng.normal(0, 6, px.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px, "RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def reencode(data: bytes, quality: int = 60) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def bench_add_engine(images: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        e = Engine(Path(d))
        t0 = time.perf_counter()
        for i, data in enumerate(images):
            e.add("same_hq", data, brief=f"img-{i}")
        dt = time.perf_counter() - t0
        t1 = time.perf_counter()
        for i, data in enumerate(images):
            e.add("similar", data, brief=f"img-{i}")
        dt2 = time.perf_counter() - t1
        e.close()
    print(f"add via Engine, same_hq : {len(images) / dt:7.1f} images/s  ({len(images)} x 1 MP JPEG)")
    print(f"add via Engine, similar : {len(images) / dt2:7.1f} images/s")


def bench_add_http(images: list[bytes]) -> None:
    try:
        from imgsync.localgallery.server import start_in_thread  # type: ignore[attr-defined]
    except ImportError as e:
        print(f"add over HTTP           : skipped (imgsync.localgallery.server.start_in_thread not available: {e})")
        return
    from concurrent.futures import ThreadPoolExecutor

    from imgsync.gallery.client import GalleryClient

    for threads in (1, 2, 4):
        with tempfile.TemporaryDirectory() as d:
            running = start_in_thread(Path(d), host="127.0.0.1", port=0, keys=[("bench-ak", "bench-sk")])
            try:
                with GalleryClient(running.url, "bench-ak", "bench-sk") as client:
                    client.search("same_hq", image=images[0])  # token fetched outside the timing
                    t0 = time.perf_counter()
                    with ThreadPoolExecutor(threads) as pool:
                        list(
                            pool.map(
                                lambda ib: client.add("same_hq", image=ib[1], brief=f"img-{ib[0]}"), enumerate(images)
                            )
                        )
                    dt = time.perf_counter() - t0
            finally:
                running.stop()
        print(
            f"add over HTTP, same_hq  : {len(images) / dt:7.1f} images/s  "
            f"(imgsync's GalleryClient, {threads} thread(s), 4 server threads)"
        )


def synthetic_same_hq(n: int, start: int, rng: np.random.Generator) -> list[BulkEntry]:
    hashes = rng.integers(0, 2**63, size=(n, len(CROPS)), dtype=np.int64).view(np.uint64)
    fine = rng.normal(size=(n, len(CROPS), FINE_DIM)).astype(np.float32)
    fine /= np.linalg.norm(fine, axis=2, keepdims=True)
    fine16 = fine.astype(np.float16)
    no_votes = np.zeros((32, 32), np.uint8)  # no keypoints: the hash stage alone must reject them
    return [
        BulkEntry(
            f"{start + k},{4_000_000_000 - start - k}",
            f"synthetic-{start + k}",
            {"phash": hashes[k], "fine": fine16[k], "vote": no_votes},
        )
        for k in range(n)
    ]


def bench_search(sizes: list[int], n_queries: int) -> None:
    rng = np.random.default_rng(0)
    real = [picture(10_000 + k, (800, 600)) for k in range(min(50, n_queries))]
    queries = [reencode(real[k % len(real)], quality=50 + k % 40) for k in range(n_queries)]
    with tempfile.TemporaryDirectory() as d:
        e = Engine(Path(d))
        for k, data in enumerate(real):
            e.add("same_hq", data, brief=f"real-{k}")
        have = len(real)
        for size in sizes:
            t0 = time.perf_counter()
            while have < size:
                batch = min(20_000, size - have)
                e.bulk_load("same_hq", synthetic_same_hq(batch, have, rng))
                have += batch
            fill = time.perf_counter() - t0
            lat, hits = [], 0
            for k, q in enumerate(queries):
                t = time.perf_counter()
                results, _ = e.search("same_hq", q)
                lat.append((time.perf_counter() - t) * 1000)
                hits += bool(results) and results[0][2] == f"real-{k % len(real)}"
            lat.sort()
            p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
            print(
                f"same_hq search @ {size:>7,} entries: p50 {statistics.median(lat):6.1f} ms  p95 {p95:6.1f} ms"
                f"  top-1 correct {hits}/{len(queries)}  (bulk fill {fill:.1f} s)"
            )
        e.close()
        t = time.perf_counter()
        Engine(Path(d)).close()
        print(f"reopen (load index from SQLite) @ {have:,} entries: {time.perf_counter() - t:.2f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="library sizes for the search benchmark")
    ap.add_argument("--adds", type=int, default=200, help="1 MP JPEGs to add per add benchmark")
    ap.add_argument("--queries", type=int, default=200, help="search queries per size")
    args = ap.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}")
    images = [picture(k) for k in range(args.adds)]
    bench_add_engine(images)
    bench_add_http(images)
    bench_search(sizes, args.queries)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
