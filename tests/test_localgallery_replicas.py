"""Several `gallery serve` replicas on one PostgreSQL database, as one gallery, through faults.

Real parts only: a real PostgreSQL server (the session's, or one of the test's own where the test stops
and restarts it), replicas as threads of this process or as `imgsync gallery serve` processes, real
HTTP on 127.0.0.1, real images. Where no server can be started, every test here skips and says why.
"""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from conftest import GalleryPlace, PgServer, make_image, wait_until
from imgsync.cli import cli
from imgsync.libraries import LIBRARIES, TOKEN_PATH, get_library

B64 = base64.b64encode
KEY = ("k", "s")


class Client:
    """Raw protocol calls to one replica; connection failures come back as {"error": text}."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.trust_env = False
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            r = self.http.get(
                self.url + TOKEN_PATH,
                params={"grant_type": "client_credentials", "client_id": KEY[0], "client_secret": KEY[1]},
                timeout=30,
            )
            self._token = r.json()["access_token"]
        return self._token

    def call(self, op: str, library: str = "same_hq", **form: Any) -> dict[str, Any]:
        try:
            r = self.http.post(
                self.url + LIBRARIES[library].path(op), params={"access_token": self.token()}, data=form, timeout=60
            )
        except requests.RequestException as e:
            return {"error": str(e)}
        assert r.status_code == 200, r.text
        return r.json()

    def health(self) -> tuple[int, dict[str, Any]]:
        r = self.http.get(self.url + "/health", timeout=30)
        return r.status_code, r.json()


def replicas(place: GalleryPlace, n: int = 2) -> list:
    return [place.start(keys=[KEY]) for _ in range(n)]


@pytest.fixture
def db(pg_database: str) -> GalleryPlace:
    return GalleryPlace("postgres", database=pg_database)


def store_entries(database: str, library: str = "same_hq") -> list[dict[str, object]]:
    from imgsync.localgallery.store_pg import PostgresStore

    store = PostgresStore(database, pool_size=1, migrate_schema=False)
    try:
        return store.entries(library)
    finally:
        store.close()


# --- one gallery ------------------------------------------------------------------------------------


def test_racing_identical_adds_on_two_replicas_store_one_entry(db: GalleryPlace) -> None:
    a, b = replicas(db)
    try:
        on = [Client(a.url), Client(b.url)]
        images = [make_image(100 + k) for k in range(10)]
        outcomes: list[tuple[int, int, dict[str, Any]]] = []
        lock = threading.Lock()

        def race(k: int) -> None:
            barrier = threading.Barrier(2)

            def add(side: int) -> None:
                barrier.wait()
                answer = on[side].call("add", image=B64(images[k]), brief=f"img-{k}-from-{side}")
                with lock:
                    outcomes.append((k, side, answer))

            pair = [threading.Thread(target=add, args=(side,)) for side in (0, 1)]
            for t in pair:
                t.start()
            for t in pair:
                t.join()

        for k in range(len(images)):
            race(k)
        for k in range(len(images)):
            answers = [ans for kk, _, ans in outcomes if kk == k]
            won = [ans for ans in answers if "cont_sign" in ans and "error_code" not in ans]
            lost = [ans for ans in answers if ans.get("error_code") == 216681]
            assert len(won) == 1 and len(lost) == 1, answers
            assert lost[0]["cont_sign"] == won[0]["cont_sign"]  # the duplicate names the existing entry
        listed = store_entries(str(db.database))
        assert len(listed) == len(images) == len({e["cont_sign"] for e in listed})
        for client in on:  # and both replicas hold exactly those
            for k, img in enumerate(images):
                hits = client.call("search", image=B64(img))["result"]
                assert len([h for h in hits if h["score"] >= 0.99]) == 1 and hits[0]["brief"].startswith(f"img-{k}-")
    finally:
        a.stop()
        b.stop()


def test_identical_inserts_racing_in_two_stores_leave_one_row(db: GalleryPlace) -> None:
    """The same race one level down, where the two commits meet in the database within a millisecond."""
    from imgsync.localgallery.store import DuplicateEntry, NewEntry
    from imgsync.localgallery.store_pg import PostgresStore

    stores = [PostgresStore(str(db.database)) for _ in range(2)]
    try:
        for k in range(20):
            barrier = threading.Barrier(2)
            results: list[str] = []

            def insert(
                store: PostgresStore, k: int = k, barrier: threading.Barrier = barrier, results: list[str] = results
            ) -> None:
                barrier.wait()
                try:
                    store.insert("same_hq", NewEntry(f"{k},7", "b", (0, 0), (0, 0), b"\0" * 8))
                    results.append("ok")
                except DuplicateEntry:
                    results.append("duplicate")

            with ThreadPoolExecutor(2) as pool:
                list(pool.map(insert, stores))
            assert sorted(results) == ["duplicate", "ok"]
        assert stores[0].count("same_hq") == 20
        assert [c.id for c in stores[1].changes_since(0)] == list(range(1, 21))  # no id spent by the losers
    finally:
        for s in stores:
            s.close()


def test_a_write_reaches_the_other_replica_without_any_request_there(db: GalleryPlace) -> None:
    a, b = replicas(db)
    try:
        on_a, on_b = Client(a.url), Client(b.url)
        wait_until(lambda: on_b.health()[0] == 200, what="replica B following the database")
        on_a.call("add", image=B64(make_image(1)), brief="one")
        _, health_a = on_a.health()
        # B is asked nothing but /health (which applies nothing): its follower applied A's change.
        wait_until(lambda: on_b.health()[1]["applied_change"] >= health_a["applied_change"], what="B following A")
        sign = on_b.call("search", image=B64(make_image(1)))["result"][0]["cont_sign"]
        assert "error_code" not in on_b.call("delete", cont_sign=sign)
        wait_until(
            lambda: on_a.health()[1]["applied_change"] == on_b.health()[1]["applied_change"], what="A following B"
        )
        assert on_a.call("search", image=B64(make_image(1)))["result"] == []
    finally:
        a.stop()
        b.stop()


def test_a_batch_delete_is_one_transaction(db: GalleryPlace) -> None:
    """A failure at the batch's last statement (the change log's insert, refused by a trigger made
    for this test) leaves every entry in place; without it, all go at once in one change."""
    import psycopg

    engine = db.engine()
    try:
        signs = [engine.add("same_hq", make_image(200 + k), brief=f"b{k}") for k in range(5)]
        with psycopg.connect(str(db.database), autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$"
            )
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON changes FOR EACH ROW "
                "WHEN (NEW.kind = 'delete') EXECUTE FUNCTION refuse()"
            )
            with pytest.raises(psycopg.errors.RaiseException):
                engine.delete("same_hq", signs)
            assert [e["cont_sign"] for e in store_entries(str(db.database))] == signs
            conn.execute("DROP TRIGGER refuse ON changes")
        assert engine.delete("same_hq", signs + ["9,9"]) == 5
        assert store_entries(str(db.database)) == [] and engine.entries("same_hq") == []
        deletes = [c for c in engine.store.changes_since(0) if c.kind == "delete"]
        assert [sorted(c.cont_signs) for c in deletes] == [sorted(signs)]
    finally:
        engine.close()


def test_a_replica_behind_the_pruned_change_log_reloads(db: GalleryPlace) -> None:
    from imgsync.localgallery.engine import BulkEntry, Engine
    from imgsync.localgallery.images import load_image
    from imgsync.localgallery.matchers import matcher_for
    from imgsync.localgallery.store import ChangesPruned
    from imgsync.localgallery.store_pg import PostgresStore

    a = Engine(PostgresStore(str(db.database), change_retention=0.0))
    b = db.engine()
    try:
        b._closing.set()  # white-box: B stops following (as if cut off) and only catches up when asked
        b._follower.join(timeout=10)
        first = a.add("same_hq", make_image(300), brief="first")
        feats = matcher_for("same_hq").extract(load_image(make_image(301), get_library("same_hq")).pixels)
        a.bulk_load("same_hq", (BulkEntry(f"{k},3", f"bulk{k}", feats) for k in range(1000)))  # prunes the log
        with pytest.raises(ChangesPruned):  # the log no longer reaches back to B's last change
            a.store.changes_since(0)
        hits, _ = b.search("same_hq", make_image(300))
        assert [(s, br) for s, _, br in hits][:1] == [(first, "first")]
        assert len(b.entries("same_hq")) == 1001
    finally:
        a.close()
        b.close()


def test_a_replica_reloads_when_the_database_goes_back_in_time(db: GalleryPlace) -> None:
    """As after restoring an older backup (or a failover that lost commits): the database's change log
    is behind what the replica applied. Its next search reloads instead of trusting its cache."""
    import psycopg

    engine = db.engine()
    try:
        engine.add("same_hq", make_image(800), brief="kept")
        with psycopg.connect(str(db.database), autocommit=True) as conn:  # "the backup": one entry
            conn.execute("CREATE TABLE backup AS SELECT * FROM entries")
            conn.execute("CREATE TABLE backup_changes AS SELECT * FROM changes")
        engine.add("same_hq", make_image(801), brief="lost")
        with psycopg.connect(str(db.database)) as conn:  # "the restore"
            conn.execute("DELETE FROM entries")
            conn.execute("DELETE FROM changes")
            conn.execute("INSERT INTO entries SELECT * FROM backup")
            conn.execute("INSERT INTO changes SELECT * FROM backup_changes")
            conn.execute("UPDATE change_clock SET last = (SELECT max(id) FROM changes)")
        assert engine.search("same_hq", make_image(801))[0] == []
        assert [e["brief"] for e in engine.entries("same_hq")] == ["kept"]
    finally:
        engine.close()


# --- faults ---------------------------------------------------------------------------------------


def _serve_process(database: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imgsync",
            "gallery",
            "serve",
            "--port",
            "0",
            "--database",
            database,
            "--key",
            f"{KEY[0]}:{KEY[1]}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert " at " in line, line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
    return proc, line.split(" at ")[1].split(" ")[0]


@pytest.mark.slow
def test_kill_9_of_a_replica_during_a_stream_of_adds_loses_nothing_acknowledged(db: GalleryPlace) -> None:
    database = str(db.database)
    (victim, url_a), (survivor, url_b) = _serve_process(database), _serve_process(database)
    try:
        images = {k: make_image(400 + k) for k in range(48)}
        acked: dict[int, str] = {}
        unknown: list[int] = []
        lock = threading.Lock()
        client = Client(url_a)
        client.token()

        def stream(ks: list[int]) -> None:
            for k in ks:
                answer = client.call("add", image=B64(images[k]), brief=f"img-{k}")
                with lock:
                    if "cont_sign" in answer and "error_code" not in answer:
                        acked[k] = answer["cont_sign"]
                    else:  # the replica died under this call: it may or may not have committed
                        unknown.append(k)

        threads = [threading.Thread(target=stream, args=(list(range(t, 48, 4)),)) for t in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= 12, what="a dozen acknowledged adds")
        victim.send_signal(signal.SIGKILL)
        for t in threads:
            t.join(timeout=120)
        assert 12 <= len(acked) < 48 and unknown, (len(acked), unknown)

        on_b = Client(url_b)
        listed = {e["cont_sign"]: e["brief"] for e in store_entries(database)}
        for k, sign in acked.items():  # nothing acknowledged is lost
            assert listed.get(sign) == f"img-{k}"
            assert on_b.call("search", image=B64(images[k]))["result"][0]["cont_sign"] == sign
        for k in unknown:  # the client's retry on B settles each unknown add
            answer = on_b.call("add", image=B64(images[k]), brief=f"img-{k}")
            assert "error" not in answer and answer.get("error_code") in (None, 216681), answer
        for k in range(48):
            if k not in acked and k not in unknown:
                on_b.call("add", image=B64(images[k]), brief=f"img-{k}")
        final = store_entries(database)
        assert len(final) == 48 == len({e["cont_sign"] for e in final})  # nothing duplicated
        assert sorted(e["brief"] for e in final) == sorted(f"img-{k}" for k in range(48))
    finally:
        for proc in (victim, survivor):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    assert survivor.returncode == 0


def _add_until_done(client: Client, image: bytes, brief: str, errors: list[dict[str, Any]]) -> str:
    """What a client does: retry an add answered 2 (or cut off) until it is settled."""
    for _ in range(600):
        answer = client.call("add", image=B64(image), brief=brief)
        if "cont_sign" in answer:  # added, or 216681: it was added by an earlier try
            return str(answer["cont_sign"])
        errors.append(answer)
        threading.Event().wait(0.05)
    raise AssertionError(f"add never settled: {errors[-3:]}")


@pytest.fixture
def on_private(private_pg: Any) -> Iterator[tuple[Any, GalleryPlace, Client, Client]]:
    """Two replicas on a database of a server of this test's own: (server, place, client of A, client of B)."""
    place = GalleryPlace("postgres", database=private_pg.create_database())
    a, b = replicas(place)
    try:
        yield private_pg, place, Client(a.url), Client(b.url)
    finally:
        a.stop()
        b.stop()


