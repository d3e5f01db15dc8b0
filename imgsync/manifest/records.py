"""Plain records the manifest hands out, and how a few values are stored: no SQLAlchemy here, so the
light readers (manifest/lite.py) and the Store share one definition of each."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from imgsync.statedir import MANIFEST as MANIFEST_NAME  # noqa: F401 (re-exported)

#: The schema revision this imgsync writes (the newest migration). Light readers compare against it
#: without importing Alembic; tests/test_migrations.py checks it equals Alembic's head.
SCHEMA_HEAD = "0006"


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: int
    mirror: str
    status: str  # running / ok / partial / stopped / skipped / interrupted (killed while running)
    started_at: datetime
    finished_at: datetime | None
    counts: Mapping[str, int]
    error: str | None


@dataclass(frozen=True, slots=True)
class MirrorState:
    """What the folder looked like after the last complete run (for the safety guards)."""

    mirror: str
    folder: str
    device: int  # st_dev
    file_count: int
    last_run_id: int | None
    updated_at: datetime
    judged_as: str | None = None
    settled: str | None = None
    fsid: int | None = None  # statvfs f_fsid; None when unknown (older manifest, or the fs gives 0)


# --- values SQLite cannot hold as they are ---------------------------------------------------------

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def to_i64(n: int) -> int:
    """An unsigned 64-bit value (an inode, a device, an fsid) as SQLite's signed INTEGER."""
    n %= _U64
    return n - _U64 if n > _I64_MAX else n


def from_i64(n: int) -> int:
    return n % _U64


#: First character of a stored text that held lone surrogates (see encode_text). A POSIX file name can
#: never contain NUL, and neither can anything else we store, so the marker cannot be ambiguous.
ESCAPED = "\x00"


def encode_text(value: str | None) -> str | None:
    """A str for SQLite's UTF-8 TEXT, even one with lone surrogates (a file name that is not valid UTF-8
    reaches Python with surrogate escapes): such a value becomes NUL + the hex of its "surrogatepass"
    UTF-8 bytes (a bijection); every ordinary string is stored as itself."""
    if value is None or value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return ESCAPED + value.encode("utf-8", "surrogatepass").hex()
    return value


def decode_text(value: str | None) -> str | None:
    if value is not None and value.startswith(ESCAPED):
        return bytes.fromhex(value[1:]).decode("utf-8", "surrogatepass")
    return value


def dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def dt_or_none(ts: float | None) -> datetime | None:
    return None if ts is None else dt(ts)
