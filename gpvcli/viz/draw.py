"""Boxes with their relevance drawn on an image, and the answer written under it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from gpvcli.io import atomic_path

COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_prediction(image: Image.Image, boxes_xyxy: Sequence[Sequence[float]], scores: Sequence[float],
                    text: str | None = None, *, min_side: int = 384) -> Image.Image:
    """A copy of `image` (scaled up so its short side is at least `min_side`) with pixel xyxy boxes, each
    labelled with its relevance, and `text` in a strip underneath."""
    scale = max(1.0, min_side / min(image.size))
    w, h = round(image.width * scale), round(image.height * scale)
    font = _font(max(11, round(min_side / 28)))
    strip = 0 if text is None else font.size + 12
    canvas = Image.new("RGB", (w, h + strip), "white")
    canvas.paste(image.convert("RGB").resize((w, h), Image.BILINEAR), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, (box, score) in reversed(list(enumerate(zip(boxes_xyxy, scores)))):
        colour = COLOURS[k % len(COLOURS)]
        x0, y0, x1, y1 = (float(v) * scale for v in box)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=max(2, round(scale)))
        label = f"{float(score):.2f}"
        tw, th = draw.textbbox((0, 0), label, font=font)[2:]
        ty = max(0.0, y0 - th - 2)
        draw.rectangle([x0, ty, x0 + tw + 4, ty + th + 2], fill=colour)
        draw.text((x0 + 2, ty), label, fill="white", font=font)
    if text is not None:
        draw.text((6, h + 6), text, fill="black", font=font)
    return canvas


def save_drawing(image: Image.Image, boxes_xyxy: Sequence[Sequence[float]], scores: Sequence[float], text: str,
                 path: str | Path) -> Path:
    """`draw_prediction` written atomically to `path`: PNG for a .png name, else JPEG."""
    path = Path(path)
    drawn = draw_prediction(image, boxes_xyxy, scores, text)
    with atomic_path(path) as tmp:
        drawn.save(tmp, format="PNG" if path.suffix.lower() == ".png" else "JPEG", quality=92)
    return path
