"""Search latency and add throughput of two versions of the matchers, side by side in one run.

    nice -n 5 python benchmarks/bench_match_speed.py --old DIR [--new DIR]
        [--only similar,product,materiel,same_hq,picturebook,add] [--size 10000] [--size-same 100000]
        [--size-book 10000] [--queries 60] [--queries-same 200] [--queries-book 90] [--add-rounds 4]

DIR is a checkout of imgsync (e.g. `git worktree add --detach /tmp/old 02157b1^1`); --new defaults to
this checkout. The machine is shared and its load moves from minute to minute, so two runs made one
after the other cannot be compared. Here each version runs in a worker process of its own (imgsync
imported from its DIR), both fill identical libraries from the same bytes, and the driver sends them
the queries in turn: query k goes to one worker and then to the other (alternating who goes first),
never to both at once. Each sees the same load, and the figure printed is the ratio new / old.

Per library (the pictures and their edits are the driver's, so both see the same bytes):
- similar / product / materiel at --size entries: 20 real pictures (photos; materiel: 256 px
  patches of textures) added through Engine.add, the rest bulk-loaded with each version's own
  features of those pictures, the embedding jittered (as bench_match_embedding's latency does),
  and (similar, product) the keypoints of --others other pictures: a library of distinct pictures.
  Queries, in turn: a re-encoded copy, another view (similar: an 80 % crop; product: pasted at
  60 % width on another photo; materiel: another patch) and a picture that is not in the library.
- same_hq at --size-same entries: 20 photos (PNG) added, the rest real ORB features of synthetic
  and texture pictures with flipped bits and random hashes (bench_match_keypoints' distractors).
  Queries: every same_hq edit of benchmarks.variants in turn, and every 5th a picture that is not
  in the library (these take the slow path: spread keypoints, regions); then a tenth as many plain
  pictures not in the library ("plain out": the tuning part's low-texture pictures and gradients,
  of which those with few keypoints take the plain path, local._by_fine).
- picturebook at --size-book entries: the 20 photos and the low-texture pictures of the held-out
  set's tuning part (benchmarks/heldout.py) added as pages, the rest distractors as for same_hq. Queries in turn:
  a phone photo (whole page, 70 % of it, low resolution) of a photo page ("textured"), of a
  low-texture page ("plain": few keypoints, often found by its outline) and of a texture or
  photo not in the library ("outside"); the last two often take the regions path.
- add: 1 MP JPEGs over HTTP (bench_gallery's synthetic pictures, or photos with --add-photos; the real
  server in a thread, imgsync's GalleryClient, --add-threads client threads, default 2, each count in
  turn), rounds of --add-batch images alternating between the versions;
  images/s and the CPU time per image (the worker process's, client and server together).

Prints p50 / p95 per library and query kind for each version, and new / old; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
EMBEDDING_LIBS = ("similar", "product", "materiel")
KEYPOINT_LIBS = ("same_hq", "picturebook")


# --- worker: runs inside one version's process; imports only imgsync ------------------------------


class Worker:
    def __init__(self, data: dict) -> None:
        self.data = data
        self.tmp = tempfile.TemporaryDirectory()
        self.engine = None

    def _engine(self):
        from imgsync.localgallery.engine import Engine

        if self.engine is None:
            self.engine = Engine(Path(self.tmp.name) / "engine")
        return self.engine

    def setup(self, lib: str, size: int) -> dict:
        from imgsync.libraries import get_library
        from imgsync.localgallery.images import load_image
        from imgsync.localgallery.matchers import matcher_for

        eng, d = self._engine(), self.data[lib]
        t0 = time.perf_counter()
        for brief, blob in d["add"]:
            eng.add(lib, blob, brief=brief)
        matcher, spec = matcher_for(lib), get_library(lib)
        pool = [matcher.extract(load_image(b, spec).pixels) for b in d["pool"]]
        rng = np.random.default_rng(5)
        if lib in KEYPOINT_LIBS:
            entries = _distractors(pool, size - len(d["add"]), rng)
        else:
            others = [matcher.extract(load_image(b, spec).pixels) for b in d.get("others", ())]
            entries = _jittered(pool, others, size - len(d["add"]), rng)
        eng.bulk_load(lib, entries)
        eng.search(lib, d["queries"][0][2])  # the first search pays the index sync
        return {"fill_s": time.perf_counter() - t0}

    def search(self, lib: str, k: int) -> dict:
        kind, truth, blob = self.data[lib]["queries"][k]
        t0 = time.perf_counter()
        results, _ = self._engine().search(lib, blob, rn=20)
        ms = (time.perf_counter() - t0) * 1e3
        top = [(b, round(s, 3)) for _, s, b in results[:2]]
        return {"ms": ms, "hit": bool(results) and results[0][2] == truth, "top": top}

    def add_http(self, round_: int, threads: int = 2) -> dict:
        from concurrent.futures import ThreadPoolExecutor

        from imgsync.gallery.client import GalleryClient
        from imgsync.localgallery.server import start_in_thread

        images = self.data["add"]["images"]
        with tempfile.TemporaryDirectory() as d:
            running = start_in_thread(
                Path(d), host="127.0.0.1", port=0, keys=[("bench-ak", "bench-sk")], libraries=["same_hq"]
            )
            try:
                with GalleryClient(running.url, "bench-ak", "bench-sk") as client:
                    client.search("same_hq", image=images[0])  # token and engine start outside the timing
                    t0, c0 = time.perf_counter(), time.process_time()
                    with ThreadPoolExecutor(threads) as pool:
                        list(
                            pool.map(
                                lambda ib: client.add("same_hq", image=ib[1], brief=f"r{round_}-{ib[0]}"),
                                enumerate(images),
                            )
                        )
                    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            finally:
                running.stop()
        # CPU: this process's, every thread's (client and server both live here), per image added
        return {"per_s": len(images) / dt, "cpu_ms": cpu / len(images) * 1e3}


#: Fields of an entry that describe its keypoints (similar's extra blob, product's fixed fields).
KEYPOINT_FIELDS = ("kp_xy", "kp_desc", "kp_n", "extra")


def _jittered(pool: list[dict], others: list[dict], n: int, rng: np.random.Generator):
    """Entries whose features are the pool's with the embedding(s) jittered: a crowd of
    near-neighbours the shortlist must rank. Their keypoints are those of `others` (other real
    pictures), when given: a library holds different pictures, not 500 copies of each query's own
    keypoints, which would send every re-ranked row through RANSAC with hundreds of matches."""
    from imgsync.localgallery.engine import BulkEntry

    for k in range(n):
        f = dict(pool[k % len(pool)])
        if others:
            o = others[(7 * k + 3) % len(others)]
            f.update({x: o[x] for x in KEYPOINT_FIELDS if x in o})
        for name in [x for x in f if x.startswith("emb")]:
            e = f[name] + rng.normal(0, 0.03, f[name].shape).astype(np.float32)
            f[name] = (e / np.linalg.norm(e)).astype(np.float32)
        yield BulkEntry(f"bulk-{k}", f"b{k}", f, tags=(1 + k % 50,))


def _distractors(pool: list[dict], n: int, rng: np.random.Generator):
    """bench_match_keypoints.distractors, with the bit flips drawn from a bank (100k entries in
    seconds): a pool item, 3 % of its descriptor bits flipped, keypoints jittered, hashes random.
    Whatever the entry's blob carries after its keypoints (the appearance thumbnail) is kept."""
    from imgsync.localgallery.engine import BulkEntry
    from imgsync.localgallery.matchers import EXTRA
    from imgsync.localgallery.matchers import keypoints as K

    bank = np.packbits(rng.random((4096, 8 * K.DESC_BYTES)) < 0.03, axis=-1)
    parsed = []
    for src in pool:
        blob = src[EXTRA].tobytes()
        kps = K.Keypoints.from_bytes(blob)
        parsed.append((kps, blob[len(kps.to_bytes()) :]))

    def flip(desc: np.ndarray) -> np.ndarray:
        rows = desc.reshape(-1, K.DESC_BYTES)
        idx = rng.integers(0, len(bank), len(rows))
        return (rows ^ bank[idx]).reshape(desc.shape)

    for k in range(n):
        i = int(rng.integers(len(pool)))
        src, (kps, tail) = pool[i], parsed[i]
        feats = dict(src)
        feats["vote"] = flip(src["vote"]) * src["vote"].any(axis=1, keepdims=True)
        feats["phash"] = rng.integers(0, 2**63, size=src["phash"].shape, dtype=np.int64).view(np.uint64)
        fine = rng.normal(size=src["fine"].shape).astype(np.float32)
        feats["fine"] = (fine / np.linalg.norm(fine, axis=-1, keepdims=True)).astype(np.float16)
        xy = np.clip(kps.xy + rng.normal(0, 1, kps.xy.shape).astype(np.float32), 0, None)
        jittered = K.Keypoints(xy, np.ascontiguousarray(flip(kps.desc)), kps.size)
        feats[EXTRA] = np.frombuffer(jittered.to_bytes() + tail, dtype=np.uint8)
        yield BulkEntry(f"{k},{3_000_000_000 - k}", f"distractor-{k}", feats)


