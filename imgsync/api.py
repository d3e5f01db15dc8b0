"""imgsync as a library: open a config and a state dir, then reconcile, search, inspect and watch.

    >>> from imgsync import Imgsync
    >>> with Imgsync.open(state_dir=state) as sync:          # no config file needed
    ...     result = sync.reconcile([folder])                # mirror a folder into the embedded gallery
    ...     hits = sync.search(query)                        # which local files look like this image?
    >>> result.exit_code, hits[0].paths
    (0, (PosixPath('.../boat.jpg'),))

This is the composition root: it owns the state-dir lock, the gallery binding, the mirror loop and its
stop rule, spool sweeping and the mapping from outcomes to the documented exit codes. The command line,
the watch daemon's command and the web console are thin clients of it. What a run does to one mirror is
imgsync.pipeline's (scan → plan → execute); this module decides which mirrors, in which order, with
which gallery, and what the outcome means.

Heavy parts (SQLAlchemy, Pillow, the local gallery's matchers) are imported by the methods that need
them: a no-op reconcile of a settled folder and `status` answer through manifest/lite.py alone.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgsync import statedir
from imgsync.config import (
    Config,
    MirrorConfig,
    adhoc_mirror,
    load_config,
    with_remembered,
)
from imgsync.errors import ConfigError, GalleryChangedError, ImgsyncError, UsageError
from imgsync.libraries import DEFAULT_LIBRARY, LIBRARIES
from imgsync.remembered import forget, load_remembered, name_for, remember, remembered_path
from imgsync.report import (  # what the API returns and tells (plain data): re-exported here
    Dropped,
    Event,
    Events,
    Forgot,
    Hit,
    MirrorRun,
    MirrorStatus,
    Planned,
    Progress,
    Remembered,
    Report,
    Started,
    Status,
    SyncResult,
    Waiting,
)

if TYPE_CHECKING:
    from imgsync.doctor import DoctorReport
    from imgsync.entries import EntryPage, GalleryInfo
    from imgsync.manifest import Store
    from imgsync.plan import Plan
    from imgsync.watch.daemon import Daemon
    from imgsync.watch.notify import Notifier

log = logging.getLogger("imgsync")


# --------------------------------------------------------------------------- the entry point


class Imgsync:
    """A config and a state dir, opened. Cheap to open (nothing is locked or started until a method
    needs it); close() or a `with` block releases what the methods kept open."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        state_dir_given: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        #: the state dir came from the caller or $IMGSYNC_STATE_DIR (a service must be told it)
        self.state_dir_given = state_dir_given
        self._env = os.environ if env is None else env

    @classmethod
    def open(
        cls,
        config: str | Path | None = None,
        *,
        state_dir: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Imgsync:
        """Load the config (`config`, else $IMGSYNC_CONFIG, else the user's config.toml if it exists —
        no file is fine) and the state dir's remembered mirrors. A bad config is a ConfigError that
        names the key."""
        env = os.environ if env is None else env
        config_path = Path(config).expanduser() if config is not None else None
        state = Path(state_dir).expanduser() if state_dir is not None else None
        loaded = load_config(config_path, env=env, state_dir=state)
        loaded = with_remembered(loaded, load_remembered(loaded.state_dir))
        return cls(
            loaded,
            config_path=config_path or loaded.source,
            state_dir_given=state is not None or bool(env.get("IMGSYNC_STATE_DIR")),
            env=env,
        )

    def close(self) -> None:
        """Nothing is held between calls today; kept so callers can use `with` and stay future-proof."""

    def __enter__(self) -> Imgsync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    @property
    def manifest_path(self) -> Path:
        return statedir.manifest_path(self.state_dir)

    @property
    def mirrors(self) -> tuple[MirrorConfig, ...]:
        """Configured mirrors, then remembered ones (folders mirrored without a config)."""
        return self.config.mirrors

    # ------------------------------------------------------------------ which mirrors

    def resolve(
        self,
        targets: Sequence[str | Path] = (),
        *,
        library: str | None = None,
        remember_new: bool = True,
        events: Events | None = None,
    ) -> list[MirrorConfig]:
        """The mirrors `targets` name: mirror names, or folders (a folder no mirror has becomes a
        remembered mirror with the defaults, or a passing one when remember_new is False). No target:
        every mirror. `library` sets a new folder's library, or changes a remembered one's."""
        if library is not None and library not in LIBRARIES:
            raise UsageError(f"--library: unknown library {library!r} (known: {', '.join(LIBRARIES)})")
        if not targets:
            if library is not None:
                raise UsageError("--library applies to a FOLDER named with it (`imgsync reconcile FOLDER --library L`)")
            return list(self.mirrors)
        by_name = {m.name: m for m in self.mirrors}
        chosen: list[MirrorConfig] = []
        for t in targets:
            if isinstance(t, str) and t in by_name:
                chosen.append(self._in_library(by_name[t], library, remember_new, events))
                continue
            path = Path(t).expanduser()
            gone_mirror = self._mirror_of_vanished_folder(path)
            if gone_mirror is not None:
                chosen.append(gone_mirror)  # its run says the folder is missing, and what --force does
                continue
            if not path.is_dir():
                what = "not a directory" if path.exists() else "neither a mirror nor an existing folder"
                known = ", ".join(by_name) or "none yet"
                # A typo must not become a mirror that `status` shows forever: nothing is recorded.
                raise UsageError(f"{str(t)!r} is {what} (mirrors: {known})")
            chosen.append(self._mirror_for_folder(path.resolve(), library, remember_new, events))
        return list(dict.fromkeys(chosen))

    def _mirror_of_vanished_folder(self, path: Path) -> MirrorConfig | None:
        """The mirror whose folder `path` was, when that folder no longer exists (removed or unmounted): the
        path the user synced before still names it, so `reconcile PATH --force` works as `reconcile NAME
        --force` does."""
        if path.exists():
            return None
        where = path.resolve()
        for m in self.mirrors:
            if m.folder.expanduser().resolve() == where:
                return m
        return None

    def _mirror_for_folder(
        self, folder: Path, library: str | None, remember_new: bool, events: Events | None
    ) -> MirrorConfig:
        for m in self.mirrors:
            if m.folder.expanduser().resolve() == folder:
                return self._in_library(m, library, remember_new, events)
        name = self._legacy_name(folder) or name_for(folder, {m.name for m in self.mirrors})
        mirror = MirrorConfig(name=name, folder=folder, library=library or DEFAULT_LIBRARY)
        if not remember_new:
            return mirror
        return self._remember(mirror, events, first=True)

    def _in_library(
        self, m: MirrorConfig, library: str | None, remember_new: bool, events: Events | None
    ) -> MirrorConfig:
        """Mirror `m` moved to `library` (--library), remembered so unless remember_new is False (a dry
        run shows the move without making it: the next real run would otherwise do it)."""
        if library is None or library == m.library:
            return m
        if m.name not in self.config.remembered:
            raise UsageError(
                f"--library: mirror {m.name!r} is configured with library {m.library!r} in "
                f"{self.config_path}; change it there"
            )
        changed = replace(m, library=library)
        return self._remember(changed, events, first=False) if remember_new else changed

    def _remember(self, mirror: MirrorConfig, events: Events | None, *, first: bool) -> MirrorConfig:
        try:
            where = remember(self.state_dir, mirror)
        except (ConfigError, OSError) as e:
            log.warning("%s: not remembered (%s); name the folder again next time", mirror.folder, e)
            return mirror
        self.config = with_remembered(self.config, load_remembered(self.state_dir))
        if first and events is not None:
            events(Remembered(mirror, where))
        return mirror

    def _drop_remembered(self, mirror: MirrorConfig, emit: Events) -> None:
        """A remembered folder removed on purpose, its entries deleted: left remembered, every later
        run would report its folder missing. A configured mirror stays until the config drops it."""
        try:
            forget(self.state_dir, mirror.name)
        except OSError as e:
            log.warning("%s: still remembered (%s); remove it from %s", mirror.name, e, remembered_path(self.state_dir))
            return
        self.config = with_remembered(self.config, load_remembered(self.state_dir))
        emit(Dropped(mirror, remembered_path(self.state_dir)))

    def _legacy_name(self, folder: Path) -> str | None:
        """The name an older imgsync gave this folder ("<name>-<hash>"), if the manifest has records under
        it: they stay the folder's."""
        legacy = adhoc_mirror(folder).name
        if not self.manifest_path.exists():
            return None
        from imgsync.manifest import lite

        try:
            with lite.LiteManifest(self.manifest_path) as m:
                return legacy if legacy in lite.mirror_names(m.con) else None
        except ImgsyncError:
            return None

    # ------------------------------------------------------------------ reconcile

    def reconcile(
        self,
        targets: Sequence[str | Path] = (),
        *,
        dry_run: bool = False,
        force: bool = False,
        rebind: bool = False,
        library: str | None = None,
        events: Events | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        wait_s: float = 10.0,
    ) -> SyncResult:
        """Bring each mirror's library in step with its folder, once (README "How reconcile decides").

        dry_run: plan only (no lock, no gallery, nothing written). force: let the deletes a guard
        withheld go ahead. rebind: the config points at another gallery than the manifest's entries:
        forget them and add every image to it. wait_s: how long, in all, to wait for files saved moments
        ago. Raises LockHeldError (exit 7) while another imgsync holds the state dir, GalleryChangedError
        (exit 2) when the gallery changed without rebind; a gallery that fails stops the run (its error
        is in the result, whose exit_code says what it means)."""
        if not dry_run:
            self.check_gallery()  # refused (no keys, no local gallery installed) before the state dir is written
        mirrors = self.resolve(targets, library=library, remember_new=not dry_run, events=events)
        if not mirrors:
            raise UsageError("no mirror yet: name a FOLDER (it is remembered), or add a [[mirror]] to the config")
        if dry_run:
            return self._dry_run(mirrors, force, rebind, events)
        from imgsync.manifest.lock import StateLock

        with StateLock(self.state_dir):
            if not (force or rebind):
                quick = self._still_in_step(mirrors)
                if quick is not None:
                    return quick
            return self._run(mirrors, force=force, rebind=rebind, events=events, should_stop=should_stop, wait_s=wait_s)

    def _still_in_step(self, mirrors: Sequence[MirrorConfig]) -> SyncResult | None:
        """The no-op reconcile without SQLAlchemy or a gallery: every mirror still carries the mark its
        last clean run left (settled.py), nothing is in doubt, the gallery is the bound one. Records each
        run and returns the result; None when anything needs the full path."""
        from imgsync.manifest import lite
        from imgsync.settled import still_settled

        if not self.manifest_path.exists():
            return None
        with lite.LiteManifest(self.manifest_path) as m:
            if not m.current or lite.setting(m.con, "gallery") != self.gallery_identity():
                return None
            if lite.open_intents(m.con):
                return None
            for mirror in mirrors:
                state = lite.mirror_state(m.con, mirror.name)
                if state is None or not still_settled(mirror, state, open_intents=0):
                    return None
            runs = []
            now = time.time()
            with m.write() as con:
                for mirror in mirrors:
                    report = Report(mirror.name)
                    report.rejected = [(p, why) for p, _, why in lite.files_with(con, mirror.name, ("rejected",))]
                    report.unchanged_problems = {p for p, _ in report.rejected}
                    run_id = lite.start_run(con, mirror.name, now)
                    lite.finish_run(con, run_id, "ok" if report.ok else "partial", report.counts(), None, now)
                    runs.append(MirrorRun(mirror, None, report))
        return SyncResult(runs)

    def _run(
        self,
        mirrors: Sequence[MirrorConfig],
        *,
        force: bool,
        rebind: bool,
        events: Events | None,
        should_stop: Callable[[], bool],
        wait_s: float,
    ) -> SyncResult:
        from imgsync.manifest import Store
        from imgsync.pipeline import (
            SettleWait,
            bind_gallery,
            reconcile_mirror,
            sweep_unreferenced_spool,
        )

        emit = events or (lambda event: None)
        runs: list[MirrorRun] = []
        with ExitStack() as stack:
            store = stack.enter_context(Store.open(self.manifest_path))
            gallery = stack.enter_context(self.open_gallery())
            forgot = bind_gallery(store, self.gallery_identity(), rebind=rebind, confirm=gallery.authenticate)
            if forgot:
                emit(Forgot(forgot))
            spool_dir = statedir.spool_dir(self.state_dir)
            for mirror in mirrors:
                name = mirror.name

                def waiting(n: int, limit_s: float, name: str = name) -> None:
                    emit(Waiting(name, n, limit_s))

                early = [0]

                def started(n: int, name: str = name, early: list[int] = early) -> None:
                    early[0] = n
                    emit(Started(name, n))

                def planned(plan: Plan, name: str = name, early: list[int] = early) -> None:
                    emit(Planned(name, plan, early[0]))

                def progress(n: int, name: str = name) -> None:
                    emit(Progress(name, n))

                run = reconcile_mirror(
                    mirror,
                    store,
                    gallery,
                    spool_dir=spool_dir,
                    force=force,
                    on_planned=planned,
                    on_progress=progress,
                    on_early=started,
                    should_stop=should_stop,
                    settle=SettleWait(limit_s=wait_s, on_wait=waiting) if wait_s else None,
                )
                runs.append(run)
                if run.report.stopped is not None or run.report.interrupted:
                    break  # quota, auth or an unreachable gallery would fail the other mirrors too
                if run.report.folder_removed and run.report.ok and name in self.config.remembered:
                    self._drop_remembered(mirror, emit)
            sweep_unreferenced_spool(store, spool_dir)
        return SyncResult(runs)

    def _dry_run(self, mirrors: Sequence[MirrorConfig], force: bool, rebind: bool, events: Events | None) -> SyncResult:
        """Plan only: no lock, no gallery, and no manifest is created or written. A config pointing at
        another gallery than the entries' is refused as the run would refuse it; with rebind, the plan
        is the one after forgetting them: every image added."""
        from imgsync.manifest import Store
        from imgsync.pipeline import changed_text, gallery_change, plan_mirror

        runs = []
        with ExitStack() as stack:
            store = stack.enter_context(Store.open(self.manifest_path)) if self.manifest_path.exists() else None
            change = gallery_change(store, self.gallery_identity()) if store is not None else None
            if change is not None:
                if not rebind:
                    raise GalleryChangedError(changed_text(*change, self.gallery_identity()))
                if events is not None:
                    events(Forgot(change[1], dry_run=True))
            for mirror in mirrors:
                report = Report(mirror.name)
                planned = plan_mirror(mirror, None if change else store, force=force, report=report)
                report.unchanged_problems = planned.unchanged_problems
                runs.append(MirrorRun(mirror, planned.plan, report))
                if events is not None:
                    events(Planned(mirror.name, planned.plan))
        return SyncResult(runs, dry_run=True)

    # ------------------------------------------------------------------ the gallery

    def gallery_identity(self) -> str:
        """Which gallery the config points at, as the manifest records it (see pipeline.bind_gallery)."""
        from imgsync.gallery.identity import gallery_identity

        return gallery_identity(self.config)

    def check_gallery(self) -> None:
        """What opening the configured gallery would refuse at once (a ConfigError, exit 2): a URL without
        keys, the local gallery without its packages (a light install: `pip install 'imgsync[gallery]'`)."""
        from imgsync.embedded import check_gallery

        check_gallery(self.config)

    @contextmanager
    def open_gallery(self) -> Iterator[Any]:
        """The configured gallery, ready to call (a GalleryClient): the cloud or a served gallery by URL,
        or the embedded local gallery started for the block (or the one another imgsync serves)."""
        from imgsync.embedded import open_gallery

        with open_gallery(self.config) as gallery:
            yield gallery

    # ------------------------------------------------------------------ search

    def search(
        self,
        image: bytes | str | Path,
        *,
        library: str | None = None,
        tags: Sequence[int] = (),
        tag_logic: str = "and",
        top: int = 10,
        on_note: Callable[[str], None] | None = None,
    ) -> list[Hit]:
        """The entries most like `image` (bytes, a file path, or an http(s) URL the gallery fetches),
        best first, each with the local files it stands for. Needs no lock: works while `watch` runs.
        on_note: told what was done to the query to make the gallery take it (a too-small picture
        enlarged), if anything."""
        from imgsync.query import prepare_query

        library = library or self.default_library()
        if library not in LIBRARIES:
            raise UsageError(f"--library: unknown library {library!r} (known: {', '.join(LIBRARIES)})")
        if tags and LIBRARIES[library].labels != "tags":
            raise UsageError(f"--tags: the {library} library has class ids, not tags")
        source, note = prepare_query(image, library)
        if note and on_note is not None:
            on_note(note)
        with self.open_gallery() as gallery:
            result = gallery.search(library, **source, tags=tuple(tags), tag_logic=tag_logic, rn=top)
        hits = sorted(result.hits, key=lambda h: -float(h.score))[:top]
        where = self._locate(library, [h.cont_sign for h in hits])
        return [
            Hit(
                float(h.score),
                h.cont_sign,
                h.brief,
                tuple(Path(folder) / path if folder else Path(path) for _, folder, path in where.get(h.cont_sign, ())),
            )
            for h in hits
        ]

    def default_library(self) -> str:
        """The library every mirror uses, when they agree; else the default one."""
        libraries = {m.library for m in self.mirrors}
        return libraries.pop() if len(libraries) == 1 else DEFAULT_LIBRARY

    def _locate(self, library: str, cont_signs: list[str]) -> dict[str, list[tuple[str, str, str]]]:
        """Where the manifest says each hit's files are; nothing when there is no manifest yet."""
        if not cont_signs or not self.manifest_path.exists():
            return {}
        from imgsync.manifest import lite

        with lite.LiteManifest(self.manifest_path) as m:
            if m.current:
                return lite.locate(m.con, library, cont_signs)
        from imgsync.manifest import Store

        with Store.open(self.manifest_path) as store:
            return store.locate(library, cont_signs)

    # ------------------------------------------------------------------ status

    def status(self, *, limit: int | None = 20) -> Status:
        """Per mirror: counts, the last run, the first `limit` rejected and pending files (None: all);
        whether `imgsync watch` runs. Reads only (works beside a running reconcile or watch)."""
        from imgsync.watch.statusfile import held_by_a_live_process, read_status

        rows: list[MirrorStatus] = []
        at_work: list[bool] = []  # asked once, and only of a run that says it is running
        with self._reader() as con:
            from imgsync.manifest import lite

            names = [m.name for m in self.mirrors]
            if con is not None:
                names += [n for n in lite.mirror_names(con) if n not in names]
            by_name = {m.name: m for m in self.mirrors}
            for name in names:
                m = by_name.get(name)
                if m is None and con is not None and not lite.holds_records(con, name):
                    continue  # a mirror dropped with its entries deleted (only its past runs are left)
                head = (name, m.folder if m else None, m.library if m else None, name in self.config.remembered)
                if con is None:
                    rows.append(MirrorStatus(*head, {}, None))
                    continue
                last = lite.last_run(con, name)
                if last is not None and last.status == "running":
                    if not at_work:
                        at_work.append(held_by_a_live_process(self.state_dir))
                    if not at_work[0]:  # killed (kill -9, power) or stopped by a full disk: the next run recovers
                        last = replace(last, status="interrupted")
                rows.append(
                    MirrorStatus(
                        *head,
                        lite.counts(con, name),
                        last,
                        [(p, why) for p, _, why in lite.files_with(con, name, ("rejected",), limit=limit)],
                        [(p, why) for p, _, why in lite.files_with(con, name, ("unstable", "error"), limit=limit)],
                    )
                )
        return Status(self.state_dir, rows, read_status(self.state_dir))

    def files(self, mirror: str, kind: str, *, offset: int = 0, limit: int = 100) -> list[tuple[str, str]]:
        """A page of a mirror's "rejected" or "pending" files: (path, reason), by path."""
        verdicts = {"rejected": ("rejected",), "pending": ("unstable", "error")}.get(kind)
        if verdicts is None:
            raise UsageError(f"kind: expected 'rejected' or 'pending', got {kind!r}")
        with self._reader() as con:
            if con is None:
                return []
            from imgsync.manifest import lite

            return [(p, why) for p, _, why in lite.files_with(con, mirror, verdicts, limit=limit, offset=offset)]

    @contextmanager
    def _reader(self) -> Iterator[Any]:
        """A sqlite3 connection to the manifest at this imgsync's schema (upgraded through the Store first
        if it is older), or None when there is no manifest yet."""
        if not self.manifest_path.exists():
            yield None
            return
        from imgsync.manifest import lite

        with lite.LiteManifest(self.manifest_path) as m:
            if not m.current:
                from imgsync.manifest import Store

                Store.open(self.manifest_path).close()  # upgrades, or refuses a newer manifest (exit 8)
            yield m.con

    # ------------------------------------------------------------------ doctor

    def doctor(self) -> DoctorReport:
        """The preflight (imgsync.doctor): one finding per check, and the exit code a sync would end with."""
        return diagnose(
            self.config_path, state_dir=self.state_dir if self.state_dir_given else None, env=self._env, remembered=True
        )

    # ------------------------------------------------------------------ the daemon

    @contextmanager
    def watcher(
        self, targets: Sequence[str | Path] = (), *, library: str | None = None, notifier: Notifier | None = None
    ) -> Iterator[Daemon]:
        """The watch daemon, set up (lock held, manifest open, gallery bound) but not yet running: call
        its run() (blocking; stop() from another thread or a signal handler ends it). SIGHUP's reload
        (daemon.request_reload) re-reads the config and the remembered mirrors through this object."""
        self.check_gallery()  # refused before the state dir is written or anything is logged
        from imgsync.manifest import StateLock, Store
        from imgsync.pipeline import bind_gallery
        from imgsync.watch import timing_from
        from imgsync.watch.daemon import Daemon, Reloaded

        mirrors = self.resolve(targets, library=library)
        if not mirrors:
            raise UsageError(
                "no mirror to watch: name a FOLDER, run `imgsync reconcile FOLDER` once, or add a "
                "[[mirror]] to the config"
            )
        with ExitStack() as stack:
            stack.enter_context(StateLock(self.state_dir))
            store = stack.enter_context(Store.open(self.manifest_path))
            gallery_stack = ExitStack()
            stack.callback(lambda: gallery_stack.close())
            gallery = gallery_stack.enter_context(self.open_gallery())
            # another gallery than the entries': exit 2, say why (once it has accepted the keys: exit 4 if not)
            bind_gallery(store, self.gallery_identity(), confirm=gallery.authenticate)

            def reload() -> Reloaded:
                nonlocal gallery_stack
                old_config = self.config
                new = Imgsync.open(
                    self.config_path, state_dir=self.state_dir if self.state_dir_given else None, env=self._env
                )
                chosen = new.resolve(targets, library=library)
                if new.state_dir != old_config.state_dir:
                    log.warning(
                        "state_dir changed in the config: that takes a restart (still using %s)", old_config.state_dir
                    )
                new_gallery = None
                if new.config.gallery != old_config.gallery:
                    fresh = ExitStack()
                    new_gallery = fresh.enter_context(new.open_gallery())
                    try:
                        # refused (or the new keys are): the reload fails, the old gallery stays
                        bind_gallery(store, new.gallery_identity(), confirm=new_gallery.authenticate)
                    except BaseException:
                        fresh.close()
                        raise
                    gallery_stack, old = fresh, gallery_stack
                    old.close()
                    log.info("gallery settings changed: reconnected")
                self.config = new.config
                return Reloaded(chosen, timing_from(new.config.watch), new_gallery)

            yield Daemon(
                mirrors,
                store,
                gallery,
                state_dir=self.state_dir,
                timing=timing_from(self.config.watch),
                notifier=notifier,
                reload=reload,
            )

    # ------------------------------------------------------------------ a gallery's entries (the web console)
    # What the console shows of a gallery and the edits it offers; what decides is imgsync/entries.py.

    def gallery_info(self) -> GalleryInfo:
        """Which gallery the config points at (embedded, or a URL without its credentials) and whether the
        manifest's entries are bound to it. Nothing secret: fit for a page."""
        from imgsync.entries import gallery_info
        from imgsync.manifest import lite

        with self._reader() as con:
            bound = lite.setting(con, "gallery") if con is not None else None
        return gallery_info(self.config, bound, self.gallery_identity())

    def entries(self, library: str, *, offset: int = 0, limit: int = 60) -> EntryPage:
        """A page of `library`'s entries, each with the mirror that manages it and its local files: the
        local gallery's own list (read from its store without starting it: works while `watch` runs), or
        for a gallery by URL, which has no list call, the live entries the mirrors here added."""
        from imgsync.entries import check_library, local_page, manifest_page
        from imgsync.gallery.identity import local_data_dir

        check_library(library)
        offset, limit = max(0, offset), max(1, min(limit, 1000))
        with self._reader() as con:
            if self.config.gallery.is_local:
                return local_page(local_data_dir(self.config), library, offset, limit, con)
            return manifest_page(con, library, offset, limit)

    def entry_copy(self, library: str, cont_sign: str) -> bytes | None:
        """The local gallery's stored working copy of an entry (a JPEG, at most 512 px a side); None for a
        gallery by URL, or an entry that has none."""
        from imgsync.entries import check_library
        from imgsync.gallery.identity import local_data_dir
        from imgsync.localgallery.listing import Listing

        check_library(library)
        if not self.config.gallery.is_local:
            return None
        with Listing(local_data_dir(self.config)) as listing:
            return listing.copy_of(library, cont_sign)

    def edit_entry(
        self, library: str, cont_sign: str, *, brief: str | None = None, tags: Sequence[int] | None = None
    ) -> None:
        """Change an entry's brief and/or tags in the gallery. Only entries no mirror manages: a mirror's
        entry is refused (ManagedEntryError, exit 2), since its next reconcile would undo the change."""
        from imgsync.entries import check_edit, check_library

        fields = check_edit(check_library(library), brief, tags)
        self._refuse_managed(library, cont_sign, "edit")
        with self.open_gallery() as gallery:
            gallery.update(library, cont_sign=cont_sign, **fields)

    def delete_entry(self, library: str, cont_sign: str) -> None:
        """Delete an entry from the gallery. Only entries no mirror manages (see edit_entry)."""
        from imgsync.entries import check_library

        check_library(library)
        self._refuse_managed(library, cont_sign, "delete")
        with self.open_gallery() as gallery:
            gallery.delete(library, cont_sign=cont_sign)

    def _refuse_managed(self, library: str, cont_sign: str, what: str) -> None:
        from imgsync.entries import refuse_managed
        from imgsync.manifest import lite

        with self._reader() as con:
            owner = lite.owners(con, library, [cont_sign]).get(cont_sign) if con is not None else None
        refuse_managed(library, cont_sign, owner, what)


def diagnose(
    config: str | Path | None = None,
    *,
    state_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    remembered: bool = True,
) -> DoctorReport:
    """imgsync doctor without opening first: a config that does not load is a finding, not an error."""
    from imgsync.doctor import open_configured_gallery, run_doctor

    env = os.environ if env is None else env
    path = Path(config).expanduser() if config is not None else None
    state = Path(state_dir).expanduser() if state_dir is not None else None

    def load() -> Config:
        loaded = load_config(path, env=env, state_dir=state)
        return with_remembered(loaded, load_remembered(loaded.state_dir)) if remembered else loaded

    return run_doctor(load, open_gallery=open_configured_gallery)


def store_of(sync: Imgsync) -> Store:
    """The manifest's Store, opened (for tools and tests that look inside; the caller closes it)."""
    from imgsync.manifest import Store

    return Store.open(sync.manifest_path)


__all__ = [
    "Event",
    "Forgot",
    "Hit",
    "Imgsync",
    "MirrorStatus",
    "Planned",
    "Progress",
    "Started",
    "Remembered",
    "Dropped",
    "Status",
    "SyncResult",
    "Waiting",
    "diagnose",
    "remembered_path",
]
