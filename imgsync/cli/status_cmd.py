"""`imgsync status`: what each mirror holds, what is pending or rejected, and how the last run ended."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass

import click

from imgsync.cli import App, cli, echo_json, pass_app


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@pass_app
def status(app: App, as_json: bool) -> None:
    """Per mirror: synced / pending / rejected counts (rejected files with reasons) and the last run;
    whether `imgsync watch` is running on this state dir, since when, its queue and its last error."""
    from imgsync.manifest import Store
    from imgsync.watch.statusfile import read_status

    config = app.config
    path = app.manifest_path()
    rows = []
    store = Store.open(path) if path.exists() else None
    try:
        names = [m.name for m in config.mirrors]
        if store is not None:
            names += [n for n in store.mirror_names() if n not in names]
        for name in names:
            rows.append(_mirror_status(store, name, config))
    finally:
        if store is not None:
            store.close()
    daemon = read_status(config.state_dir)
    if as_json:
        echo_json({"state_dir": str(config.state_dir), "mirrors": rows, "daemon": daemon})
        return
    click.echo(f"state dir: {config.state_dir}")
    for line in _daemon_lines(daemon):
        click.echo(line)
    if not rows:
        click.echo("no mirrors yet: run `imgsync reconcile FOLDER` or configure [[mirror]]")
    for row in rows:
        c = row["counts"]
        click.echo(f"{row['mirror']}: {c.get('synced', 0)} synced, {c.get('pending', 0)} pending, "
                   f"{c.get('rejected', 0)} rejected, {c.get('error', 0)} unreadable")
        last = row["last_run"]
        if last:
            when = str(last.get("finished_at") or last.get("started_at") or "")[:19].replace("T", " ")
            click.echo(f"  last run: {last.get('status')} at {when} UTC"
                       + (f": {last['error']}" if last.get("error") else ""))
        for item in row["rejected"]:
            click.echo(f"  ! {item['path']}: {item['reason']}")
        for item in row["pending"]:
            click.echo(f"  ? {item['path']}: {item['reason']}")


def _mirror_status(store, name: str, config) -> dict:
    if store is None:
        return {"mirror": name, "counts": {}, "last_run": None, "rejected": [], "pending": []}
    known = store.known_files(name)
    last = store.last_run(name)
    return {
        "mirror": name,
        "counts": store.counts(name),
        "last_run": _plain(last),
        "rejected": [{"path": p, "reason": f.reason} for p, f in sorted(known.items()) if f.verdict == "rejected"],
        "pending": [{"path": p, "reason": f.reason or f.verdict} for p, f in sorted(known.items())
                    if f.verdict in ("unstable", "error")],
    }


def _plain(value):
    if value is None:
        return None
    d = asdict(value) if is_dataclass(value) else dict(value)
    return {k: (v if isinstance(v, (str, int, float, bool, type(None), dict, list)) else str(v)) for k, v in d.items()}


def _daemon_lines(d: dict | None) -> list[str]:
    """What `imgsync watch` last said about itself (statusfile.read_status checked that it is alive)."""
    if d is None:
        return ["daemon: not running (imgsync watch was never started on this state dir)"]
    if not d.get("running"):
        why = "it did not stop cleanly (killed or crashed)" if d.get("stale") else "stopped"
        lines = [f"daemon: not running ({why}; last seen {d.get('updated_at', '?')})"]
    else:
        lines = [f"daemon: running since {d.get('started_at')} (pid {d.get('pid')}), {d.get('queue', 0)} queued"]
        gallery = d.get("gallery")
        if gallery:
            lines.append(f"  gallery paused: {gallery.get('paused')} (retry in {gallery.get('retry_in_s')} s)")
        for name, m in (d.get("mirrors") or {}).items():
            state = f"paused: {m['paused']}" if m.get("paused") else m.get("mode", "?")
            lines.append(f"  {name}: {state}, {m.get('queue', 0)} queued" + (f"; {m['note']}" if m.get("note") else ""))
    if d.get("last_error"):
        lines.append(f"  last error ({d.get('last_error_at', '?')}): {d['last_error']}")
    if d.get("error"):
        lines.append(f"  {d['error']}")
    return lines