def worker_main(data_path: str) -> int:
    with open(data_path, "rb") as f:
        w = Worker(pickle.load(f))
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write to the protocol channel
    for line in sys.stdin:
        cmd = json.loads(line)
        reply = getattr(w, cmd.pop("op"))(**cmd)
        out.write(json.dumps(reply) + "\n")
        out.flush()
    if w.engine is not None:
        w.engine.close()
    return 0


# --- driver ------------------------------------------------------------------------------------


def build_data(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(HERE.parent))
    from benchmarks.bench_gallery import picture
    from benchmarks.bench_match_embedding import fit, paste, patches, synth_textures
    from benchmarks.photos import photos, textures
    from benchmarks.variants import SAME_IMAGE, encode

    rng = np.random.default_rng(17)
    ph = photos()
    names = sorted(ph)[:20]
    others = [n for n in sorted(ph) if n not in names]
    tex = {**textures(), **synth_textures(8)}
    outside = [tex[n] for n in sorted(tex)] + [ph[n] for n in others]
    data: dict = {}
    others_kp = [picture(60_000 + k, (640, 480)) for k in range(args.others)]
    for lib in ("similar", "product"):
        add = [(n, encode(fit(ph[n], lib))) for n in names]
        queries = []
        for k in range(args.queries):
            n = names[k % len(names)]
            if k % 3 == 0:
                queries.append(("copy", n, encode(fit(ph[n], lib), quality=75)))
            elif k % 3 == 1:
                if lib == "similar":
                    w, h = ph[n].size
                    view = ph[n].crop((w // 10, h // 10, w - w // 10, h - h // 10))
                else:
                    view = paste(ph[n], ph[names[(k + 7) % len(names)]], 0.6, rng)
                queries.append(("view", n, encode(fit(view, lib))))
            else:
                queries.append(("outside", None, encode(fit(outside[k % len(outside)], lib))))
        data[lib] = {"add": add, "pool": [b for _, b in add], "queries": queries, "others": others_kp}
    fab = {n: patches(im.convert("RGB"), 256, 4) for n, im in sorted(tex.items())}
    fab = {n: (p[0], p[-1]) for n, p in fab.items() if len(p) >= 2}
    fnames = list(fab)[:20]
    add = [(n, encode(fab[n][0])) for n in fnames]
    queries = []
    for k in range(args.queries):
        n = fnames[k % len(fnames)]
        if k % 3 == 0:
            queries.append(("copy", n, encode(fab[n][0], quality=75)))
        elif k % 3 == 1:
            queries.append(("view", n, encode(fab[n][1])))
        else:
            queries.append(("outside", None, encode(fit(ph[names[k % len(names)]], "materiel"))))
    data["materiel"] = {"add": add, "pool": [b for _, b in add], "queries": queries}
    # same_hq: bench_match_keypoints' setting
    add = [(n, encode(ph[n], "PNG")) for n in names]
    tex_list = list(textures().values())
    pool = []
    for k in range(args.pool):
        if k % 3 == 2:
            t = tex_list[k % len(tex_list)]
            s = int(rng.integers(120, t.height // 2))
            x, y = int(rng.integers(0, t.width - s)), int(rng.integers(0, t.height // 2 - s + 1))
            pool.append(encode(t.crop((x, y, x + s, y + s)).resize((400, 400))))
        else:
            pool.append(picture(50_000 + k, (640, 480)))
    vnames = list(SAME_IMAGE)
    queries = []
    for k in range(args.queries_same):
        if k % 5 == 4:
            queries.append(("outside", None, encode(outside[k % len(outside)].convert("RGB"))))
        else:
            n = names[k % len(names)]
            v = vnames[k % len(vnames)]
            queries.append(("contained" if v.startswith("contained") else "edit", n, SAME_IMAGE[v](ph[n], rng)))
    from benchmarks.heldout import TUNE, build, plain_gradients

    tune = build().of(TUNE)  # the tuning part only: a speed run must never steer the matching
    plain_out = [*tune.lowtex.values(), *plain_gradients(tune, 14).values()]
    for k in range(args.queries_same // 10):  # after the others, which stay as they were
        queries.append(("plain out", None, encode(plain_out[k % len(plain_out)].convert("RGB"))))
    data["same_hq"] = {"add": add, "pool": pool, "queries": queries}
    if "picturebook" in args.only:
        from benchmarks.variants import PHONE_PHOTO

        # the tuning part only: what a speed run shows of a page must never steer the matching
        plain = {n: _at_least(im, 320) for n, im in sorted(tune.lowtex.items())}
        add = [(n, encode(ph[n], "PNG")) for n in names] + [(n, encode(im, "PNG")) for n, im in plain.items()]
        shots = list(PHONE_PHOTO)
        queries = []
        for k in range(args.queries_book):
            shot = PHONE_PHOTO[shots[(k // 3) % len(shots)]]
            if k % 3 == 0:
                n = names[k % len(names)]
                queries.append(("textured", n, shot(ph[n], rng)))
            elif k % 3 == 1:
                n = list(plain)[k % len(plain)]
                queries.append(("plain", n, shot(plain[n], rng)))
            else:
                queries.append(("outside", None, shot(_at_least(outside[k % len(outside)].convert("RGB"), 320), rng)))
        data["picturebook"] = {"add": add, "pool": pool, "queries": queries}
    data["add"] = {
        "images": _photo_adds(ph, args.add_batch) if args.add_photos else [picture(k) for k in range(args.add_batch)]
    }
    return data


def _photo_adds(ph: dict, n: int) -> list[bytes]:
    """`n` 1 MP JPEGs (1152x864, q90) of the calibration photos, then of crops of them (each add a new picture):
    lighter than bench_gallery's synthetic pictures (about 150 against 330 kB) and, like most photos, detected
    by ORB in one pass (the synthetic ones all take the low-texture second pass)."""
    import io

    from PIL import Image

    pics = [ph[name] for name in sorted(ph)]
    out = []
    for k in range(n):
        im = pics[k % len(pics)]
        cut = (k // len(pics)) * 0.06
        if cut:
            im = im.crop((int(im.width * cut), int(im.height * cut), im.width, im.height))
        buf = io.BytesIO()
        im.convert("RGB").resize((1152, 864), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _at_least(im, side: int):
    """Enlarged until its shorter side is `side` (picturebook's minimum is 300 px)."""
    k = side / min(im.size)
    return im if k <= 1 else im.resize((round(im.width * k), round(im.height * k)))


class Proc:
    def __init__(self, label: str, tree: Path, data_path: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.label = label
        self.p = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", data_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=tempfile.gettempdir(),
            text=True,
        )

    def call(self, **cmd) -> dict:
        assert self.p.stdin and self.p.stdout
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.label} died (see its stderr above)")
        return json.loads(line)

    def close(self) -> None:
        assert self.p.stdin
        self.p.stdin.close()
        self.p.wait()


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, help="checkout of the version to compare against (required)")
    ap.add_argument("--new", type=Path, default=HERE.parent, help="checkout measured (default: this one)")
    ap.add_argument("--only", default="similar,product,materiel,same_hq,add", help="also: picturebook")
    ap.add_argument("--size", type=int, default=10_000, help="entries in similar, product, materiel")
    ap.add_argument("--size-same", type=int, default=100_000, help="entries in same_hq")
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--queries-same", type=int, default=200)
    ap.add_argument("--size-book", type=int, default=10_000, help="entries in picturebook")
    ap.add_argument("--queries-book", type=int, default=90)
    ap.add_argument("--pool", type=int, default=200, help="pictures behind same_hq's distractors")
    ap.add_argument(
        "--others", type=int, default=100, help="pictures whose keypoints similar's and product's bulk entries carry"
    )
    ap.add_argument("--add-batch", type=int, default=60)
    ap.add_argument("--add-rounds", type=int, default=4)
    ap.add_argument("--add-threads", default="2", help="client threads for add, e.g. 1,2,4 (each measured in turn)")
    ap.add_argument("--add-photos", action="store_true", help="add 1 MP JPEGs of real photos, not synthetic pictures")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    if args.old is None:
        ap.error("--old DIR is required")
    only = args.only.split(",")
    t0 = time.perf_counter()
    data = build_data(args)
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as f:
        pickle.dump(data, f)
    print(
        f"data built in {time.perf_counter() - t0:.0f} s; old = {args.old}, new = {args.new}; "
        f"load average at start {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    procs = [Proc("old", args.old, f.name), Proc("new", args.new, f.name)]
    try:
        for lib in [x for x in (*EMBEDDING_LIBS, *KEYPOINT_LIBS) if x in only]:
            size = {"same_hq": args.size_same, "picturebook": args.size_book}.get(lib, args.size)
            fills = [p.call(op="setup", lib=lib, size=size)["fill_s"] for p in procs]
            res: dict[str, dict[str, list]] = {p.label: {} for p in procs}
            n = len(data[lib]["queries"])
            for k in range(n):
                kind = data[lib]["queries"][k][0]
                for p in procs if k % 2 == 0 else procs[::-1]:
                    r = p.call(op="search", lib=lib, k=k)
                    res[p.label].setdefault(kind, []).append(r)
                    res[p.label].setdefault("all", []).append(r)
            print(
                f"\n{lib} @ {size:,} entries ({n} queries, alternating; fill old {fills[0]:.0f} s, "
                f"new {fills[1]:.0f} s; load {os.getloadavg()[0]:.1f})"
            )
            print(
                f"  {'queries':10} {'n':>4}  {'old p50 / p95 ms':>18}  {'new p50 / p95 ms':>18}  "
                f"{'new/old p50':>11} {'p95':>6}  top-1 old / new"
            )
            for kind in res["old"]:
                o, w = ([r["ms"] for r in res[lab][kind]] for lab in ("old", "new"))
                hits = [sum(r["hit"] for r in res[lab][kind]) for lab in ("old", "new")]
                print(
                    f"  {kind:10} {len(o):4}  {_pct(o, 50):8.1f} / {_pct(o, 95):7.1f}  {_pct(w, 50):8.1f} / "
                    f"{_pct(w, 95):7.1f}  {_pct(w, 50) / _pct(o, 50):10.2f}x {_pct(w, 95) / _pct(o, 95):5.2f}x"
                    f"  {hits[0]} / {hits[1]}",
                    flush=True,
                )
            for k in range(n):  # queries one version finds top-1 and the other does not
                o, w = res["old"]["all"][k], res["new"]["all"][k]
                if o["hit"] != w["hit"]:
                    kind, truth = data[lib]["queries"][k][:2]
                    print(f"  query {k} ({kind}, {truth}): old {o['top']}, new {w['top']}")
        if "add" in only:
            for threads in (int(t) for t in args.add_threads.split(",")):
                rates: dict[str, list[float]] = {p.label: [] for p in procs}
                cpus: dict[str, list[float]] = {p.label: [] for p in procs}
                for r in range(args.add_rounds):
                    for p in procs if r % 2 == 0 else procs[::-1]:
                        got = p.call(op="add_http", round_=r, threads=threads)
                        rates[p.label].append(got["per_s"])
                        cpus[p.label].append(got["cpu_ms"])
                o, w = np.median(rates["old"]), np.median(rates["new"])
                co, cw = np.median(cpus["old"]), np.median(cpus["new"])
                print(
                    f"\nadd over HTTP, same_hq, 1 MP JPEGs ({'photos' if args.add_photos else 'synthetic'}), "
                    f"{threads} client thread(s) ({args.add_rounds} rounds of "
                    f"{args.add_batch}, alternating; load {os.getloadavg()[0]:.1f}): old {o:.1f} / new {w:.1f} "
                    f"images/s (median of rounds), new/old {w / o:.2f}x; CPU per image (client + server, "
                    f"all threads) old {co:.1f} / new {cw:.1f} ms, new/old {cw / co:.2f}x; rounds old "
                    f"{[round(x) for x in rates['old']]}, new {[round(x) for x in rates['new']]}",
                    flush=True,
                )
    finally:
        for p in procs:
            p.close()
        os.unlink(f.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
