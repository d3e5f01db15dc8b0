"""Recall, score calibration and latency of the embedding matchers (similar, product, materiel).

    python -m benchmarks.bench_match_embedding [--quick] [--calibrate]

Data: real photos shipped in wheels (benchmarks.photos) and variants generated from them, every
one encoded to JPEG and decoded by the gallery's own loader (images.load_image), as a search would.
- similar: the stereo pair (the same motorcycle from another viewpoint) and "other views" of each
  photo: crops, zooms, rotations, mirror, perspective; plus "same picture" variants (resize,
  re-compression, brightness) that should score ≥ 0.9.
- product: each photo pasted onto another photo at 80 / 60 / 45 % of its width, sometimes rotated.
- materiel: patches of textures: 3 CC0 textures, 2 texture-like photos, and procedurally
  synthesised textures with distinct statistics (gratings, weaves, dots, filtered noise, in colour).
  The gallery holds one patch of each; queries are other, non-overlapping patches.

Calibration (--calibrate): the photos are split by name into two halves. Knots are fitted on the
first half only (unrelated pairs' 99th percentile → 0.3; 10th percentile of "other view" matches
→ 0.6; 10th percentile of "same picture" matches → 0.9) and the score distributions are reported
on the second, held-out half. Latency: add (decode + extract) and search through a real Engine at
1k and 10k entries, bulk-loaded with features derived from real ones.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from benchmarks.photos import photos, stereo_pair, textures
from imgsync.libraries import get_library
from imgsync.localgallery.images import load_image
from imgsync.localgallery.matchers.base import Matcher
from imgsync.localgallery.matchers.similar import FabricMatcher, ProductMatcher, SimilarMatcher
from imgsync.localgallery.matchers.table import FeatureTable

Variant = Callable[[Image.Image, np.random.Generator], Image.Image]


def encode(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def fit(img: Image.Image, library: str) -> Image.Image:
    """Pictures below the library's minimum side (product: 300 px) enlarged, as a user would."""
    lib = get_library(library)
    if min(img.size) < lib.min_side:
        k = lib.min_side / min(img.size)
        img = img.resize((round(img.width * k + 0.5), round(img.height * k + 0.5)))
    return img


def work(img: Image.Image, library: str, quality: int = 92) -> Image.Image:
    """What the matcher sees: the gallery's decoded working image of the JPEG bytes."""
    return load_image(encode(fit(img, library), quality), get_library(library)).pixels


# --- variants ------------------------------------------------------------------------------------


