"""`imgsync search IMAGE_OR_URL`: ask the gallery which entries look like an image."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from imgsync.cli import App, cli, pass_app
from imgsync.config import Config
from imgsync.errors import UsageError
from imgsync.libraries import LIBRARIES, MAX_RESULTS, MAX_TAGS, TAG_RANGE


@dataclass(frozen=True, slots=True)
class Row:
    """One line of output: a hit and the local file(s) it stands for (from the manifest)."""

    rank: int
    score: float
    cont_sign: str
    brief: str
    paths: tuple[str, ...] = ()


#: cont_sign → [(mirror, folder, relative path)], as Store.locate answers
Locations = Mapping[str, Sequence[tuple[str, str, str]]]


def hits_to_rows(hits: Sequence[object], where: Locations | None = None) -> list[Row]:
    """Search hits (anything with cont_sign, score, brief) → numbered rows, best first, each with the
    full paths of the local files the manifest maps its entry to."""
    where = where or {}
    ordered = sorted(hits, key=lambda h: -float(getattr(h, "score")))
    rows = []
    for i, h in enumerate(ordered, 1):
        sign = str(getattr(h, "cont_sign"))
        paths = tuple(str(Path(folder) / path) if folder else path for _, folder, path in where.get(sign, ()))
        rows.append(Row(i, float(getattr(h, "score")), sign, str(getattr(h, "brief")), paths))
    return rows


def parse_tags(text: str | None) -> tuple[int, ...]:
    """"1,2" → (1, 2): at most two integers in 1..65535."""
    if not text or not text.strip():
        return ()
    lo, hi = TAG_RANGE
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > MAX_TAGS or not all(p.isascii() and p.isdecimal() and lo <= int(p) <= hi for p in parts):
        raise UsageError(f"--tags: expected at most {MAX_TAGS} comma-separated integers in {lo}..{hi}, "
                         f"got {text!r}")
    return tuple(int(p) for p in parts)


def default_library(config: Config) -> str:
    """The library every configured mirror uses, when they agree; else same_hq."""
    libraries = {m.library for m in config.mirrors}
    return libraries.pop() if len(libraries) == 1 else "same_hq"


def render_table(rows: Sequence[Row]) -> list[str]:
    width = max((len(r.cont_sign) for r in rows), default=9)
    # Hits no mirror here maps (added by another tool or machine) show their brief instead of a file.
    last = "file" if any(r.paths for r in rows) else "brief"
    lines = [f"{'#':>3}  {'score':>6}  {'cont_sign':<{width}}  {last}"]
    for r in rows:
        first, *more = r.paths or (r.brief,)
        lines.append(f"{r.rank:>3}  {r.score:6.4f}  {r.cont_sign:<{width}}  {first}")
        lines += [f"{'':>3}  {'':>6}  {'':<{width}}  {p}" for p in more]
    return lines


@cli.command()
@click.argument("target", metavar="IMAGE_OR_URL")
@click.option("--library", type=click.Choice(list(LIBRARIES)), default=None,
              help="Library to search (default: the one all configured mirrors use, else same_hq).")
@click.option("--tags", default=None, metavar="T1[,T2]", help="Only entries with these tags (1..65535, at most 2).")
@click.option("--tag-logic", type=click.Choice(["and", "or"]), default="and", show_default=True,
              help="With two tags: entries having both (and) or either (or).")
@click.option("--top", type=click.IntRange(1, MAX_RESULTS), default=10, show_default=True,
              help="How many results to show.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {cont_sign, score, brief, paths}.")
@pass_app
def search(app: App, target: str, library: str | None, tags: str | None, tag_logic: str, top: int,
           as_json: bool) -> None:
    """Find the gallery's entries most like IMAGE_OR_URL (a file, or an http(s) URL the gallery fetches)."""
    from imgsync.gallery.embedded import open_gallery

    source = _source(target)
    tag_values = parse_tags(tags)
    library = library or default_library(app.config)
    if "image" in source:
        source["image"], note = enlarge_small_query(source["image"], library)  # type: ignore[arg-type]
        if note:
            click.echo(f"note: {target}: {note}", err=True)
    if tag_values and LIBRARIES[library].labels != "tags":
        raise UsageError(f"--tags: the {library} library has class ids, not tags")
    with open_gallery(app.config) as gallery:
        result = gallery.search(library, **source, tags=tag_values, tag_logic=tag_logic,  # type: ignore[arg-type]
                                rn=top)
    rows = hits_to_rows(result.hits, _locate(app, library, [h.cont_sign for h in result.hits]))[:top]
    if as_json:
        click.echo(json.dumps([{**{k: v for k, v in asdict(r).items() if k != "rank"}, "paths": list(r.paths)}
                               for r in rows], ensure_ascii=False, indent=2))
    elif rows:
        for line in render_table(rows):
            click.echo(line)
    else:
        click.echo(f"no matches in {library}", err=True)


def enlarge_small_query(data: bytes, library: str) -> tuple[bytes, str | None]:
    """A query image whose shortest side is below what `library` accepts (product 300 px,
    picturebook 150 px: the cloud answers 216202), enlarged just enough, with a note saying so.

    Only the *query* is enlarged: the gallery, like the cloud, still refuses such an image as an
    entry (docs/fidelity.md). Anything else (not an image, big enough, or too long to enlarge
    within the longest side allowed) is returned unchanged for the gallery to judge."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    lib = LIBRARIES[library]
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            k = lib.min_side / min(w, h)
            if k <= 1 or max(w, h) * k > lib.max_side:
                return data, None
            img = ImageOps.exif_transpose(im).convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
            fmt = "PNG" if im.format in ("PNG", "GIF", "BMP") else "JPEG"
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return data, None
    if img.width != w:            # EXIF said the picture is turned: its sides swapped
        w, h = img.size
    size = (max(lib.min_side, round(w * k)), max(lib.min_side, round(h * k)))
    out = io.BytesIO()
    big = img.resize(size, Image.Resampling.LANCZOS)
    if fmt == "JPEG":
        big.convert("RGB").save(out, "JPEG", quality=95)
    else:
        big.save(out, "PNG")
    return out.getvalue(), (f"{w}x{h} px is below the {lib.min_side} px {library} accepts; searched with a copy "
                            f"enlarged to {size[0]}x{size[1]}")


def _locate(app: App, library: str, cont_signs: list[str]) -> Locations:
    """Where the manifest says each hit's files are; nothing when there is no manifest yet. Read-only:
    a search never takes the state lock, so it works while `imgsync watch` runs."""
    path = app.manifest_path()
    if not cont_signs or not path.exists():
        return {}
    from imgsync.manifest import Store

    with Store.open(path) as store:
        return store.locate(library, cont_signs)


def _source(target: str) -> dict[str, bytes | str]:
    """A URL is passed on for the gallery to fetch; anything else must be a readable file."""
    if target.lower().startswith(("http://", "https://")):
        return {"url": target}
    path = Path(target).expanduser()
    if not path.exists():
        raise UsageError(f"{target}: no such file (give an image file or an http(s) URL)")
    if not path.is_file():
        raise UsageError(f"{target}: not a file")
    try:
        return {"image": path.read_bytes()}
    except OSError as e:
        raise UsageError(f"{target}: cannot read it: {e.strerror}") from None
