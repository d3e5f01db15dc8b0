"""The one small interface every library's matcher implements: extract → index → query → verify.

- extract(img) → Features: fixed-size numpy arrays, declared by `fields` so the store can keep them
  as one blob per entry and the in-memory table can keep them as dense columns.
- index: the FeatureTable (table.py) holds those columns for every entry of one library; it is
  generic, so a matcher only declares its fields.
- shortlist(query, table, mask) → row positions worth a closer look, computed vectorised over
  every row the filters allow (mask), never a fixed top-k taken before filtering.
- verify(query, table, rows) → a score in 0..1 for each shortlisted row.

Search results are the verified rows with score ≥ `floor`. Issue #5 replaces matchers per library
(ONNX embeddings, keypoints); a new matcher gets a new `name`, and the engine refuses to load
features written by another matcher version rather than compare incompatible vectors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from imgsync.localgallery.matchers.table import FeatureTable

Features = Mapping[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Field:
    """One feature array per entry: its name, dtype and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize * np.prod(self.shape, dtype=np.int64))


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

    def unpack_many(self, blobs: Sequence[bytes]) -> dict[str, np.ndarray]:
        """Blobs of n entries → {field: array of shape (n, *field.shape)}, without a Python loop per field."""
        width = sum(f.nbytes for f in self.fields)
        raw = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), width)
        out: dict[str, np.ndarray] = {}
        at = 0
        for f in self.fields:
            chunk = np.ascontiguousarray(raw[:, at:at + f.nbytes])
            out[f.name] = chunk.view(f.dtype).reshape((len(blobs), *f.shape))
            at += f.nbytes
        return out