@pytest.mark.slow
def test_a_database_restart_mid_stream_is_survived(on_private: tuple[Any, GalleryPlace, Client, Client]) -> None:
    private_pg, place, on_a, on_b = on_private
    images = [make_image(500 + k) for k in range(40)]
    signs: dict[int, str] = {}
    errors: list[dict[str, Any]] = []

    def stream() -> None:
        for k, img in enumerate(images):
            signs[k] = _add_until_done(on_a if k % 2 else on_b, img, f"img-{k}", errors)

    t = threading.Thread(target=stream)
    t.start()
    wait_until(lambda: len(signs) >= 10, what="ten adds before the restart")
    private_pg.restart()
    t.join(timeout=240)
    assert not t.is_alive() and len(signs) == 40
    for e in errors:  # what clients saw meanwhile: "unavailable, retry", never an internal error
        assert e.get("error_code") == 2 or "error" in e, e
    for client in (on_a, on_b):
        wait_until(lambda c=client: c.health()[0] == 200, what="both replicas healthy again")
    listed = store_entries(str(place.database))
    assert sorted(e["brief"] for e in listed) == sorted(f"img-{k}" for k in range(40))
    for k in (0, 13, 39):
        for client in (on_a, on_b):
            assert client.call("search", image=B64(images[k]))["result"][0]["cont_sign"] == signs[k]


