"""Edited copies of a picture, as image bytes: the "attacks" the matching benchmarks and tests use.

Each variant is a function (RGB Pillow image, rng) → encoded bytes. `SAME_IMAGE` holds the edits
a same-image search must see through; `PHONE_PHOTO` simulates photographing a printed page.
Deterministic for a given rng seed.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

Variant = Callable[[Image.Image, np.random.Generator], bytes]


def encode(img: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def crop(img: Image.Image, frac: float, rng: np.random.Generator) -> Image.Image:
    """Cut `frac` of the width and of the height away, split randomly between the two sides."""
    w, h = img.size
    cw, ch = round(w * frac), round(h * frac)
    x0, y0 = int(rng.integers(0, cw + 1)), int(rng.integers(0, ch + 1))
    return img.crop((x0, y0, x0 + w - cw, y0 + h - ch))


def watermark_text(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    out = img.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    size = max(12, out.height // 9)
    font = ImageFont.load_default(size=size)
    x, y = int(out.width * rng.uniform(0.05, 0.3)), int(out.height * rng.uniform(0.3, 0.7))
    draw.text(
        (x, y), "© imgsync 2026", font=font, fill=(255, 255, 255, 170), stroke_width=2, stroke_fill=(0, 0, 0, 120)
    )
    return Image.alpha_composite(out, layer).convert("RGB")


def watermark_box(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """An opaque white box over ~40 % x 15 % of the picture (a logo or caption bar)."""
    out = img.copy()
    w, h = out.size
    bw, bh = int(w * 0.4), int(h * 0.15)
    x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
    ImageDraw.Draw(out).rectangle((x, y, x + bw, y + bh), fill=(255, 255, 255))
    return out


def rotate(img: Image.Image, degrees: float) -> Image.Image:
    return img.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(0, 0, 0))


def contain(img: Image.Image, rng: np.random.Generator, scale: float = 0.55) -> Image.Image:
    """The picture pasted, at `scale` of a canvas's width, into a larger busy canvas."""
    w, h = img.size
    cw, ch = round(w / scale), round(h / scale * 0.9 + h * 0.1 / scale)
    canvas = _busy_background((cw, ch), rng)
    x, y = int(rng.integers(0, cw - w + 1)), int(rng.integers(0, ch - h + 1))
    canvas.paste(img, (x, y))
    return canvas


def _busy_background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    w, h = size
    small = Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8), "RGB")
    bg = small.resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(bg)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        draw.rectangle(
            (x0, y0, x0 + int(rng.integers(10, w // 3)), y0 + int(rng.integers(10, h // 3))),
            fill=tuple(int(c) for c in rng.integers(0, 256, 3)),
        )
    return bg


SAME_IMAGE: dict[str, Variant] = {
    "resize 50%": lambda im, r: encode(im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)),
    "jpeg q30": lambda im, r: encode(im, quality=30),
    "brightness x1.3": lambda im, r: encode(ImageEnhance.Brightness(im).enhance(1.3)),
    "contrast x0.7": lambda im, r: encode(ImageEnhance.Contrast(im).enhance(0.7)),
    "format png->jpeg": lambda im, r: encode(im, "JPEG", quality=85),
    "crop 5%": lambda im, r: encode(crop(im, 0.05, r)),
    "crop 10%": lambda im, r: encode(crop(im, 0.10, r)),
    "crop 20%": lambda im, r: encode(crop(im, 0.20, r)),
    "watermark text": lambda im, r: encode(watermark_text(im, r)),
    "watermark box": lambda im, r: encode(watermark_box(im, r)),
    "rotate 3deg": lambda im, r: encode(rotate(im, 3.0)),
    "mirror": lambda im, r: encode(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    "mirror + rotate 2deg": lambda im, r: encode(rotate(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), -2.0)),
    "contained in larger": lambda im, r: encode(contain(im, r)),
}


# --- phone photo of a printed page --------------------------------------------------------------------


def phone_photo(
    page: Image.Image, rng: np.random.Generator, *, visible: float = 1.0, out_side: int = 1024
) -> Image.Image:
    """The page lying on a table, photographed by hand: perspective (±8 % per corner), a lighting
    gradient (0.6 → 1.15), focus blur, sensor noise σ=6, a background around the page. With
    visible < 1 only the top or bottom `visible` part of the page is in the frame (a partial page)."""
    page = page.convert("RGB")
    if visible < 1.0:
        keep = round(page.height * visible)
        top = 0 if rng.random() < 0.5 else page.height - keep
        page = page.crop((0, top, page.width, top + keep))
    pw, ph = page.size
    scale = out_side / (1.45 * max(pw, ph))
    pw2, ph2 = pw * scale, ph * scale
    ow, oh = int(pw2 * 1.45), int(ph2 * 1.45)
    cx, cy = ow / 2, oh / 2
    base = np.array(
        [
            [cx - pw2 / 2, cy - ph2 / 2],
            [cx + pw2 / 2, cy - ph2 / 2],
            [cx + pw2 / 2, cy + ph2 / 2],
            [cx - pw2 / 2, cy + ph2 / 2],
        ],
        dtype=np.float32,
    )
    jitter = rng.uniform(-0.08, 0.08, size=(4, 2)).astype(np.float32) * np.array([pw2, ph2], np.float32)
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(src, base + jitter)
    bg = np.asarray(_table_background((ow, oh), rng), dtype=np.uint8).copy()
    warped = cv2.warpPerspective(
        np.asarray(page), m, (ow, oh), dst=bg, borderMode=cv2.BORDER_TRANSPARENT, flags=cv2.INTER_LINEAR
    )
    light = np.linspace(0.6, 1.15, ow, dtype=np.float32)[None, :, None]
    if rng.random() < 0.5:
        light = light[:, ::-1]
    out = warped.astype(np.float32) * light
    out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.8, 1.6)))
    out += rng.normal(0, 6, out.shape).astype(np.float32)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def _table_background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Wood-ish table: a dark base colour with soft streaks."""
    w, h = size
    base = rng.integers(40, 110, 3)
    streaks = rng.normal(0, 1, (1, max(w // 8, 2))).astype(np.float32)
    streaks = cv2.resize(streaks, (w, h), interpolation=cv2.INTER_CUBIC)[:, :, None] * 12
    img = np.clip(base[None, None, :] + streaks, 0, 255).astype(np.uint8)
    return Image.fromarray(img, "RGB").filter(ImageFilter.GaussianBlur(2))


PHONE_PHOTO: dict[str, Variant] = {
    "phone photo": lambda im, r: encode(phone_photo(im, r), quality=80),
    "phone photo, 70% of page": lambda im, r: encode(phone_photo(im, r, visible=0.7), quality=80),
    "phone photo, low res": lambda im, r: encode(phone_photo(im, r, out_side=640), quality=70),
}
