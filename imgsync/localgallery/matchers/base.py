"""The one small interface every library's matcher implements: extract → index → query → verify.

- extract(img) → Features: fixed-size numpy arrays, declared by `fields` so the store can keep them
  as one blob per entry and the in-memory table can keep them as dense columns.
- index: the FeatureTable (table.py) holds those columns for every entry of one library; it is
  generic, so a matcher only declares its fields.
- shortlist(query, table, mask) → row positions worth a closer look, computed vectorised over
  every row the filters allow (mask), never a fixed top-k taken before filtering.
- verify(query, table, rows) → a score in 0..1 for each shortlisted row.

Search results are the verified rows with score ≥ `floor`. A changed matcher gets a new `name`;
the engine then re-extracts every entry's features from the store's working copies at startup
(engine.py) rather than compare incompatible vectors.

Optional parts, for matchers that need more than fixed-size columns (keypoint matchers):

- variable-length data: extract() may also return the key EXTRA, a uint8 array of any length
  (e.g. serialised keypoints). The store keeps it as one blob per entry, outside the in-memory
  table; verify() reads it for the shortlisted rows only, with `table.extras(rows)`, so a library
  of 100k entries does not keep 100k keypoint sets in memory. The query's features carry their
  EXTRA too.
- extract_query(): features of a search query, when they differ from an entry's (e.g. the
  mirrored picture as well, for flipped copies). Defaults to extract().
- open_index() / save_index(): a matcher that keeps its own index (faiss) next to the table is
  told where the data dir is after the table is loaded (or that there is none), and asked to save
  it at shutdown when there is one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from imgsync.localgallery.matchers.table import FeatureTable

Features = Mapping[str, np.ndarray]

#: Bytes per item of the dtypes fields use (a dict lookup, not a numpy dtype built per call).
_ITEMSIZE = {n: np.dtype(n).itemsize for n in ("uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64")}

#: The features key holding an entry's variable-length data (uint8 array), if the matcher has any.
EXTRA = "extra"


@dataclass(frozen=True, slots=True)
class Field:
    """One feature array per entry: its name, dtype and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return (_ITEMSIZE.get(self.dtype) or np.dtype(self.dtype).itemsize) * math.prod(self.shape)


class Matcher(ABC):
    #: Identifies the feature layout and meaning; stored with the library's entries.
    name: ClassVar[str]
    fields: ClassVar[tuple[Field, ...]]
    #: Results scoring below this are not returned.
    floor: ClassVar[float]

    @abstractmethod
    def extract(self, img: Image.Image) -> dict[str, np.ndarray]:
        """Features of an RGB working image (images.Decoded.pixels)."""

    @abstractmethod
    def shortlist(self, query: Features, table: FeatureTable, mask: np.ndarray) -> np.ndarray:
        """Positions (int64) of table rows allowed by `mask` that may match `query`."""

    @abstractmethod
    def verify(self, query: Features, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
        """Scores in 0..1 (float64) for `rows`, in the same order."""

    def extract_query(self, img: Image.Image) -> dict[str, np.ndarray]:
        """Features of a search query; by default the same as an entry's."""
        return self.extract(img)

    def open_index(self, table: FeatureTable, directory: Path | None) -> None:  # noqa: B027 - a hook; no-op here
        """Called once the library's table is loaded; `directory` is where the matcher may keep
        index files (None: nowhere, build it in memory; stateless replicas on PostgreSQL). Default:
        the table is the whole index."""

    def save_index(self, directory: Path) -> None:  # noqa: B027 - a hook; no-op here
        """Called at shutdown; persist whatever open_index() would otherwise rebuild."""

    def match(self, query: Features, table: FeatureTable, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) at or above the floor."""
        rows = self.shortlist(query, table, mask)
        scores = self.verify(query, table, rows) if rows.size else np.empty(0)
        keep = scores >= self.floor
        return rows[keep], scores[keep]

    # --- features ↔ bytes (one blob per entry in the store) --------------------------------------

    def pack(self, feats: Features) -> bytes:
        parts = []
        for f in self.fields:
            a = np.ascontiguousarray(feats[f.name], dtype=f.dtype)
            if a.shape != f.shape:
                raise ValueError(f"{self.name}: feature {f.name} has shape {a.shape}, expected {f.shape}")
            parts.append(a.tobytes())
        return b"".join(parts)

    @staticmethod
    def pack_extra(feats: Features) -> bytes | None:
        """The entry's variable-length blob, or None when the matcher has none."""
        extra = feats.get(EXTRA)
        return None if extra is None else np.ascontiguousarray(extra, dtype=np.uint8).tobytes()

    def unpack_many(self, blobs: Sequence[bytes]) -> dict[str, np.ndarray]:
        """Blobs of n entries → {field: array of shape (n, *field.shape)}, without a Python loop per field."""
        width = sum(f.nbytes for f in self.fields)
        raw = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), width)
        out: dict[str, np.ndarray] = {}
        at = 0
        for f in self.fields:
            chunk = np.ascontiguousarray(raw[:, at : at + f.nbytes])
            out[f.name] = chunk.view(f.dtype).reshape((len(blobs), *f.shape))
            at += f.nbytes
        return out
