"""Benchmark the keypoint libraries (same_hq, picturebook): recall per edit, scores, latency.

    python benchmarks/bench_match_keypoints.py            # full run (100k same_hq entries: several minutes)
    python benchmarks/bench_match_keypoints.py --quick    # short run (1k entries)
    python benchmarks/bench_match_keypoints.py --only same_hq --no-recall   # same_hq latency up to 100k

Prints figures; asserts nothing. What it measures:

1. recall: the real photos of benchmarks.photos are added (as PNG) to a library that also holds
   `--distractors` other entries; each photo is then searched with every edit of
   benchmarks.variants (same_hq: SAME_IMAGE; picturebook: PHONE_PHOTO, on the textured photos).
   Top-1 / top-5 = the photo's own entry ranks first / within five. Scores: the true match's score
   vs the best score of any other entry, and the best score of unrelated queries (textures and
   synthetic pictures that are not in the library).
2. latency: add (Engine.add of 1 MP JPEGs, decode + extract + store) and search (p50/p95 of
   Engine.search, bytes in → results out) at each library size.

Distractors: real ORB features of synthetic and texture pictures (a pool of `--pool` extracted
images), each entry a copy of a pool item with 3 % of its descriptor bits flipped, its keypoints
jittered and its hashes random, written through Engine.bulk_load: enough realism for the vote
shortlist to face crowds of plausible descriptors, at 100k entries without extracting 100k images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.bench_gallery import picture
from benchmarks.photos import photos, textures
from benchmarks.variants import PHONE_PHOTO, SAME_IMAGE, encode
from imgsync.libraries import get_library
from imgsync.localgallery.engine import BulkEntry, Engine
from imgsync.localgallery.images import load_image
from imgsync.localgallery.matchers import EXTRA, matcher_for
from imgsync.localgallery.matchers import keypoints as K

#: Photos too plain for keypoints (a colour chart, a blurred clock): picturebook's goal is about
#: textured pages, so they are left out of its recall (same_hq keeps them: its hash finds them).
PLAIN = {"color", "cell", "moon"}


def pool_features(library: str, n: int, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """Features of n pictures that are not in the benchmark's photo set."""
    mt, lib = matcher_for(library), get_library(library)
    tex = list(textures().values())
    out = []
    for k in range(n):
        if k % 3 == 2:
            t = tex[k % len(tex)]
            # the top half only: the bottom half gives unrelated queries (main)
            s = int(rng.integers(120, t.height // 2))
            x, y = int(rng.integers(0, t.width - s)), int(rng.integers(0, t.height // 2 - s + 1))
            data = encode(t.crop((x, y, x + s, y + s)).resize((400, 400)))
        else:
            data = picture(50_000 + k, (640, 480))
        out.append(mt.extract(load_image(data, lib).pixels))
    return out


def distractors(
    library: str, pool: list[dict[str, np.ndarray]], n: int, start: int, rng: np.random.Generator
) -> Iterator[BulkEntry]:
    for k in range(n):
        src = pool[int(rng.integers(len(pool)))]
        feats = dict(src)
        feats["vote"] = _flip(src["vote"], rng) * src["vote"].any(axis=1, keepdims=True)
        feats["phash"] = rng.integers(0, 2**63, size=src["phash"].shape, dtype=np.int64).view(np.uint64)
        fine = rng.normal(size=src["fine"].shape).astype(np.float32)
        feats["fine"] = (fine / np.linalg.norm(fine, axis=-1, keepdims=True)).astype(np.float16)
        kps = K.Keypoints.from_bytes(src[EXTRA].tobytes())
        jittered = K.Keypoints(
            np.clip(kps.xy + rng.normal(0, 1, kps.xy.shape).astype(np.float32), 0, None), _flip(kps.desc, rng), kps.size
        )
        feats[EXTRA] = np.frombuffer(jittered.to_bytes(), dtype=np.uint8)
        sign = start + k
        yield BulkEntry(f"{sign},{3_000_000_000 - sign}", f"distractor-{sign}", feats)


def _flip(desc: np.ndarray, rng: np.random.Generator, p: float = 0.03) -> np.ndarray:
    return desc ^ np.packbits(rng.random((*desc.shape[:-1], 8 * desc.shape[-1])) < p, axis=-1)


def recall(
    library: str,
    originals: dict[str, Image.Image],
    variants: dict,
    n_distractors: int,
    pool: list[dict[str, np.ndarray]],
    unrelated: list[bytes],
) -> None:
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as d:
        e = Engine(Path(d))
        e.bulk_load(library, distractors(library, pool, n_distractors, 0, rng))
        for name, im in originals.items():
            e.add(library, encode(im, "PNG"), brief=name)
        print(f"\n{library}: {len(originals)} photos + {n_distractors:,} distractors")
        print(f"  {'edit':28} top-1  top-5  true score min/median   best other score max")
        all_true: list[float] = []
        all_other: list[float] = []
        for vname, fn in variants.items():
            top1 = top5 = 0
            true_scores, other = [], []
            for name, im in originals.items():
                results, _ = e.search(library, fn(im, rng), rn=20)
                briefs = [b for _, _, b in results]
                top1 += bool(briefs) and briefs[0] == name
                top5 += name in briefs[:5]
                true_scores += [s for _, s, b in results if b == name][:1] or [0.0]
                other.append(max((s for _, s, b in results if b != name), default=0.0))
            n = len(originals)
            all_true += true_scores
            all_other += other
            print(
                f"  {vname:28} {top1 / n:5.2f}  {top5 / n:5.2f}  {min(true_scores):5.2f} / "
                f"{statistics.median(true_scores):5.2f}         {max(other):5.2f}"
            )
        unrel = [max((s for _, s, _ in e.search(library, q, rn=5)[0]), default=0.0) for q in unrelated]
        t = np.array(all_true)
        print(
            f"  scores of true matches: p5 {np.percentile(t, 5):.2f}  median {np.median(t):.2f};  "
            f"best non-match per query: p95 {np.percentile(all_other, 95):.2f} max {max(all_other):.2f};  "
            f"unrelated queries ({len(unrelated)}): max {max(unrel):.2f}"
        )
        e.close()


def latency(
    library: str,
    sizes: list[int],
    pool: list[dict[str, np.ndarray]],
    originals: dict[str, Image.Image],
    variants: dict,
    n_queries: int,
    n_adds: int,
) -> None:
    rng = np.random.default_rng(11)
    with tempfile.TemporaryDirectory() as d:
        e = Engine(Path(d))
        for name, im in originals.items():
            e.add(library, encode(im, "PNG"), brief=name)
        names = list(originals)
        vnames = list(variants)
        queries = [
            (names[k % len(names)], variants[vnames[k % len(vnames)]](originals[names[k % len(names)]], rng))
            for k in range(n_queries)
        ]
        have, added = len(originals), 0
        print(f"\n{library} latency ({n_queries} queries cycling through every edit; {n_adds} 1 MP JPEG adds)")
        for size in sizes:
            t0 = time.perf_counter()
            if size > have:
                e.bulk_load(library, distractors(library, pool, size - have, 10_000_000 + have, rng))
                have = size
            fill = time.perf_counter() - t0
            e.search(library, queries[0][1])  # first query pays the index sync
            lat, hits = [], 0
            for name, q in queries:
                t = time.perf_counter()
                results, _ = e.search(library, q)
                lat.append((time.perf_counter() - t) * 1000)
                hits += bool(results) and results[0][2] == name
            lat.sort()
            adds = [picture(70_000 + 1000 * sizes.index(size) + k) for k in range(n_adds)]
            t = time.perf_counter()
            for k, data in enumerate(adds):
                e.add(library, data, brief=f"add-{size}-{k}")
            add_ms = (time.perf_counter() - t) * 1000 / len(adds)
            added += len(adds)
            print(
                f"  @ {size:>7,} entries: search p50 {statistics.median(lat):6.1f} ms  p95 "
                f"{lat[int(0.95 * (len(lat) - 1))]:6.1f} ms  top-1 {hits}/{len(queries)}  |  add {add_ms:5.1f} ms "
                f"({1000 / add_ms:5.1f} img/s)  (bulk fill {fill:.0f} s)"
            )
        t = time.perf_counter()
        e.close()
        close_s = time.perf_counter() - t
        t = time.perf_counter()
        Engine(Path(d)).close()
        print(
            f"  close (saves the vote index) {close_s:.1f} s; reopen @ {have + added:,} entries "
            f"{time.perf_counter() - t:.1f} s"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1k entries, fewer queries")
    ap.add_argument("--distractors", type=int, default=None, help="distractors in the recall libraries")
    ap.add_argument("--pool", type=int, default=None, help="distinct pictures behind the distractors")
    ap.add_argument("--only", default="same_hq,picturebook", help="libraries to measure (comma-separated)")
    ap.add_argument("--no-recall", action="store_true", help="latency only (e.g. same_hq at 100k on a quiet machine)")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    quick = args.quick
    n_dis = args.distractors if args.distractors is not None else (300 if quick else 2000)
    n_pool = args.pool or (120 if quick else 600)
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}, OpenCV {K.cv2.__version__}")
    ph = photos()
    textured = {n: im for n, im in ph.items() if n not in PLAIN}
    unrelated = [encode(t.crop((0, t.height // 2, t.width, t.height))) for t in textures().values()] + [
        picture(90_000 + k, (640, 480)) for k in range(10 if quick else 40)
    ]
    for library, originals, variants, sizes in (
        ("same_hq", ph, SAME_IMAGE, [1000] if quick else [1000, 10_000, 100_000]),
        ("picturebook", textured, PHONE_PHOTO, [1000] if quick else [1000, 10_000]),
    ):
        if library not in only:
            continue
        t = time.perf_counter()
        pool = pool_features(library, n_pool, np.random.default_rng(3))
        print(f"\n[{library}] extracted a pool of {n_pool} distractor pictures in {time.perf_counter() - t:.1f} s")
        if not args.no_recall:
            recall(library, originals, variants, n_dis, pool, unrelated)
        latency(library, sizes, pool, originals, variants, 40 if quick else 200, 20 if quick else 100)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