@pytest.mark.slow
def test_a_replica_that_loses_its_database_says_so_and_recovers(
    on_private: tuple[Any, GalleryPlace, Client, Client],
) -> None:
    private_pg, _, on_a, on_b = on_private
    wait_until(lambda: on_a.health()[0] == 200 and on_b.health()[0] == 200, what="replicas up")
    on_a.call("add", image=B64(make_image(600)), brief="before")
    private_pg.stop()

    status, health = on_a.health()
    assert status == 503 and health["status"] == "unavailable" and "database is unreachable" in health["error"]
    for answer in (
        on_a.call("add", image=B64(make_image(601)), brief="during"),
        on_b.call("search", image=B64(make_image(600))),
        on_b.call("delete", image=B64(make_image(600))),
    ):
        assert answer["error_code"] == 2 and "database is unreachable" in answer["error_msg"], answer
    fresh = requests.get(
        on_a.url + TOKEN_PATH,
        params={"grant_type": "client_credentials", "client_id": KEY[0], "client_secret": KEY[1]},
        timeout=30,
    )
    assert fresh.status_code == 200 and fresh.json()["access_token"]  # tokens need no database

    private_pg.start()
    for client in (on_a, on_b):
        wait_until(lambda c=client: c.health()[0] == 200, what="recovery after the database returns")
    sign = on_a.call("add", image=B64(make_image(601)), brief="after")["cont_sign"]
    _, health_a = on_a.health()
    wait_until(
        lambda: on_b.health()[1]["applied_change"] >= health_a["applied_change"],
        what="B following again without being asked",
    )
    assert on_b.call("search", image=B64(make_image(601)))["result"][0]["cont_sign"] == sign
    assert on_b.call("search", image=B64(make_image(600)))["result"][0]["brief"] == "before"


