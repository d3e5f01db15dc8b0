"""The manifest's tables as SQLAlchemy 2 declarative models.

Imported only by imgsync.manifest and migrations/env.py; the rest of imgsync sees plain values from
imgsync.model (the Store converts). The schema is owned by the Alembic migrations in migrations/versions:
tests/test_migrations.py checks that `upgrade head` produces exactly this metadata.

Times are wall-clock seconds since the epoch (REAL), from the Store's Clock. File times (mtime_ns,
hashed_at_ns) are integer nanoseconds as the scanner saw them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from imgsync.manifest.records import decode_text, encode_text

#: Stable constraint names, so later migrations (batch mode on SQLite) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

VERDICTS = ("ok", "rejected", "unstable", "error")
ENTRY_STATES = ("live", "adding", "deleting")
JOURNAL_OPS = ("add", "update", "delete")
JOURNAL_STATES = ("intent", "done", "failed")


class LosslessText(TypeDecorator[str]):
    """TEXT that round-trips every Python str, including paths with lone surrogates (records.encode_text):
    a file name that is not valid UTF-8 is neither lost nor confused with another, and every ordinary
    string is stored as itself, so the database stays readable with the sqlite3 shell."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return encode_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return decode_text(value)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class FileRow(Base):
    """One file of a mirror's folder, as last scanned."""

    __tablename__ = "files"
    __table_args__ = (
        UniqueConstraint("mirror", "path"),
        Index("ix_files_entry_id", "entry_id"),
        Index("ix_files_mirror_verdict", "mirror", "verdict", "entry_id"),  # status: counts and pages
        Index("ix_files_taken_by", "taken_by", sqlite_where=text("taken_by IS NOT NULL")),
        CheckConstraint(_one_of("verdict", VERDICTS), name="verdict"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mirror: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(LosslessText)  # POSIX, relative to the mirror's folder
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    inode: Mapped[int] = mapped_column(BigInteger)  # stored as signed 64-bit (see store._to_i64)
    content_hash: Mapped[str | None] = mapped_column(Text)  # sha256 hex; None when not read whole
    verdict: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(LosslessText)
    # SET NULL: forgetting a remote entry must never delete the record of a local file.
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("entries.id", ondelete="SET NULL"))
    hashed_at_ns: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    updated_at: Mapped[float] = mapped_column(Float)
    #: refused because the gallery holds the image as this entry (cont_sign) of another record: the file
    #: is judged again once that entry is forgotten (migration 0006)
    taken_by: Mapped[str | None] = mapped_column(Text, nullable=True)


class EntryRow(Base):
    """One remote gallery entry. `id` goes into the brief, so it is never reused (AUTOINCREMENT)."""

    __tablename__ = "entries"
    __table_args__ = (
        # One remote entry per gallery id per library (cont_sign is NULL while an add is in flight).
        Index(
            "uq_entries_library_cont_sign",
            "library",
            "cont_sign",
            unique=True,
            sqlite_where=text("cont_sign IS NOT NULL"),
        ),
        # One entry per distinct image per mirror and library (a mirror moved to another library holds
        # both until the old ones are deleted); an entry being deleted may overlap its replacement.
        Index(
            "uq_entries_mirror_content_hash",
            "mirror",
            "library",
            "content_hash",
            unique=True,
            sqlite_where=text("state != 'deleting'"),
        ),
        Index("ix_entries_mirror", "mirror"),
        Index("ix_entries_mirror_state", "mirror", "state"),  # status: live entries, by index alone
        CheckConstraint(_one_of("state", ENTRY_STATES), name="state"),
        CheckConstraint("state = 'adding' OR cont_sign IS NOT NULL", name="cont_sign_when_added"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mirror: Mapped[str] = mapped_column(Text)
    library: Mapped[str] = mapped_column(Text)
    cont_sign: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(Text)
    brief: Mapped[str] = mapped_column(LosslessText)
    tags: Mapped[str] = mapped_column(Text, server_default=text("''"))  # "1,2"
    class_id1: Mapped[int | None] = mapped_column(Integer)
    class_id2: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class JournalRow(Base):
    """A remote operation: written as an intent before the call, marked done/failed after it."""

    __tablename__ = "journal"
    __table_args__ = (
        Index("ix_journal_open", "id", sqlite_where=text("state = 'intent'")),
        CheckConstraint(_one_of("op", JOURNAL_OPS), name="op"),
        CheckConstraint(_one_of("state", JOURNAL_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    op: Mapped[str] = mapped_column(Text)
    mirror: Mapped[str] = mapped_column(Text)
    library: Mapped[str] = mapped_column(Text)
    # Not a foreign key: the journal outlives the entries it deleted.
    entry_ids: Mapped[list[int]] = mapped_column(JSON)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(LosslessText)
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_mirror", "mirror", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mirror: Mapped[str] = mapped_column(Text)
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(Text)  # running / ok / partial / stopped / skipped / interrupted
    counts: Mapped[dict[str, int]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(LosslessText)


class MirrorStateRow(Base):
    """What the safety guards compare against: where the folder was and how many files it held."""

    __tablename__ = "mirror_state"

    mirror: Mapped[str] = mapped_column(Text, primary_key=True)
    folder: Mapped[str] = mapped_column(LosslessText)
    device: Mapped[int] = mapped_column(BigInteger)  # st_dev, stored as signed 64-bit
    #: statvfs f_fsid (signed 64-bit): tells apart two filesystems mounted under one device number
    fsid: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    file_count: Mapped[int] = mapped_column(Integer)
    #: the settings the files' verdicts were judged under ("library:fit"); a change means re-judging
    judged_as: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: "<config fingerprint>:<stat digest>" when the last full run left folder, manifest and gallery in
    #: step; NULL as soon as anything else happens (see pipeline.py, the no-op fast path)
    settled: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    updated_at: Mapped[float] = mapped_column(Float)


class SettingRow(Base):
    """Facts about the whole state dir: "gallery" = which gallery the entries live in (see
    pipeline.bind_gallery)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text)
