"""The first sync at cloud-like latency (issue 15): imgsync reconcile next to the vendor SDK's plain loop.

    python -m benchmarks.bench_latency [--images 120] [--latencies 0,250,1000] [--qps 10]
                                       [--uncapped-images 300] [--in-flight N|auto] [--quick]
                                       [--skip latency,uncapped,sdk] [--keep DIR]

Everything the user would run is a process timed from outside, start-up included:

1. Capped, at each latency: a local gallery served by `imgsync gallery serve --qps QPS` in a process of its
   own, behind benchmarks/latency_proxy.py adding the latency to every call. A fresh gallery for each tool:
   (a) `imgsync reconcile` with `[gallery] endpoint = <proxy>, qps = QPS` over a fresh state dir (and
   `in_flight` only when --in-flight is given, so that an imgsync without the key runs too);
   (b) benchmarks/sdk_add_loop.py: the baidu-aip SDK adding the same files in a sequential loop, sending an
   add again at once after error 18 (the SDK has no pacing).
   Printed per latency: images/s of each process, imgsync's share of the cap, the error-18 refusals the
   proxy passed to each tool, and the most calls imgsync had in flight at once. "adds phase" is imgsync's
   rate from its first add's arrival at the proxy to its last answer (start-up, scan and hashing left out).
2. Uncapped: `gallery serve` without --qps, no proxy, --uncapped-images ~1 MP JPEGs; imgsync reconcile (no
   qps in its config) against the SDK loop, seconds and ratio.

The images are distinct collages of real photos (benchmarks/photos.py): 640x480 to 1024x768 for (1),
1152x864 for (2), each of four random crops of four different photos, so no two are alike and none is a
duplicate in same_hq. Files are given an mtime an hour old, so imgsync takes them as settled.

No asserts beyond each run having added every image: figures for benchmarks/README.md and issue 15.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

import imgsync
from benchmarks.latency_proxy import LatencyProxy
from benchmarks.photos import photos

HERE = Path(__file__).resolve().parent
AK, SK = "bench-ak", "bench-sk"
#: Bound on a process's start (a deadline for a stuck run, not a measurement).
START_DEADLINE = 180


# --------------------------------------------------------------------------- images


def collage(sources: list[Image.Image], seed: int, size: tuple[int, int], quality: int = 90) -> bytes:
    """A distinct picture for `seed`: a 2x2 grid (split at a random point) of random crops of four
    different real photos, each with its own brightness, as a JPEG of `size`."""
    rng = np.random.default_rng(seed)
    w, h = size
    sx, sy = int(w * rng.uniform(0.3, 0.7)), int(h * rng.uniform(0.3, 0.7))
    cells = [(0, 0, sx, sy), (sx, 0, w, sy), (0, sy, sx, h), (sx, sy, w, h)]
    out = Image.new("RGB", size)
    for (x0, y0, x1, y1), k in zip(cells, rng.choice(len(sources), size=4, replace=False), strict=True):
        src = sources[int(k)]
        cw, ch = x1 - x0, y1 - y0
        # The largest window of the cell's aspect the photo holds, shrunk by a random factor, anywhere in it.
        scale = min(src.width / cw, src.height / ch) * rng.uniform(0.45, 1.0)
        ww, wh = max(8, int(cw * scale)), max(8, int(ch * scale))
        ox, oy = int(rng.integers(0, src.width - ww + 1)), int(rng.integers(0, src.height - wh + 1))
        tile = src.crop((ox, oy, ox + ww, oy + wh)).resize((cw, ch), Image.Resampling.BILINEAR)
        out.paste(ImageEnhance.Brightness(tile).enhance(float(rng.uniform(0.8, 1.2))), (x0, y0))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_folder(folder: Path, count: int, sizes: list[tuple[int, int]], first_seed: int) -> int:
    """`count` distinct JPEGs in `folder` (sizes taken in turn); returns their total bytes."""
    sources = list(photos().values())
    folder.mkdir(parents=True)
    old = time.time_ns() - 3600 * 10**9
    total = 0
    for i in range(count):
        data = collage(sources, first_seed + i, sizes[i % len(sizes)])
        p = folder / f"img{i:05d}.jpg"
        p.write_bytes(data)
        os.utime(p, ns=(old, old))
        total += len(data)
    return total


# --------------------------------------------------------------------------- processes


def child_env() -> dict[str, str]:
    """The environment of every process started: no IMGSYNC_* from the shell, and the imgsync this
    benchmark imported first on the path (a checkout under test, not whatever is installed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGSYNC_")}
    root = str(Path(imgsync.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


@contextmanager
def served_gallery(data: Path, qps: float | None, log: Path) -> Iterator[str]:
    """`imgsync gallery serve` in a process of its own until the block ends; yields its URL."""
    args = [
        sys.executable,
        "-m",
        "imgsync",
        "gallery",
        "serve",
        "--port",
        "0",
        "--data",
        str(data),
        "--key",
        f"{AK}:{SK}",
        *(["--qps", str(qps)] if qps else []),
    ]
    with (
        log.open("w") as stderr,
        subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=stderr, text=True, env=child_env(), cwd=data.parent
        ) as proc,
    ):
        lines: queue.Queue[str] = queue.Queue()

        def drain() -> None:  # read every line, so the pipe never fills
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put("")

        threading.Thread(target=drain, daemon=True).start()
        try:
            try:
                first = lines.get(timeout=START_DEADLINE)
            except queue.Empty:
                first = ""
            if not first.startswith("local gallery serving at "):
                raise SystemExit(f"the gallery did not start: {first!r} {log.read_text()}")
            yield first.split()[4]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=START_DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()


def write_config(
    path: Path, state: Path, endpoint: str, folder: Path, qps: float | None, in_flight: str | None
) -> None:
    lines = [
        f'state_dir = "{state}"',
        "[gallery]",
        f'endpoint = "{endpoint}"',
        f'api_key = "{AK}"',
        f'secret_key = "{SK}"',
    ]
    if qps:
        lines.append(f"qps = {qps:g}")
    if in_flight is not None:
        lines.append(f"in_flight = {in_flight}" if in_flight.isdigit() else f'in_flight = "{in_flight}"')
    lines += ["[[mirror]]", 'name = "bench"', f'folder = "{folder}"', 'library = "same_hq"']
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def timed(argv: list[str], work: Path) -> tuple[float, float, str]:
    """Run one process from outside: when it started (time.monotonic, the proxy's clock), its wall-clock
    seconds and its stdout; a failure ends the benchmark with the process's own words."""
    t = time.monotonic()
    done = subprocess.run(argv, check=False, capture_output=True, text=True, env=child_env(), cwd=work)
    seconds = time.monotonic() - t
    if done.returncode != 0:
        raise SystemExit(
            f"{Path(argv[1]).name if argv[1] != '-m' else argv[2]} failed ({done.returncode}): {done.stderr.strip()}"
        )
    return t, seconds, done.stdout


def run_imgsync(
    work: Path, endpoint: str, folder: Path, qps: float | None, in_flight: str | None
) -> tuple[float, float]:
    """One `imgsync reconcile` over a fresh state dir: when it started (time.monotonic, the proxy's clock)
    and its wall-clock seconds, timed from outside."""
    cfg, state = work / "imgsync.toml", work / "state"
    write_config(cfg, state, endpoint, folder, qps, in_flight)
    t, seconds, out = timed([sys.executable, "-m", "imgsync", "--config", str(cfg), "reconcile", "--json"], work)
    [run] = json.loads(out)
    want = sum(1 for _ in folder.glob("*.jpg"))
    if run["counts"]["added"] != want:
        raise SystemExit(f"imgsync reconcile added {run['counts']['added']} of {want}: {run['counts']}")
    return t, seconds


def run_sdk(work: Path, endpoint: str, folder: Path) -> tuple[float, float]:
    """benchmarks/sdk_add_loop.py as a process: when it started and its wall-clock seconds, as run_imgsync."""
    t, seconds, out = timed([sys.executable, str(HERE / "sdk_add_loop.py"), endpoint, AK, SK, str(folder)], work)
    want = sum(1 for _ in folder.glob("*.jpg"))
    if json.loads(out)["added"] != want:
        raise SystemExit(f"the SDK loop added {out.strip()}, not {want}")
    return t, seconds


# --------------------------------------------------------------------------- 1. capped, at each latency


@dataclass
class Leg:
    """One tool's run through the proxy."""

    seconds: float
    refusals: int
    max_in_flight: int
    adds_phase: float  # seconds from the first add's arrival at the proxy to the last add's answer
    lead_in: float  # seconds from the process's start to its first add's arrival (start-up, scan, hashing)

    def phase_or_one(self) -> float:
        return self.adds_phase if self.adds_phase > 0 else 1.0


def through_proxy(tmp: Path, name: str, latency_ms: int, qps: float, tool) -> Leg:  # type: ignore[no-untyped-def]
    work = tmp / f"{name}-{latency_ms}ms"
    work.mkdir()
    with (
        served_gallery(work / "gallery", qps, work / "gallery.log") as url,
        LatencyProxy(url, latency_s=latency_ms / 1000) as proxy,
    ):
        started, seconds = tool(work, proxy.url)
        adds = [c for c in proxy.calls if c.path.endswith("/add")]
        first = min(c.started for c in adds)
        return Leg(seconds, proxy.refusals, proxy.max_in_flight, max(c.ended for c in adds) - first, first - started)


def bench_capped(
    tmp: Path, folder: Path, images: int, latencies: list[int], qps: float, in_flight: str | None, sdk: bool = True
) -> None:
    print(
        f"\ncapped: {images} JPEGs, gallery serve --qps {qps:g}, imgsync qps = {qps:g}"
        f"{f', in_flight = {in_flight}' if in_flight else ''}; each process timed whole"
    )
    rows = []
    for ms in latencies:
        ours = through_proxy(tmp, "imgsync", ms, qps, lambda w, u: run_imgsync(w, u, folder, qps, in_flight))
        # The SDK loop is one call at a time: at 1 s a call, 1000 images are 17 minutes (--skip sdk).
        theirs = through_proxy(tmp, "sdk", ms, qps, lambda w, u: run_sdk(w, u, folder)) if sdk else None
        rows.append((ms, ours, theirs))
        print(
            f"  {ms:5d} ms: imgsync {ours.seconds:6.1f} s ({images / ours.seconds:5.2f}/s, adds phase "
            f"{images / ours.phase_or_one():5.2f}/s after {ours.lead_in:.1f} s, {ours.refusals} refused, "
            f"max {ours.max_in_flight} in flight)"
            + (
                f"; SDK loop {theirs.seconds:6.1f} s ({images / theirs.seconds:5.2f}/s, {theirs.refusals} refused)"
                if theirs
                else ""
            ),
            flush=True,
        )
    print(
        f"\n| latency added per call | imgsync images/s | share of the {qps:g} QPS cap | imgsync adds phase "
        "(share) | imgsync start → first add | SDK loop images/s | error-18 refusals imgsync / SDK "
        "| imgsync max calls in flight |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for ms, ours, theirs in rows:
        rate, phase = images / ours.seconds, images / ours.phase_or_one()
        print(
            f"| {ms} ms | {rate:.2f} | {rate / qps:.1%} | {phase:.2f} ({phase / qps:.1%}) | "
            f"{ours.lead_in:.1f} s | {f'{images / theirs.seconds:.2f}' if theirs else '—'} | "
            f"{ours.refusals} / {theirs.refusals if theirs else '—'} | "
            f"{ours.max_in_flight} |"
        )


# --------------------------------------------------------------------------- 2. uncapped


def bench_uncapped(tmp: Path, folder: Path, images: int, in_flight: str | None) -> None:
    print(
        f"\nuncapped: {images} JPEGs of 1152x864, gallery serve without --qps, no proxy, imgsync without qps"
        f"{f', in_flight = {in_flight}' if in_flight else ''}"
    )
    times = {}
    for name in ("imgsync", "sdk"):
        work = tmp / f"{name}-uncapped"
        work.mkdir()
        with served_gallery(work / "gallery", None, work / "gallery.log") as url:
            _, times[name] = (
                run_imgsync(work, url, folder, None, in_flight) if name == "imgsync" else run_sdk(work, url, folder)
            )
        print(f"  {name}: {times[name]:.1f} s ({images / times[name]:.1f} images/s)", flush=True)
    print("\n| uncapped, 1 MP JPEGs | imgsync reconcile | SDK loop | imgsync / SDK time |")
    print("|---|---|---|---|")
    print(
        f"| {images} images | {times['imgsync']:.1f} s | {times['sdk']:.1f} s "
        f"| {times['imgsync'] / times['sdk']:.2f}x |"
    )


# --------------------------------------------------------------------------- main


def in_flight_value(text: str) -> str:
    if text != "auto" and not (text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"--in-flight: a positive integer or 'auto', not {text!r}")
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=None, help="JPEGs for the capped runs (default 120; quick 30)")
    ap.add_argument(
        "--latencies", default=None, help="ms added per call, comma-separated (default 0,250,1000; quick 0,250)"
    )
    ap.add_argument("--qps", type=float, default=10.0, help="the gallery's cap and imgsync's qps (default 10)")
    ap.add_argument("--uncapped-images", type=int, default=None, help="1 MP JPEGs, uncapped (default 300; quick 60)")
    ap.add_argument(
        "--in-flight",
        type=in_flight_value,
        default=None,
        help="write [gallery] in_flight = N|auto in imgsync's config (default: leave it out)",
    )
    ap.add_argument("--quick", action="store_true", help="fewer images and latencies: a run of about a minute")
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: latency, uncapped, sdk (the SDK loop of the capped part)",
    )
    ap.add_argument("--keep", type=Path, default=None, help="work in this (new) directory and keep it")
    args = ap.parse_args(argv)
    images = args.images or (30 if args.quick else 120)
    latencies = [int(x) for x in (args.latencies or ("0,250" if args.quick else "0,250,1000")).split(",")]
    uncapped = args.uncapped_images or (60 if args.quick else 300)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    if args.keep:
        args.keep.mkdir(parents=True)
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="imgsync-bench-latency-"))
    try:
        print(
            f"imgsync from {Path(imgsync.__file__).parent}; {os.cpu_count()} CPUs, "
            f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        if "latency" not in skip:
            t = time.perf_counter()
            size = write_folder(tmp / "pics", images, [(640, 480), (800, 600), (1024, 768)], 1)
            print(
                f"made {images} JPEGs (640x480, 800x600, 1024x768 in turn; {size / images / 1024:.0f} KB "
                f"on average) in {time.perf_counter() - t:.1f} s"
            )
            bench_capped(tmp, tmp / "pics", images, latencies, args.qps, args.in_flight, sdk="sdk" not in skip)
        if "uncapped" not in skip:
            t = time.perf_counter()
            size = write_folder(tmp / "pics-1mp", uncapped, [(1152, 864)], 100_000)
            print(
                f"\nmade {uncapped} JPEGs of 1152x864 ({size / uncapped / 1024:.0f} KB on average) "
                f"in {time.perf_counter() - t:.1f} s"
            )
            bench_uncapped(tmp, tmp / "pics-1mp", uncapped, args.in_flight)
        print(f"\nload at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