# --- schema and commands --------------------------------------------------------------------------


def test_schema_is_migrated_by_replicas_starting_together_and_a_newer_one_is_refused(pg_server: PgServer) -> None:
    import psycopg

    from imgsync.localgallery.store import StoreVersionError
    from imgsync.localgallery.store_pg import VERSION_TABLE, PostgresStore

    empty = pg_server.new_database(migrated=False)
    with ThreadPoolExecutor(4) as pool:  # four replicas starting at once on an empty database
        stores = list(pool.map(lambda _: PostgresStore(empty), range(4)))
    for s in stores:
        s.close()
    with psycopg.connect(empty, autocommit=True) as conn:
        assert conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [("g0001",)]
        conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = 'g9999'")
    with pytest.raises(StoreVersionError, match="g9999.*newer imgsync.*left untouched"):
        PostgresStore(empty)
    result = CliRunner().invoke(cli, ["gallery", "ls", "--database", empty, "--library", "same_hq"])
    assert result.exit_code == 1 and "newer imgsync" in result.output


def test_gallery_serve_on_a_database_runs_as_a_process_and_keeps_its_key_in_the_database(
    db: GalleryPlace, tmp_path: Path
) -> None:
    database = str(db.database)
    both = CliRunner().invoke(cli, ["gallery", "serve", "--data", str(tmp_path), "--database", database])
    assert both.exit_code == 2 and "give one of them" in both.output
    keys = []
    for _ in range(2):
        with subprocess.Popen(
            [sys.executable, "-m", "imgsync", "gallery", "serve", "--port", "0", "--database", database],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            try:
                assert proc.stdout is not None
                lines = [proc.stdout.readline() for _ in range(2)]
                assert "PostgreSQL 127.0.0.1" in lines[0] and "imgsync@" not in lines[0]
                keys.append(lines[1].strip())
                proc.send_signal(signal.SIGTERM)
                out, err = proc.communicate(timeout=30)
                assert proc.returncode == 0, err
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    assert keys[0].startswith("created API key: ") and keys[1].startswith("API key: ")
    assert keys[0].split(": ")[1] == keys[1].split(": ")[1].split(" ")[0]  # created once, then reused


def test_config_key_and_environment_choose_the_database(
    db: GalleryPlace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.engine()
    try:
        engine.add("same_hq", make_image(700), brief="listed")
    finally:
        engine.close()
    config = tmp_path / "config.toml"
    config.write_text(f'[local_gallery]\ndatabase = "{db.database}"\n')
    by_config = CliRunner().invoke(cli, ["--config", str(config), "gallery", "ls", "--library", "same_hq"])
    assert by_config.exit_code == 0 and "listed" in by_config.output, by_config.output
    monkeypatch.setenv("IMGSYNC_GALLERY_DATABASE", str(db.database))
    (tmp_path / "plain.toml").write_text("")
    by_env = CliRunner().invoke(
        cli, ["--config", str(tmp_path / "plain.toml"), "gallery", "ls", "--library", "same_hq"]
    )
    assert by_env.exit_code == 0 and "listed" in by_env.output, by_env.output