def _crop(img: Image.Image, keep: float, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    cw, ch = int(w * keep), int(h * keep)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.crop((x, y, x + cw, y + ch))


def _perspective(img: Image.Image, rng: np.random.Generator, amount: float = 0.08) -> Image.Image:
    w, h = img.size
    d = rng.uniform(-amount, amount, 8) * np.array([w, h] * 4)
    quad = np.array([0, 0, 0, h, w, h, w, 0], dtype=float) + d
    return img.transform((w, h), Image.Transform.QUAD, tuple(quad), Image.Resampling.BILINEAR)


SAME: dict[str, Variant] = {
    "resize50": lambda im, r: im.resize((im.width // 2, im.height // 2)),
    "jpeg30": lambda im, r: Image.open(io.BytesIO(encode(im, 30))).convert("RGB"),
    "bright1.3": lambda im, r: ImageEnhance.Brightness(im).enhance(1.3),
}
VIEWS: dict[str, Variant] = {
    "crop80": lambda im, r: _crop(im, 0.8, r),
    "zoom60": lambda im, r: _crop(im, 0.6, r).resize(im.size),
    "rotate10": lambda im, r: im.rotate(float(r.choice([-10, 10])), Image.Resampling.BILINEAR, expand=False),
    "mirror": lambda im, r: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "perspective": lambda im, r: _perspective(im, r),
}


def paste(obj: Image.Image, bg: Image.Image, scale: float, rng: np.random.Generator, angle: float = 0.0) -> Image.Image:
    """`obj` at `scale` of a 640x480 scene made from `bg`, at a random place (another background)."""
    scene = bg.resize((640, 480))
    w = int(640 * scale)
    h = min(int(obj.height * w / obj.width), 470)
    o = obj.resize((w, h))
    if angle:
        o = o.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=(255, 255, 255))
    x = int(rng.integers(0, max(1, 640 - o.width + 1)))
    y = int(rng.integers(0, max(1, 480 - o.height + 1)))
    scene.paste(o, (x, y))
    return scene


def synth_textures(n: int, size: int = 512, seed: int = 7) -> dict[str, Image.Image]:
    """Procedural stationary textures with distinct statistics (periodic, stochastic, coloured)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = {}
    for i in range(n):
        kind = i % 4
        if kind == 0:  # oriented grating + noise (twill, corduroy)
            f, th = rng.uniform(0.03, 0.25), rng.uniform(0, np.pi)
            g = np.sin(2 * np.pi * f * (xx * np.cos(th) + yy * np.sin(th))) + rng.normal(0, 0.4, (size, size))
        elif kind == 1:  # plain weave: product of two gratings
            f = rng.uniform(0.05, 0.3)
            g = np.sign(np.sin(2 * np.pi * f * xx)) * np.sign(np.sin(2 * np.pi * f * yy)) + rng.normal(
                0, 0.5, (size, size)
            )
        elif kind == 2:  # dots / polka
            p = int(rng.integers(8, 40))
            g = ((xx % p - p / 2) ** 2 + (yy % p - p / 2) ** 2 < (p * rng.uniform(0.15, 0.35)) ** 2).astype(np.float32)
            g = g + rng.normal(0, 0.3, (size, size))
        else:  # band-pass filtered noise (felt, suede, stone)
            spec = np.fft.fft2(rng.normal(size=(size, size)))
            fr = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size)))
            centre = rng.uniform(0.01, 0.2)
            g = np.real(np.fft.ifft2(spec * np.exp(-(((fr - centre) / (0.3 * centre + 0.01)) ** 2))))
        g = (g - g.min()) / (np.ptp(g) + 1e-6)
        c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        rgb = (c1[None, None] * g[..., None] + c2[None, None] * (1 - g[..., None])).clip(0, 255).astype(np.uint8)
        out[f"synth{i:02d}"] = Image.fromarray(rgb)
    return out


def patches(img: Image.Image, side: int, k: int) -> list[Image.Image]:
    """k non-overlapping side x side patches on a grid."""
    w, h = img.size
    boxes = [(x, y, x + side, y + side) for y in range(0, h - side + 1, side) for x in range(0, w - side + 1, side)]
    return [img.crop(b) for b in boxes[:k]]


# --- evaluation ----------------------------------------------------------------------------------


class Gallery:
    def __init__(self, matcher: Matcher, items: dict[str, Image.Image]) -> None:
        self.matcher = matcher
        self.names = list(items)
        feats = [matcher.extract(im) for im in items.values()]
        self.table = FeatureTable(matcher.fields)
        self.table.append_many(
            range(len(feats)),
            self.names,
            self.names,
            np.zeros((len(feats), 2), np.uint16),
            np.zeros((len(feats), 2), np.uint16),
            {f.name: np.stack([x[f.name] for x in feats]) for f in matcher.fields},
        )
        # the entries' variable-length blobs (similar's and product's keypoints), as a store keeps them
        blobs = [matcher.pack_extra(f) for f in feats]
        self.table.extra_loader = lambda seqs: {s: b for s in seqs if (b := blobs[s]) is not None}

    def scores(self, query: Image.Image) -> np.ndarray:
        """Calibrated score of every row (verify over all rows, so non-matches are measured too)."""
        q = self.matcher.extract_query(query)
        rows = np.arange(self.table.n)
        return self.matcher.verify(q, self.table, rows)

    def raw(self, query: Image.Image) -> np.ndarray:
        return self.matcher.raw(self.matcher.extract_query(query), self.table)


class Tally:
    def __init__(self) -> None:
        self.top1: dict[str, list[bool]] = defaultdict(list)
        self.top5: dict[str, list[bool]] = defaultdict(list)
        self.match: dict[str, list[float]] = defaultdict(list)
        self.non: list[float] = []

    def add(self, group: str, scores: np.ndarray, truth: int) -> None:
        order = np.argsort(-scores, kind="stable")
        self.top1[group].append(bool(order[0] == truth))
        self.top5[group].append(bool(truth in order[:5]))
        self.match[group].append(float(scores[truth]))
        self.non.extend(float(s) for i, s in enumerate(scores) if i != truth)

    def report(self, title: str) -> None:
        print(f"\n== {title}")
        print(f"  {'variant':14} {'n':>4} {'top1':>6} {'top5':>6} {'match p10':>9} {'median':>7}")
        for g in self.top1:
            m = np.array(self.match[g])
            print(
                f"  {g:14} {len(m):4d} {np.mean(self.top1[g]):6.2f} {np.mean(self.top5[g]):6.2f} "
                f"{np.percentile(m, 10):9.3f} {np.median(m):7.3f}"
            )
        non = np.array(self.non)
        print(
            f"  non-matches: n={len(non)} median {np.median(non):.3f} p99 {np.percentile(non, 99):.3f} "
            f"max {non.max():.3f} (≥0.3: {np.mean(non >= 0.3):.3%})"
        )


def split(names: list[str]) -> tuple[list[str], list[str]]:
    s = sorted(names)
    return s[0::2], s[1::2]


def eval_similar(
    lib: str,
    matcher: SimilarMatcher,
    pics: dict[str, Image.Image],
    rng: np.random.Generator,
    raw: bool = False,
    stereo: bool = True,
) -> Tally:
    gal = Gallery(matcher, {n: work(im, lib) for n, im in pics.items()})
    t = Tally()
    score = gal.raw if raw else gal.scores
    if stereo and "motorcycle_left" in pics:
        _, right = stereo_pair()
        t.add("stereo-view", score(work(right, lib)), gal.names.index("motorcycle_left"))
    for i, im in enumerate(pics.values()):
        for v, f in {**SAME, **VIEWS}.items():
            t.add(("same:" if v in SAME else "view:") + v, score(work(f(im, rng), lib)), i)
    return t


def eval_product(
    lib: str, matcher: ProductMatcher, pics: dict[str, Image.Image], rng: np.random.Generator, raw: bool = False
) -> Tally:
    gal = Gallery(matcher, {n: work(im, lib) for n, im in pics.items()})
    names = list(pics)
    # Backgrounds that are NOT in the gallery (else the background itself is a right answer).
    bgs = list(synth_textures(6, seed=99).values()) + list(textures().values())
    t = Tally()
    score = gal.raw if raw else gal.scores
    for i, n in enumerate(names):
        bg = bgs[i % len(bgs)]
        for scale, angle in ((0.8, 0.0), (0.6, 0.0), (0.45, 0.0), (0.6, 12.0)):
            q = paste(pics[n], bg, scale, rng, angle)
            t.add(f"bg@{scale:.2f}" + (f"+rot{angle:g}" if angle else ""), score(work(q, lib)), i)
    return t


def fabric_sources(quick: bool) -> dict[str, Image.Image]:
    src = {**textures()}
    ph = photos()
    src["hubble"] = ph["hubble_deep_field"]
    src["ihc"] = ph["ihc"]
    src.update(synth_textures(8 if quick else 24))
    return src


def eval_fabric(
    lib: str, matcher: FabricMatcher, src: dict[str, Image.Image], raw: bool = False, side: int = 160
) -> Tally:
    stored, queries = {}, []
    for n, im in src.items():
        ps = patches(im, side, 4)
        stored[n] = work(ps[0], lib)
        queries += [(n, p) for p in ps[1:]]
    gal = Gallery(matcher, stored)
    t = Tally()
    score = gal.raw if raw else gal.scores
    for n, p in queries:
        t.add(f"patch{side}", score(work(p, lib)), gal.names.index(n))
    return t


def fit_knots(t: Tally, same_groups: list[str], view_groups: list[str] | None) -> tuple[float, ...]:
    """Unrelated p99 → 0.3, "other view" p10 → 0.6, "same" p10 → 0.9; with no view groups
    (materiel: every patch match is "the same fabric") 0.6 sits halfway between 0.3 and 0.9."""
    non = np.array(t.non)
    r1 = float(np.percentile(non, 99))
    r3 = float(np.percentile(np.concatenate([t.match[g] for g in same_groups]), 10))
    r2 = float(np.percentile(np.concatenate([t.match[g] for g in view_groups]), 10)) if view_groups else (r1 + r3) / 2
    r2 = max(r2, r1 + 0.02)
    r3 = min(max(r3, r2 + 0.02), 0.995)
    return (0.0, round(r1, 3), round(r2, 3), round(r3, 3), 1.0)


# --- latency -------------------------------------------------------------------------------------


def latency(lib: str, matcher: Matcher, pics: dict[str, Image.Image], sizes: tuple[int, ...], searches: int) -> None:
    from imgsync.localgallery.engine import BulkEntry, Engine
    from imgsync.localgallery.matchers import matcher_for

    wired = type(matcher_for(lib)) is type(matcher)
    rng = np.random.default_rng(3)
    blobs = [encode(fit(im, lib)) for im in pics.values()]
    base = [matcher.extract(load_image(b, get_library(lib)).pixels) for b in blobs]
    print(
        f"\n== latency {lib} ({type(matcher).__name__}; "
        f"{'through Engine' if wired else 'registry not wired yet: matcher + FeatureTable directly'})"
    )
    with tempfile.TemporaryDirectory() as d:
        if wired:
            eng = Engine(Path(d))
            t_add = []
            for i, b in enumerate(blobs[:10]):
                t0 = time.perf_counter()
                eng.add(lib, b, brief=f"add{i}")
                t_add.append(time.perf_counter() - t0)
            print(f"  add (decode + extract + store): median {statistics.median(t_add) * 1e3:.1f} ms")
        else:
            t_add = []
            for b in blobs[:10]:
                t0 = time.perf_counter()
                matcher.extract(load_image(b, get_library(lib)).pixels)
                t_add.append(time.perf_counter() - t0)
            print(f"  add (decode + extract): median {statistics.median(t_add) * 1e3:.1f} ms")
        loaded = 0
        for n in sizes:

            def fake(k: int) -> dict[str, np.ndarray]:
                f = dict(base[k % len(base)])
                e = f["emb"] + rng.normal(0, 0.03, f["emb"].shape).astype(np.float32)
                f["emb"] = (e / np.linalg.norm(e)).astype(np.float32)
                return f

            extra = [BulkEntry(f"bulk-{k}", f"b{k}", fake(k), tags=(1 + k % 50,)) for k in range(loaded, n)]
            if wired:
                eng.bulk_load(lib, extra)
                table = None
            else:
                table = FeatureTable(matcher.fields)
                feats = [e.features for e in extra]
                table.append_many(
                    range(len(feats)),
                    [e.cont_sign for e in extra],
                    [""] * len(feats),
                    np.zeros((len(feats), 2), np.uint16),
                    np.zeros((len(feats), 2), np.uint16),
                    {f.name: np.stack([x[f.name] for x in feats]) for f in matcher.fields},
                )
            loaded = n
            ts = []
            for k in range(searches):
                b = blobs[k % len(blobs)]
                t0 = time.perf_counter()
                if wired:
                    eng.search(lib, b, rn=300)
                else:
                    q = matcher.extract_query(load_image(b, get_library(lib)).pixels)
                    matcher.match(q, table, np.ones(table.n, bool))
                ts.append(time.perf_counter() - t0)
            ts_ms = np.array(ts) * 1e3
            print(
                f"  search at {n:>6} entries (decode + extract + match): median {np.median(ts_ms):.1f} ms, "
                f"p95 {np.percentile(ts_ms, 95):.1f} ms"
            )
        if wired:
            eng.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer textures and searches, 1k entries only")
    ap.add_argument("--calibrate", action="store_true", help="fit the calibration knots on the first half")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(11)
    pics = {n: im for n, im in photos().items()}
    calib, held = split(list(pics))
    print(f"photos: {len(pics)} (calibration half: {len(calib)}, held-out half: {len(held)})")

    if args.calibrate:
        same = [f"same:{v}" for v in SAME]
        views = [f"view:{v}" for v in VIEWS]
        t = eval_similar("similar", SimilarMatcher(), {n: pics[n] for n in calib}, rng, raw=True, stereo=False)
        print("similar knots:", fit_knots(t, same, views))
        # product shares similar's embedding calibration; keypoint evidence has its own fixed scale.
        src = fabric_sources(args.quick)
        names = sorted(src)
        t = eval_fabric("materiel", FabricMatcher(), {n: src[n] for n in names[0::2]}, raw=True)
        print("materiel knots (every patch match is 'same'):", fit_knots(t, list(t.match), None))

    held_pics = {n: pics[n] for n in held}
    eval_similar("similar", SimilarMatcher(), {**held_pics, "motorcycle_left": pics["motorcycle_left"]}, rng).report(
        "similar (held-out half + motorcycle) — calibrated scores"
    )
    eval_product("product", ProductMatcher(), held_pics, rng).report("product (held-out half) — calibrated scores")
    src = fabric_sources(args.quick)
    names = sorted(src)
    eval_fabric("materiel", FabricMatcher(), {n: src[n] for n in names[1::2]}).report(
        f"materiel (held-out half of {len(src)} texture sources) — calibrated scores"
    )
    eval_fabric("materiel", FabricMatcher(), src).report(f"materiel (all {len(src)} texture sources)")

    sizes = (1000,) if args.quick else (1000, 10_000)
    searches = 20 if args.quick else 60
    latency("similar", SimilarMatcher(), pics, sizes, searches)
    latency("product", ProductMatcher(), pics, sizes, searches)
    latency("materiel", FabricMatcher(), fabric_sources(True), sizes, searches)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
