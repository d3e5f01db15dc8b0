"""Benchmark the local gallery on PostgreSQL: replicas, replication delay, search at 200k entries.

    nice -n 5 python -m benchmarks.bench_gallery_replicas [--database ADMIN_URL] [--adds 400]
        [--searches 400] [--clients 6] [--rounds 2] [--delays 200] [--size 200000] [--queries 200] [--skip ...]

Prints figures; asserts nothing. Without --database (a URL allowed to create databases) it starts a
private PostgreSQL server with tests/pg_cluster.py. What it measures:

1. add and search throughput over HTTP with 1, 2 and 3 `imgsync gallery serve --database` processes
   on one database (fresh per run), next to one `gallery serve --data` (SQLite) process. ~1 MP
   photo-like JPEGs into same_hq; `--clients` threads of this process send the calls, each to the
   next replica in turn (requests, forms encoded before the clock starts). Besides the wall-clock
   rate it reads the CPU time the replica processes and the PostgreSQL server used (/proc), so the
   figures can be read per core: on a 2-core machine replicas compete with each other, with the
   database and with the client for the same cores. Setups run in alternating order over --rounds
   rounds (a shared machine's load drifts), and the best round of each is shown with all rounds.
2. replication delay: a client adds on replica A; from A's answer to the moment replica B's follower
   has applied that change (B's /health `applied_change`, polled as fast as it answers), p50/p95.
   And whether a search on B right after A's answer finds the entry (it should, always: B catches up
   before every search).
3. same_hq search latency at `--size` entries, SQLite and PostgreSQL side by side (both open, each
   query to one then the other; Engine.search in this process, image bytes in, results out; queries
   are re-encoded copies of 50 real added pictures), and the time to open each (a PostgreSQL
   replica's start: load everything and build the indexes in memory). The libraries are filled at
   the storage layer with Engine.bulk_load and synthetic features (as bench_gallery.py does): 200k
   real extractions would take an hour.
"""

from __future__ import annotations

import argparse
import base64
import os
import pwd
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import requests

from benchmarks.bench_gallery import picture, reencode, synthetic_same_hq
from imgsync.libraries import LIBRARIES, TOKEN_PATH

