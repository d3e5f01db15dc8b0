"""`imgsync gallery ...`: serve and inspect the local gallery."""

from __future__ import annotations

from pathlib import Path

import click

from imgsync.cli import App, cli, echo_json, pass_app
from imgsync.errors import ImgsyncError, UsageError
from imgsync.gallery.extra import require_local_gallery
from imgsync.libraries import LIBRARIES

_data_option = click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The gallery's data directory (default: the embedded gallery's, <state dir>/gallery; see --state-dir).",
)
_database_option = click.option(
    "--database",
    metavar="URL",
    default=None,
    help="Keep the gallery in this PostgreSQL database (postgresql://user@host/dbname) instead of a data "
    "directory; any number of servers may serve one database. Default: $IMGSYNC_GALLERY_DATABASE, "
    "else [local_gallery] database in the config.",
)


def _location(app: App, data_dir: Path | None, database: str | None) -> tuple[Path | None, str | None]:
    """(data dir, None) or (None, database URL) for a gallery command."""
    if data_dir is not None and database is not None:
        raise UsageError("--data and --database are two places to keep a gallery: give one of them")
    if data_dir is None and database is None:
        database = app.config.local_gallery.database
    if database is not None:
        _check_driver()
        return None, database
    if data_dir is None:
        from imgsync.embedded import local_data_dir

        data_dir = local_data_dir(app.config)
    return data_dir, None


def _check_driver() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise UsageError(
            "a gallery in PostgreSQL needs the PostgreSQL driver: pip install 'imgsync[postgres]'"
        ) from None


def _parse_keys(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, str]]:
    keys = []
    for value in values:
        api_key, sep, secret = value.partition(":")
        if not sep or not api_key.strip() or not secret.strip():
            # Never echo the value: it holds a secret.
            raise click.BadParameter("expected KEY:SECRET (an API key, a colon, a secret key)")
        keys.append((api_key.strip(), secret.strip()))
    return keys


@cli.group()
def gallery() -> None:
    """The local gallery: an image-search server speaking the cloud's protocol."""


def _parse_libraries(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in LIBRARIES]
    if unknown or not names:
        raise click.BadParameter(
            f"expected a comma-separated list of {', '.join(LIBRARIES)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    return names


@gallery.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (loopback by default; the gallery has no TLS).",
)
@click.option(
    "--port",
    default=8808,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
@_data_option
@_database_option
@click.option(
    "--key",
    "keys",
    multiple=True,
    callback=_parse_keys,
    metavar="KEY:SECRET",
    help="An API key and its secret key (repeatable). Without one, a key is created and saved.",
)
@click.option(
    "--qps",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Calls per second allowed per API key (error 18 beyond it). Default: no limit.",
)
@click.option(
    "--allow-private-urls", is_flag=True, help="Let url= inputs fetch from loopback/private/link-local addresses."
)
@click.option("--no-url-fetch", is_flag=True, help="Refuse url= inputs altogether (error 282111).")
@click.option(
    "--libraries",
    callback=_parse_libraries,
    metavar="LIB,LIB,...",
    default=None,
    help='Enable only these libraries; calls to the others answer 216017 "not initialized", as the '
    "cloud does for a library the account has not created. Default: all five.",
)
@pass_app
def serve(
    app: App,
    host: str,
    port: int,
    data_dir: Path | None,
    database: str | None,
    keys: list[tuple[str, str]],
    qps: float | None,
    allow_private_urls: bool,
    no_url_fetch: bool,
    libraries: tuple[str, ...] | None,
) -> None:
    """Serve the local gallery until Ctrl-C or SIGTERM.

    By default it serves the embedded gallery's data (<state dir>/gallery): what `imgsync reconcile` put
    there, and while it runs, commands with endpoint = "local" talk to it.
    """
    require_local_gallery("`imgsync gallery serve`")
    import logging

    logging.getLogger("imgsync.localgallery").setLevel(logging.NOTSET)  # a server's log is for its operator
    data_dir, database = _location(app, data_dir, database)
    if data_dir is not None:
        from imgsync.embedded import local_data_dir, make_local_data_dir

        if data_dir == local_data_dir(app.config):
            make_local_data_dir(app.config)  # it holds the gallery's key: readable by its owner only
    from imgsync.localgallery.engine import DataDirInUseError, IndexVersionError
    from imgsync.localgallery.server import serve_forever
    from imgsync.localgallery.store import StoreError, StoreVersionError

    try:
        serve_forever(
            data_dir,
            database=database,
            echo=click.echo,
            host=host,
            port=port,
            keys=keys or None,
            qps=qps,
            allow_private_urls=allow_private_urls,
            allow_url_fetch=not no_url_fetch,
            libraries=libraries,
        )
    except OSError as e:  # port taken, address not ours, host unresolvable, data dir unwritable
        raise ImgsyncError(f"cannot serve the local gallery on {host}:{port}: {e.strerror or e}") from e
    except ValueError as e:  # an unparsable --database
        raise UsageError(f"--database: {e}") from None
    except (DataDirInUseError, IndexVersionError, StoreVersionError, StoreError) as e:
        raise ImgsyncError(f"cannot serve the local gallery: {e}") from None


@gallery.command("ls")
@_data_option
@_database_option
@click.option("--library", required=True, type=click.Choice(list(LIBRARIES)), help="Which library to list.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@pass_app
def ls(app: App, data_dir: Path | None, database: str | None, library: str, as_json: bool) -> None:
    """List a library's entries: cont_sign, brief, tags (product: class ids)."""
    require_local_gallery("`imgsync gallery ls`")
    from imgsync.localgallery.store import Store, StoreError, StoreVersionError

    data_dir, database = _location(app, data_dir, database)
    store: Store
    try:
        if database is not None:
            from imgsync.localgallery.store_pg import PostgresStore

            store = PostgresStore(database, pool_size=1, migrate_schema=False)  # reads only
        else:
            assert data_dir is not None
            if not data_dir.is_dir():
                raise UsageError(f"no local gallery data at {data_dir} (see --data, --state-dir)")
            from imgsync.localgallery.store_sqlite import SqliteStore

            store = SqliteStore(data_dir, read_only=True)  # works while a server or `imgsync watch` holds the dir
        try:
            entries = store.entries(library)
        finally:
            store.close()
    except ValueError as e:
        raise UsageError(f"--database: {e}") from None
    except (StoreVersionError, StoreError) as e:
        raise ImgsyncError(f"cannot list the local gallery: {e}") from None
    if as_json:
        echo_json(entries)
        return
    for entry in entries:
        click.echo(f"{entry['cont_sign']}\t{_labels(library, entry)}\t{entry['brief']}")


def _labels(library: str, entry: dict[str, object]) -> str:
    if LIBRARIES[library].labels == "class_id":
        return f"class_id1={entry.get('class_id1') or '-'},class_id2={entry.get('class_id2') or '-'}"
    tags = entry.get("tags") or []
    return "tags=" + (",".join(str(t) for t in tags) if isinstance(tags, list) and tags else "-")
