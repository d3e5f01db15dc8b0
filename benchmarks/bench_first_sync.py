"""The first sync a user runs, `imgsync reconcile FOLDER` into the embedded gallery: two versions side by side.

    python -m benchmarks.bench_first_sync --old DIR [--new DIR] [--images 240] [--rounds 5]

DIR is a checkout of imgsync (a git worktree, say); each run starts `python -m imgsync reconcile FOLDER` with
that checkout first on PYTHONPATH, a fresh state dir and HOME, and no config (the embedded default), and is
timed from outside: wall from start to exit, CPU (user + system) from the reaped child's own accounting. The
folder holds --images 1 MP JPEGs of the calibration photos (bench_match_speed's add pictures), written an hour
in the past so that no run waits for them to settle. Runs alternate old, new, new, old, ...; it prints each
version's median and the median of the new/old ratios taken pair by pair. It asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _folder(root: Path, n: int) -> Path:
    sys.path.insert(0, str(HERE.parent))
    from benchmarks.bench_match_speed import _photo_adds
    from benchmarks.photos import photos

    folder = root / "pictures"
    folder.mkdir()
    past = time.time() - 3600
    for i, data in enumerate(_photo_adds(photos(), n)):
        path = folder / f"p{i:04}.jpg"
        path.write_bytes(data)
        os.utime(path, (past, past))
    return folder


def _run(tree: Path, folder: Path, scratch: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one first sync with imgsync from `tree`."""
    state = Path(tempfile.mkdtemp(dir=scratch))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(state),
        "IMGSYNC_STATE_DIR": str(state / "state"),
        "PYTHONPATH": str(tree),
    }
    errors = state / "stderr.txt"
    with open(errors, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "imgsync", "reconcile", str(folder)],
            env=env,
            cwd=state,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own CPU accounting, as it is reaped
        wall = time.perf_counter() - t0
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{tree}: imgsync reconcile exited {code}: {errors.read_text(errors='replace')[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--old", type=Path, required=True, help="a checkout of the version to compare with")
    ap.add_argument("--new", type=Path, default=HERE.parent, help="a checkout of this version (default: this one)")
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        folder = _folder(scratch, args.images)
        trees = {"old": args.old.resolve(), "new": args.new.resolve()}
        _run(trees["old"], folder, scratch)  # warm-up: the page cache, the interpreter's bytecode
        got: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
        for r in range(args.rounds):
            for label in ("old", "new") if r % 2 == 0 else ("new", "old"):
                got[label].append(_run(trees[label], folder, scratch))
    print(
        f"first sync of {args.images} photos (1 MP JPEGs) into the embedded gallery, {args.rounds} rounds "
        f"alternating, load {os.getloadavg()[0]:.1f}"
    )
    for label in ("old", "new"):
        walls, cpus = [w for w, _ in got[label]], [c for _, c in got[label]]
        print(
            f"  {label}: wall {statistics.median(walls):.2f} s ({args.images / statistics.median(walls):.1f} files/s), "
            f"CPU {statistics.median(cpus):.2f} s; walls {[round(w, 2) for w in walls]}"
        )
    pairs = list(zip(got["new"], got["old"], strict=True))
    print(
        f"  new/old, median of pairs: wall {statistics.median(n[0] / o[0] for n, o in pairs):.2f}x, "
        f"CPU {statistics.median(n[1] / o[1] for n, o in pairs):.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