KEY = ("bench-ak", "bench-sk")
CORES = os.cpu_count() or 1
_TICK = os.sysconf("SC_CLK_TCK")


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def cpu_by_pid(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each of `pids` that is still there."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def pids_of_user(uid: int | None) -> list[int]:
    if uid is None:
        return []
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if p.stat().st_uid == uid:
                    out.append(int(p.name))
            except OSError:
                pass
    return out


class CpuMeter:
    """CPU seconds used by the replica processes and by the database server's processes (those of
    its user: backends come and go with connections) since the last reading."""

    def __init__(self, pids: Sequence[int], db_uid: int | None) -> None:
        self._pids, self._db_uid = list(pids), db_uid
        self._last = self._read()

    def _read(self) -> tuple[dict[int, float], dict[int, float]]:
        return cpu_by_pid(self._pids), cpu_by_pid(pids_of_user(self._db_uid))

    def lap(self) -> tuple[float, float]:
        now = self._read()
        used = tuple(
            sum(v - last.get(pid, 0.0) for pid, v in cur.items()) for cur, last in zip(now, self._last, strict=True)
        )
        self._last = now
        return used[0], used[1]


class Replica:
    """One `imgsync gallery serve` process."""

    def __init__(self, *where: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imgsync", "gallery", "serve", "--port", "0", "--key", f"{KEY[0]}:{KEY[1]}", *where],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if " at " not in line:
            raise RuntimeError(f"gallery serve did not start: {line!r}")
        self.url = line.split(" at ")[1].split(" ")[0]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=60)


class Caller:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.trust_env = False
        r = self.http.get(
            url + TOKEN_PATH, params={"grant_type": "client_credentials", "client_id": KEY[0], "client_secret": KEY[1]}
        )
        self.token = r.json()["access_token"]

    def post(self, op: str, body: bytes) -> dict[str, Any]:
        r = self.http.post(
            self.url + LIBRARIES["same_hq"].path(op),
            params={"access_token": self.token},
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        return r.json()

    def health(self) -> dict[str, Any]:
        return self.http.get(self.url + "/health").json()


def form(**fields: object) -> bytes:
    return urlencode({k: v for k, v in fields.items()}).encode()


def run_calls(replicas: Sequence[Replica], bodies: Sequence[bytes], op: str, clients: int) -> float:
    """Send every body (each to the next replica in turn) from `clients` threads; seconds taken."""
    callers = [[Caller(r.url) for r in replicas] for _ in range(clients)]
    errors: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def work(c: int) -> None:
        for i in range(c, len(bodies), clients):
            answer = callers[c][i % len(replicas)].post(op, bodies[i])
            if "error_code" in answer:
                errors.append(answer)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(work, range(clients)))
    dt = time.perf_counter() - t0
    if errors:
        print(f"    ({len(errors)} error answers, e.g. {errors[0]})")
    return dt


SETUPS = (
    ("SQLite, 1 process", 0),
    ("PostgreSQL, 1 replica", 1),
    ("PostgreSQL, 2 replicas", 2),
    ("PostgreSQL, 3 replicas", 3),
)


def measure_setup(
    n: int,
    new_database: Callable[[], str],
    db_uid: int | None,
    add_bodies: Sequence[bytes],
    search_bodies: Sequence[bytes],
    clients: int,
) -> dict[str, float]:
    """One setup (n = 0: SQLite) on fresh storage: rates, and CPU seconds of replicas, database, client."""
    with tempfile.TemporaryDirectory() as d:
        replicas = [Replica("--data", d)] if n == 0 else [Replica("--database", new_database()) for _ in range(n)]
        try:
            for r in replicas:  # warm up (token, first search) outside the clock
                Caller(r.url).post("search", search_bodies[0])
            meter = CpuMeter([r.proc.pid for r in replicas], db_uid if n else None)
            me = CpuMeter([os.getpid()], None)
            t_add = run_calls(replicas, add_bodies, "add", clients)
            (cpu_a, db_a), (cli_a, _) = meter.lap(), me.lap()
            t_search = run_calls(replicas, search_bodies, "search", clients)
            (cpu_s, db_s), (cli_s, _) = meter.lap(), me.lap()
        finally:
            for r in replicas:
                r.stop()
    return {
        "add_rate": len(add_bodies) / t_add,
        "add_busy": (cpu_a + db_a) / t_add,
        "add_per_cpu": len(add_bodies) / (cpu_a + db_a),
        "add_client": cli_a / t_add,
        "add_db": db_a / (cpu_a + db_a),
        "search_rate": len(search_bodies) / t_search,
        "search_busy": (cpu_s + db_s) / t_search,
        "search_per_cpu": len(search_bodies) / (cpu_s + db_s),
        "search_client": cli_s / t_search,
        "search_db": db_s / (cpu_s + db_s),
    }


def bench_throughput(
    new_database: Callable[[], str], db_uid: int | None, adds: int, searches: int, clients: int, rounds: int
) -> None:
    print(
        f"\n1. throughput over HTTP: {adds} adds, then {searches} searches, same_hq, ~1 MP JPEGs, "
        f"{clients} client threads; {CORES} cores shared by the client, the replicas, the database (and "
        f"whatever else runs on the machine); {rounds} rounds, setups in alternating order, best round shown"
    )
    images = [picture(20_000 + k) for k in range(adds)]
    add_bodies = [form(image=base64.b64encode(img), brief=f"img-{k}") for k, img in enumerate(images)]
    search_bodies = [form(image=base64.b64encode(reencode(images[k % adds], 70))) for k in range(searches)]
    runs: dict[int, list[dict[str, float]]] = {n: [] for _, n in SETUPS}
    for r in range(rounds):
        for _, n in SETUPS if r % 2 == 0 else SETUPS[::-1]:
            runs[n].append(measure_setup(n, new_database, db_uid, add_bodies, search_bodies, clients))
    best = {
        n: {"add": max(rs, key=lambda m: m["add_rate"]), "search": max(rs, key=lambda m: m["search_rate"])}
        for n, rs in runs.items()
    }
    print(
        "   busy = cores kept busy by the replicas + database (their CPU seconds / wall seconds); per CPU s = calls "
        "per CPU second of replicas + database;\n   client = cores busy in this process (the load generator); "
        "db = the database's share of the CPU"
    )
    print(
        f"   {'setup':<24}{'adds/s':>7}{'busy':>6}{'per CPU s':>10}{'client':>7}{'db':>5}   "
        f"{'searches/s':>10}{'busy':>6}{'per CPU s':>10}{'client':>7}{'db':>5}"
    )
    for label, n in SETUPS:
        a, s_ = best[n]["add"], best[n]["search"]
        print(
            f"   {label:<24}{a['add_rate']:7.1f}{a['add_busy']:6.2f}{a['add_per_cpu']:10.1f}{a['add_client']:7.2f}"
            f"{a['add_db']:5.0%}   {s_['search_rate']:10.1f}{s_['search_busy']:6.2f}{s_['search_per_cpu']:10.1f}"
            f"{s_['search_client']:7.2f}{s_['search_db']:5.0%}"
        )
    print(
        "   every round (adds/s; searches/s): "
        + "; ".join(
            f"{label.split(',')[0][:2]}{n}: " + " ".join(f"{m['add_rate']:.0f}/{m['search_rate']:.0f}" for m in runs[n])
            for label, n in SETUPS
        )
    )
    one = best[1]
    print(
        "   relative to 1 replica: rate, and calls per CPU second (per-core efficiency: 100 % = no overhead "
        "from more replicas)"
    )
    for n in (2, 3):
        a, s_ = best[n]["add"], best[n]["search"]
        print(
            f"   {n} replicas: adds {a['add_rate'] / one['add']['add_rate']:.2f}x rate, "
            f"{a['add_per_cpu'] / one['add']['add_per_cpu']:.0%} per core; searches "
            f"{s_['search_rate'] / one['search']['search_rate']:.2f}x rate, "
            f"{s_['search_per_cpu'] / one['search']['search_per_cpu']:.0%} per core; ideal rate on {CORES} cores: "
            f"{min(n, CORES):.0f}x"
        )
    sq = best[0]
    print(
        f"   PostgreSQL 1 replica vs SQLite: adds {one['add']['add_rate'] / sq['add']['add_rate']:.2f}x rate, "
        f"{one['add']['add_per_cpu'] / sq['add']['add_per_cpu']:.0%} per core; searches "
        f"{one['search']['search_rate'] / sq['search']['search_rate']:.2f}x rate, "
        f"{one['search']['search_per_cpu'] / sq['search']['search_per_cpu']:.0%} per core"
    )


def bench_delay(database: str, n: int) -> None:
    print(f"\n2. replication delay: {n} sequential adds on replica A; until replica B has applied each")
    a, b = Replica("--database", database), Replica("--database", database)
    try:
        on_a, on_b = Caller(a.url), Caller(b.url)
        while on_b.health().get("status") != "ok":
            time.sleep(0.05)
        base = int(on_a.health()["applied_change"])
        bodies = [form(image=base64.b64encode(picture(30_000 + k, (320, 240))), brief=f"d{k}") for k in range(n)]
        queries = [form(image=base64.b64encode(picture(30_000 + k, (320, 240)))) for k in range(n)]
        delays, found = [], 0
        for k in range(n):
            answer = on_a.post("add", bodies[k])
            t0 = time.perf_counter()
            assert "cont_sign" in answer, answer
            while int(on_b.health()["applied_change"]) < base + k + 1:
                pass
            delays.append((time.perf_counter() - t0) * 1000)
            if k % 2 == 0:  # read-your-writes across replicas: a search on B right after A's answer
                hits = on_b.post("search", queries[k]).get("result", [])
                found += bool(hits) and hits[0]["brief"] == f"d{k}"
        polls = [time.perf_counter()]
        for _ in range(50):
            on_b.health()
        poll_ms = (time.perf_counter() - polls[0]) / 50 * 1000
        print(
            f"   follower delay (A's answer → B applied): p50 {statistics.median(delays):.1f} ms, "
            f"p95 {pct(delays, 0.95):.1f} ms, max {max(delays):.1f} ms "
            f"(one /health poll of B takes {poll_ms:.1f} ms)"
        )
        print(f"   a search on B right after A's answer found the new entry: {found}/{(n + 1) // 2}")
    finally:
        a.stop()
        b.stop()


def bench_search_at_size(database: str, size: int, n_queries: int) -> None:
    from imgsync.localgallery.engine import Engine
    from imgsync.localgallery.store_pg import PostgresStore

    print(
        f"\n3. same_hq search at {size:,} entries (Engine.search in-process), SQLite and PostgreSQL side by side: "
        "both open at once, each query sent to one then the other"
    )
    rng = np.random.default_rng(0)
    real = [picture(10_000 + k, (800, 600)) for k in range(50)]
    queries = [reencode(real[k % len(real)], quality=50 + k % 40) for k in range(n_queries)]
    synthetic = [synthetic_same_hq(20_000, 50 + i, rng) for i in range(0, size - 50, 20_000)]
    with tempfile.TemporaryDirectory() as d:
        openers: dict[str, Callable[[], Engine]] = {
            "SQLite": lambda: Engine(Path(d)),
            "PostgreSQL": lambda: Engine(PostgresStore(database)),
        }
        fill, opened, engines = {}, {}, {}
        for label, open_engine in openers.items():
            e = open_engine()
            t0 = time.perf_counter()
            for k, data in enumerate(real):
                e.add("same_hq", data, brief=f"real-{k}")
            have = len(real)
            for batch in synthetic:
                batch = batch[: size - have]
                e.bulk_load("same_hq", batch)
                have += len(batch)
            fill[label] = time.perf_counter() - t0
            e.close()
            t0 = time.perf_counter()
            engines[label] = open_engine()
            opened[label] = time.perf_counter() - t0
        lat: dict[str, list[float]] = {label: [] for label in engines}
        hits = dict.fromkeys(engines, 0)
        for k, q in enumerate(queries):
            for label, e in engines.items() if k % 2 else reversed(engines.items()):
                t = time.perf_counter()
                results, _ = e.search("same_hq", q)
                lat[label].append((time.perf_counter() - t) * 1000)
                hits[label] += bool(results) and results[0][2] == f"real-{k % len(real)}"
        n = {label: len(e.entries("same_hq")) for label, e in engines.items()}
        for e in engines.values():
            e.close()
        for label in engines:
            print(
                f"   {label:<11} @ {n[label]:,}: p50 {statistics.median(lat[label]):5.1f} ms  p95 "
                f"{pct(lat[label], 0.95):5.1f} ms  top-1 {hits[label]}/{n_queries}  (fill {fill[label]:.0f} s, "
                f"open {opened[label]:.1f} s)"
            )
        s_, p = lat["SQLite"], lat["PostgreSQL"]
        print(
            f"   PostgreSQL / SQLite: p50 {statistics.median(p) / statistics.median(s_):.2f}x, "
            f"p95 {pct(p, 0.95) / pct(s_, 0.95):.2f}x, open {opened['PostgreSQL'] / opened['SQLite']:.1f}x "
            "(SQLite reads its saved vote index; a replica builds it)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--database", help="a PostgreSQL URL allowed to create databases (default: start one)")
    ap.add_argument("--adds", type=int, default=400)
    ap.add_argument("--searches", type=int, default=400)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2, help="throughput rounds (setups in alternating order)")
    ap.add_argument("--delays", type=int, default=200)
    ap.add_argument("--size", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: throughput,delay,search")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    cluster = None
    admin = args.database
    db_uid: int | None = None
    if admin is None:
        sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
        import pg_cluster

        cluster = pg_cluster.start_cluster()
        admin = cluster.url
        with psycopg.connect(admin, autocommit=True) as conn:  # production durability, not the tests' shortcut
            for setting in ("fsync = on", "synchronous_commit = on", "full_page_writes = on"):
                conn.execute(f"ALTER SYSTEM SET {setting}")  # type: ignore[arg-type]
            conn.execute("SELECT pg_reload_conf()")
        owner = Path(cluster.data).stat().st_uid
        db_uid = owner if owner != os.geteuid() else None
    counter = iter(range(1_000_000))

    def new_database() -> str:
        name = f"bench_{os.getpid()}_{next(counter)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
        return make_conninfo(**{**conninfo_to_dict(admin), "dbname": name})

    with psycopg.connect(admin) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    print(
        f"Python {sys.version.split()[0]}, numpy {np.__version__}, PostgreSQL {version[0] if version else '?'}"
        f"{' (private server, fsync and synchronous_commit on)' if cluster else ''}, {CORES} cores, "
        f"database CPU counted: "
        f"{'yes (user ' + pwd.getpwuid(db_uid).pw_name + ')' if db_uid is not None else 'no'}"
    )
    try:
        if "throughput" not in skip:
            bench_throughput(new_database, db_uid, args.adds, args.searches, args.clients, args.rounds)
        if "delay" not in skip:
            bench_delay(new_database(), args.delays)
        if "search" not in skip:
            bench_search_at_size(new_database(), args.size, args.queries)
    finally:
        if cluster is not None:
            cluster.remove()
    return 0


if __name__ == "__main__":
    threading.excepthook = lambda a: print(f"thread failed: {a.exc_value!r}", file=sys.stderr)
    raise SystemExit(main())
