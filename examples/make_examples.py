"""Make the example catalogue: small synthetic pictures, drawn here, free of any licence.

    python examples/make_examples.py

Writes examples/catalogue/*.jpg and examples/query.jpg (a smaller, re-compressed, brightened copy of
one catalogue picture, for `imgsync search`). Deterministic: the same files every time.
"""

from __future__ import annotations

import io
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

HERE = Path(__file__).resolve().parent
W, H = 480, 360


def sky(draw: ImageDraw.ImageDraw, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> None:
    for y in range(H):
        t = y / (H - 1)
        draw.line([(0, y), (W, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))


def house() -> Image.Image:
    img = Image.new("RGB", (W, H))
    d = ImageDraw.Draw(img)
    sky(d, (90, 150, 230), (200, 230, 250))
    d.rectangle([0, 260, W, H], fill=(70, 150, 60))
    d.rectangle([150, 160, 330, 280], fill=(200, 80, 60))
    d.polygon([(130, 165), (240, 80), (350, 165)], fill=(110, 50, 40))
    d.rectangle([220, 210, 260, 280], fill=(90, 60, 30))
    d.rectangle([170, 185, 205, 215], fill=(240, 240, 180))
    d.rectangle([280, 185, 315, 215], fill=(240, 240, 180))
    d.ellipse([380, 30, 440, 90], fill=(255, 220, 60))
    return img


def boat() -> Image.Image:
    img = Image.new("RGB", (W, H))
    d = ImageDraw.Draw(img)
    sky(d, (250, 170, 90), (250, 220, 180))
    for y in range(200, H, 6):
        d.line([(0, y), (W, y + 3)], fill=(30, 80 + (y - 200) // 2, 150), width=4)
    d.polygon([(140, 230), (340, 230), (300, 270), (180, 270)], fill=(80, 40, 20))
    d.line([(240, 230), (240, 90)], fill=(60, 40, 20), width=5)
    d.polygon([(244, 95), (244, 220), (330, 220)], fill=(245, 245, 235))
    d.polygon([(236, 110), (236, 220), (170, 220)], fill=(230, 80, 70))
    return img


def shapes() -> Image.Image:
    rnd = random.Random(3)
    img = Image.new("RGB", (W, H), (245, 245, 240))
    d = ImageDraw.Draw(img)
    for _ in range(18):
        x, y, r = rnd.randrange(W), rnd.randrange(H), rnd.randrange(15, 60)
        colour = (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
        if rnd.random() < 0.5:
            d.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(20, 20, 20), width=2)
        else:
            d.rectangle([x - r, y - r // 2, x + r, y + r // 2], fill=colour, outline=(20, 20, 20), width=2)
    return img


def fabric() -> Image.Image:
    img = Image.new("RGB", (W, H))
    px = img.load()
    for y in range(H):
        for x in range(W):
            check = ((x // 24) + (y // 24)) % 2
            weave = int(20 * math.sin(x * 0.9) * math.sin(y * 0.9))
            base = (150, 40, 60) if check else (220, 200, 150)
            px[x, y] = tuple(max(0, min(255, c + weave)) for c in base)
    return img


def mountains() -> Image.Image:
    img = Image.new("RGB", (W, H))
    d = ImageDraw.Draw(img)
    sky(d, (40, 60, 120), (150, 170, 210))
    d.polygon([(0, 300), (120, 120), (220, 260), (330, 90), (480, 280), (480, 360), (0, 360)], fill=(80, 90, 100))
    d.polygon([(120, 120), (95, 160), (150, 165)], fill=(250, 250, 250))
    d.polygon([(330, 90), (300, 140), (365, 140)], fill=(250, 250, 250))
    d.rectangle([0, 320, W, H], fill=(40, 90, 50))
    return img


def page() -> Image.Image:
    rnd = random.Random(7)
    img = Image.new("RGB", (W, H), (252, 250, 240))
    d = ImageDraw.Draw(img)
    d.rectangle([30, 30, 200, 170], fill=(120, 180, 220), outline=(0, 0, 0), width=3)
    d.ellipse([70, 60, 160, 150], fill=(250, 200, 60))
    for row in range(12):
        y = 40 + row * 24
        x = 220 if y < 180 else 30
        while x < W - 40:
            w = rnd.randrange(12, 50)
            d.rectangle([x, y, x + w, y + 8], fill=(40, 40, 40))
            x += w + 10
    return img


PICTURES = {"house": house, "boat": boat, "shapes": shapes, "fabric": fabric, "mountains": mountains,
            "page": page}


def jpeg(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def main() -> None:
    out = HERE / "catalogue"
    out.mkdir(exist_ok=True)
    for name, draw in PICTURES.items():
        img = draw().filter(ImageFilter.GaussianBlur(0.6))
        (out / f"{name}.jpg").write_bytes(jpeg(img))
    # The query: the boat picture as someone else might have it: smaller, brighter, re-compressed.
    boat_img = Image.open(out / "boat.jpg")
    query = ImageEnhance.Brightness(boat_img.resize((320, 240), Image.Resampling.LANCZOS)).enhance(1.15)
    (HERE / "query.jpg").write_bytes(jpeg(query, quality=60))


if __name__ == "__main__":
    main()
