"""What a user of the command line waits for, measured as processes started and timed from outside.

    python -m benchmarks.bench_cli [--files 20000 100000] [--runs 9] [--keep DIR]

For each size: a folder of N distinct tiny JPEGs (1000 per directory) and a state dir whose manifest is
what a finished first sync leaves (seeded as in bench_reconcile: N entries, the folder's settled mark,
the gallery binding), mirrored by a config that points at a gallery URL (nothing listens there: a no-op
run must not call it). Then, in turn (A B A B …, so a drift of the machine's speed hits both alike):

    imgsync --help                      start-up alone
    imgsync reconcile                   the no-op run, whole process
    find DIR -type f -printf '%s %T@'   the yardstick: one stat walk
    imgsync status                      counts and the first rejected / pending files

Printed: each command's median seconds, and the ratios the issue sets goals on, pair by pair:
(no-op − help) / find ≤ 3 at 20k files, no-op / find ≤ 2 at 100k, status and --help ≤ 0.3 s at 100k.
The in-process figures (bench_reconcile: reconcile_mirror called in a warm interpreter) leave out
start-up and imports, which is what a user of the command pays first. No asserts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_reconcile import build_tree, seed_manifest


def prepare(root: Path, files: int) -> tuple[list[str], Path]:
    """The tree, a config naming it, and a seeded, settled manifest; returns (imgsync argv prefix, tree)."""
    from imgsync.api import Imgsync
    from imgsync.manifest import Store
    from imgsync.scan import digest_of, scan_folder
    from imgsync.settled import settled_mark

    tree = root / "tree"
    state = root / "state"
    config = root / "config.toml"
    build_tree(tree, files)
    config.write_text(
        f'[gallery]\nendpoint = "http://127.0.0.1:9"\napi_key = "ak"\nsecret_key = "sk"\n\n'
        f'[[mirror]]\nname = "big"\nfolder = "{tree}"\nmax_delete = 1000000000\n'
    )
    config.chmod(0o600)
    sync = Imgsync.open(config, state_dir=state)
    (mirror,) = sync.mirrors
    with Store.open(sync.manifest_path) as store:
        seed_manifest(store, mirror)
        scan = scan_folder(mirror.folder, mirror, store.known_files(mirror.name), now_ns=time.time_ns())
        state_row = store.mirror_state(mirror.name)
        assert state_row is not None
        store.set_mirror_state(
            mirror.name,
            str(mirror.folder),
            state_row.device,
            len(scan.files),
            state_row.judged_as,
            settled=settled_mark(mirror, digest_of(scan.files.values())),
            fsid=os.statvfs(tree).f_fsid or None,
        )
        store.set_setting("gallery", sync.gallery_identity())
    return [sys.executable, "-m", "imgsync", "--config", str(config), "--state-dir", str(state)], tree


#: As an installed imgsync runs: with its compiled bytecode (pip writes it at install; a
#: PYTHONDONTWRITEBYTECODE in the developer's shell would make every start compile ~60 modules again).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    elapsed = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return elapsed


def bench(files: int, runs: int, keep: Path | None) -> None:
    if keep is None:
        root = Path(tempfile.mkdtemp(prefix=f"imgsync-bench-cli-{files}-"))
    else:
        root = keep / f"files-{files}"
    try:
        t = time.perf_counter()
        if keep is not None and (root / "config.toml").exists():  # kept by an earlier run: reused
            tree = root / "tree"
            imgsync = [sys.executable, "-m", "imgsync", "--config", str(root / "config.toml")]
            imgsync += ["--state-dir", str(root / "state")]
            print(f"\n{files} files: reusing {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)  # a build that did not finish
            root.mkdir(parents=True)
            imgsync, tree = prepare(root, files)
            print(f"\n{files} files: tree built and manifest seeded in {time.perf_counter() - t:.0f} s ({root})")
        commands = {
            "help": imgsync + ["--help"],
            "noop": imgsync + ["reconcile"],
            "find": ["find", str(tree), "-type", "f", "-printf", "%s %T@\n"],
            "status": imgsync + ["status"],
        }
        for argv in commands.values():  # warm the page cache and Python's bytecode cache
            timed(argv)
        samples: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(runs):
            for name, argv in commands.items():
                samples[name].append(timed(argv))
        med = {k: statistics.median(v) for k, v in samples.items()}
        for name in commands:
            print(
                f"  {name:<7} median {med[name]:6.3f} s  (min {min(samples[name]):.3f}, max {max(samples[name]):.3f})"
            )
        net = statistics.median(
            (n - h) / f for n, h, f in zip(samples["noop"], samples["help"], samples["find"], strict=True)
        )
        whole = statistics.median(n / f for n, f in zip(samples["noop"], samples["find"], strict=True))
        print(f"  (no-op - help) / find: {net:5.2f}x   (goal at 20k: <= 3x)")
        print(f"  no-op / find:          {whole:5.2f}x   (goal at 100k: <= 2x)")
        print(f"  status {med['status']:.3f} s, --help {med['help']:.3f} s   (goal at 100k: <= 0.3 s each)")
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, nargs="+", default=[20_000, 100_000])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument(
        "--keep", type=Path, default=None, help="keep the trees under DIR/files-N, and reuse them when there"
    )
    args = ap.parse_args()
    for n in args.files:
        bench(n, args.runs, args.keep)


if __name__ == "__main__":
    main()
