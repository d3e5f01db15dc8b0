"""A learned image embedding: EfficientNet-Lite0 (ImageNet) run through onnxruntime, no torch.

The model file ships inside the package (models/efficientnet_lite0.onnx; provenance, licence and
how to rebuild it: models/PROVENANCE.md and tools/export_lite0_onnx.py). Its graph takes RGB
pixels 0..255 as float32 (N, 3, 224, 224) and normalises them itself, so the only preprocessing
here is "resize to 224x224". It returns the last feature map (N, 1280, 7, 7) and ImageNet logits.

The embedding of a picture (or of a region of it) is the feature map's global average (GAP),
L2-normalised, so the dot product of two embeddings is their cosine. Measured against torch in
the export venv: max abs difference 5e-7 on the normalised vectors.

The session is created on first use (loading takes ~0.1 s and 50 MB, which a gallery serving only
same_hq never needs) under a lock; onnxruntime's `run` is itself thread-safe, so concurrent
requests share one session. The file's sha256 is checked when it is loaded: features from another
model would silently be incomparable with the stored ones.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / "efficientnet_lite0.onnx"
MODEL_SHA256 = "e049ad780deec2f5d9d8ec5e7cb536494ba8a96c7cf659443fe6e920daf73db5"
SIDE = 224
DIM = 1280

#: A crop box as fractions of the picture: (left, top, right, bottom) in 0..1.
Box = tuple[float, float, float, float]
FULL: Box = (0.0, 0.0, 1.0, 1.0)


class ModelError(RuntimeError):
    """The bundled model file is missing, damaged or cannot be loaded."""


class _Model:
    def __init__(self, path: Path, sha256: str | None) -> None:
        self._path = path
        self._sha256 = sha256
        self._lock = threading.Lock()
        self._session: object | None = None

    def session(self):  # -> onnxruntime.InferenceSession (imported lazily: it is a heavy import)
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._load()
        return self._session

    def _load(self):
        try:
            data = self._path.read_bytes()
        except OSError as e:
            raise ModelError(
                f"the embedding model {self._path} cannot be read ({e.strerror}); "
                f"reinstall imgsync or rebuild it with tools/export_lite0_onnx.py"
            ) from None
        if self._sha256 is not None and hashlib.sha256(data).hexdigest() != self._sha256:
            raise ModelError(
                f"the embedding model {self._path} is not the file this version was built with "
                f"(sha256 differs from {self._sha256}); reinstall imgsync"
            )
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # Small per-request work: two intra-op threads use a 2-core box fully; more only contend
        # with the HTTP threads. Overridable for bigger machines.
        opts.intra_op_num_threads = int(os.environ.get("IMGSYNC_ONNX_THREADS", "2"))
        opts.inter_op_num_threads = 1
        # No busy-waiting between operators: on a loaded machine the spinning thread takes the core
        # the other one needs. Measured on the shared 2-core box (load 6): one picture p50 33 -> 11 ms,
        # a batch of three 77 -> 46 ms.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3  # onnxruntime's own warnings are not actionable for a user
        try:
            return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for a broken graph
            raise ModelError(f"the embedding model {self._path} cannot be loaded: {e}") from None

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fmap, logits = self.session().run(None, {"pixels": batch})
        return fmap, logits


_MODEL = _Model(MODEL_PATH, MODEL_SHA256)


def to_pixels(img: Image.Image, box: Box = FULL) -> np.ndarray:
    """The model's input for `box` of an RGB picture: float32 (3, 224, 224), RGB 0..255.

    The region is squashed to a square rather than centre-cropped, so nothing near the border is
    lost (a product at the edge of a photo still counts); the CNN tolerates the aspect change.
    """
    w, h = img.size
    px = (box[0] * w, box[1] * h, box[2] * w, box[3] * h)
    small = img.resize((SIDE, SIDE), Image.Resampling.BILINEAR, box=px, reducing_gap=2.0)
    return np.asarray(small.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)


def _normalise(v: np.ndarray) -> np.ndarray:
    return (v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def embed_regions(img: Image.Image, boxes: Sequence[Box] = (FULL,)) -> np.ndarray:
    """L2-normalised GAP embeddings (len(boxes), 1280) of regions of `img`, in one batched run."""
    batch = np.stack([to_pixels(img, b) for b in boxes])
    fmap, _ = _MODEL.run(batch)
    return _normalise(fmap.mean(axis=(2, 3)))


def embed(img: Image.Image) -> np.ndarray:
    """The whole picture's embedding, float32 (1280,), unit length."""
    return embed_regions(img)[0]


def classify(img: Image.Image) -> np.ndarray:
    """ImageNet-1k logits (1000,) of the whole picture: a check that the bundled weights are real."""
    _, logits = _MODEL.run(to_pixels(img)[None])
    return logits[0]


#: Regions of the 7x7 feature map pooled by `embed_pooled`, as (row0, row1, col0, col1) cells:
#: the whole map, its centre 5x5 and the four 5x5 corners (each ~70 % of the picture per side).
#: Pooling regions of ONE forward pass costs nothing extra, where running the CNN on each crop
#: would multiply the extraction time by the number of crops (measured 12 ms → 69 ms for 6).
POOL_REGIONS: tuple[tuple[int, int, int, int], ...] = (
    (0, 7, 0, 7),
    (1, 6, 1, 6),
    (0, 5, 0, 5),
    (0, 5, 2, 7),
    (2, 7, 0, 5),
    (2, 7, 2, 7),
)


def embed_pooled(img: Image.Image, regions: Sequence[tuple[int, int, int, int]] = POOL_REGIONS) -> np.ndarray:
    """L2-normalised average-pooled embeddings (len(regions), 1280) of feature-map regions, one CNN run."""
    fmap, _ = _MODEL.run(to_pixels(img)[None])
    f = fmap[0]
    return _normalise(np.stack([f[:, r0:r1, c0:c1].mean(axis=(1, 2)) for r0, r1, c0, c1 in regions]))
