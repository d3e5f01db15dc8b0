"""reconcile end to end against a target: the local gallery, and with `pytest -m live` Baidu's cloud.

A folder of 3 images: the first run adds them, a rename becomes one update, a removal one delete. Every
entry the run created is deleted in a finally, whatever failed (from the manifest's records, and by
searching for this run's brief prefix in case a record was never written)."""

from __future__ import annotations

import os
from pathlib import Path

from imgsync.config import MirrorConfig
from imgsync.errors import GalleryError
from imgsync.manifest import Store
from imgsync.pipeline import reconcile_mirror


def put(folder: Path, name: str, data: bytes) -> None:
    path = folder / name
    path.write_bytes(data)
    t = os.stat(path).st_mtime_ns - 10**10  # old enough to count as settled
    os.utime(path, ns=(t, t))


def test_add_rename_delete_round_trip(tmp_path: Path, target) -> None:
    library = target.libraries[0]
    folder = tmp_path / "pics"
    folder.mkdir()
    images = {f"{n}.jpg": target.image(seed, (400, 400)) for n, seed in (("a", 11), ("b", 12), ("c", 13))}
    for name, data in images.items():
        put(folder, name, data)
    # The brief carries the run's prefix: leftovers of a broken live run can be found by it.
    mirror = MirrorConfig(
        name="live",
        folder=folder,
        library=library,
        brief=target.brief("{id}:{path}") if target.prefix else "{id}:{path}",
    )
    store = Store.open(tmp_path / "state" / "manifest.sqlite3")
    client = target.client()
    spool = tmp_path / "state" / "spool"
    try:
        run = reconcile_mirror(mirror, store, client, spool_dir=spool)
        assert sorted(run.report.added) == ["a.jpg", "b.jpg", "c.jpg"] and run.report.ok
        signs = {e.brief.rsplit(":", 1)[1]: e.cont_sign for e in store.entries("live").values()}
        assert set(signs) == set(images)

        (folder / "a.jpg").rename(folder / "renamed.jpg")
        before = client.stats.requests
        run = reconcile_mirror(mirror, store, client, spool_dir=spool)
        assert run.report.updated == ["renamed.jpg"] and run.report.added == []
        assert client.stats.requests - before == 1  # a rename is one update call, no upload
        (renamed,) = [e for e in store.entries("live").values() if e.cont_sign == signs["a.jpg"]]
        assert renamed.brief.endswith(":renamed.jpg")
        hits = client.search(library, image=images["a.jpg"]).hits
        assert (renamed.cont_sign, renamed.brief) in [(h.cont_sign, h.brief) for h in hits]

        (folder / "b.jpg").unlink()
        run = reconcile_mirror(mirror, store, client, spool_dir=spool)
        assert run.report.deleted == 1 and run.report.added == [] and run.report.updated == []
        if target.is_local or library != "picturebook":  # picturebook deletes may lag on the cloud
            assert signs["b.jpg"] not in {h.cont_sign for h in client.search(library, image=images["b.jpg"]).hits}

        run = reconcile_mirror(mirror, store, client, spool_dir=spool)
        assert run.plan is not None and run.plan.is_empty  # in step: nothing more to do
    finally:
        for entry in store.entries("live").values():
            if entry.cont_sign:
                target.track(entry.library, entry.cont_sign)
        _track_leftovers(target, client, library, images.values())
        store.close()
        client.close()


def _track_leftovers(target, client, library: str, images) -> None:  # type: ignore[no-untyped-def]
    """Entries with this run's brief prefix that the manifest may not know (a run that died mid-add)."""
    if not target.prefix:
        return
    for data in images:
        try:
            hits = client.search(library, image=data, rn=20).hits
        except GalleryError:
            continue
        for hit in hits:
            if hit.brief.startswith(target.prefix):
                target.track(library, hit.cont_sign)
