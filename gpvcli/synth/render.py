"""Drawing the synthetic world: one look per COCO category, scenes as numpy arrays.

A category's look is a silhouette (10 kinds) filled with a texture (8 kinds):
category number i (0-79, COCO order) gets `SILHOUETTES[i % 10]` and `TEXTURES[i // 10]`.
The colour is NOT part of the look: every object gets a colour from `COLOURS`
(a named palette, "orange" left out because orange is a category), painted with
that colour and a contrasting shade of it. Every object also gets a one-pixel rim
of the contrasting shade, so it stays visible on any background.

Scenes are drawn on a noisy two-colour gradient; objects are painted in the order
given (later ones on top). All randomness comes from the numpy Generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SILHOUETTES = ("box", "disk", "triangle", "diamond", "plus", "ring", "star", "hexagon", "crescent", "bowtie")
TEXTURES = ("solid", "hstripes", "vstripes", "dots", "checker", "outline", "diagonal", "twotone")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 35, 35),
    "green": (40, 165, 60),
    "blue": (35, 75, 215),
    "yellow": (235, 215, 40),
    "purple": (135, 45, 180),
    "pink": (245, 135, 190),
    "white": (245, 245, 245),
    "black": (22, 22, 22),
    "brown": (125, 75, 30),
    "gray": (135, 135, 135),
}
COLOUR_NAMES = tuple(COLOURS)


def look(category_index: int) -> tuple[str, str]:
    """(silhouette, texture) of the category at `category_index` (0-79, COCO order)."""
    return SILHOUETTES[category_index % len(SILHOUETTES)], TEXTURES[category_index // len(SILHOUETTES)]


@dataclass(frozen=True)
class Sprite:
    """One object to paint: the category index, its colour name and its integer pixel box."""

    category_index: int
    colour: str
    x0: int
    y0: int
    w: int
    h: int


def silhouette_mask(kind: str, w: int, h: int) -> np.ndarray:
    """Boolean (h, w) mask of a silhouette stretched over a w x h box."""
    u = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1  # (w,) in [-1, 1], left to right
    v = (np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1  # (h,) in [-1, 1], top to bottom
    u, v = u[None, :], v[:, None]  # broadcast to (h, w)
    r2 = u * u + v * v
    if kind == "box":
        return np.ones((h, w), dtype=bool)
    if kind == "disk":
        return r2 <= 1
    if kind == "triangle":
        return np.abs(u) <= (v + 1) / 2 + 1 / w
    if kind == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    if kind == "plus":
        return (np.abs(u) <= 0.34) | (np.abs(v) <= 0.34)
    if kind == "ring":
        return (r2 <= 1) & (r2 >= 0.25)
    if kind == "star":
        theta = np.arctan2(v, u) + np.pi / 2  # 0 points up
        sector = 2 * np.pi / 5
        off = np.abs(np.mod(theta + sector / 2, sector) - sector / 2) / (sector / 2)  # 0 at a tip, 1 between
        return np.sqrt(r2) <= 0.42 + 0.58 * (1 - off) ** 1.5
    if kind == "hexagon":
        return np.abs(u) <= 1 - 0.5 * np.abs(v)
    if kind == "crescent":
        return (r2 <= 1) & ((u - 0.5) ** 2 + v * v > 0.64)
    if kind == "bowtie":
        return np.abs(v) <= 0.15 + 0.85 * np.abs(u)
    raise ValueError(f"unknown silhouette {kind!r}")


def _erode(mask: np.ndarray) -> np.ndarray:
    """Four-neighbour erosion; pixels on the array border count as outside."""
    out = mask.copy()
    out[1:, :] &= mask[:-1, :]
    out[:-1, :] &= mask[1:, :]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    out[[0, -1], :] = False
    out[:, [0, -1]] = False
    return out


def texture_pattern(kind: str, mask: np.ndarray) -> np.ndarray:
    """Boolean (h, w) array: True where the main colour goes (else the contrasting shade).

    Periods scale with the object, so a texture looks the same at every size.
    For "outline" the False pixels inside the mask are left unpainted (background shows).
    """
    h, w = mask.shape
    half = max(2, round(min(h, w) / 8))  # half period of stripes, checks and dots
    y = np.arange(h)[:, None]
    x = np.arange(w)[None, :]
    if kind == "solid":
        return np.ones((h, w), dtype=bool)
    if kind == "hstripes":
        return np.broadcast_to((y // half) % 2 == 0, (h, w))
    if kind == "vstripes":
        return np.broadcast_to((x // half) % 2 == 0, (h, w))
    if kind == "checker":
        return ((y // half) + (x // half)) % 2 == 0
    if kind == "diagonal":
        return ((x + y) // half) % 2 == 0
    if kind == "dots":
        period = 2 * half
        dy = (y % period) - (period - 1) / 2
        dx = (x % period) - (period - 1) / 2
        return dx * dx + dy * dy > (0.33 * period) ** 2
    if kind == "twotone":
        return np.broadcast_to(y < h / 2, (h, w))
    if kind == "outline":
        band = mask.copy()
        for _ in range(max(2, round(min(h, w) / 7))):
            band = _erode(band)
        return mask & ~band
    raise ValueError(f"unknown texture {kind!r}")


def contrast_shade(rgb: np.ndarray) -> np.ndarray:
    """A dark shade of a light colour, a light shade of a dark one (float32 RGB)."""
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return rgb * 0.3 if luminance > 110 else rgb * 0.35 + 255 * 0.6


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(height, width, 3) float32 gradient between two muted colours."""
    ends = rng.uniform(70, 190, size=(2, 3)).astype(np.float32)
    grey = ends.mean(axis=1, keepdims=True)
    ends = grey + 0.45 * (ends - grey)  # desaturate so palette colours stand out
    angle = rng.uniform(0, 2 * np.pi)
    x = np.arange(width, dtype=np.float32)[None, :] / width
    y = np.arange(height, dtype=np.float32)[:, None] / height
    t = float(np.cos(angle)) * x + float(np.sin(angle)) * y  # (H, W) float32
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)  # (H, W) in [0, 1]
    return np.stack([ends[0, c] + (ends[1, c] - ends[0, c]) * t for c in range(3)], axis=-1)  # (H, W, 3)


def paint(canvas: np.ndarray, sprite: Sprite, rng: np.random.Generator) -> np.ndarray:
    """Paint one object onto `canvas` (H, W, 3 float32, in place); return its (h, w) visible-shape mask."""
    shape, texture = look(sprite.category_index)
    mask = silhouette_mask(shape, sprite.w, sprite.h)
    jitter = rng.uniform(-12, 12, size=3).astype(np.float32)
    main = np.asarray(COLOURS[sprite.colour], dtype=np.float32) + jitter
    shade = contrast_shade(main)
    pattern = texture_pattern(texture, mask)
    rim = mask & ~_erode(mask)
    region = canvas[sprite.y0:sprite.y0 + sprite.h, sprite.x0:sprite.x0 + sprite.w]  # (h, w, 3) view
    main_px = mask & pattern
    region[main_px] = main
    if texture != "outline":
        region[mask & ~pattern] = shade
    region[rim] = shade
    return mask


def render(sprites: list[Sprite], rng: np.random.Generator, width: int,
           height: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Draw a scene. Returns the (height, width, 3) uint8 image and, per sprite, its tight
    pixel box (x0, y0, x1, y1) (exclusive ends) of the drawn shape."""
    canvas = background(rng, width, height)
    boxes = []
    for s in sprites:
        mask = paint(canvas, s, rng)
        cols = np.flatnonzero(mask.any(axis=0))
        rows = np.flatnonzero(mask.any(axis=1))
        boxes.append((s.x0 + int(cols[0]), s.y0 + int(rows[0]),
                      s.x0 + int(cols[-1]) + 1, s.y0 + int(rows[-1]) + 1))
    canvas += rng.integers(-10, 11, size=canvas.shape, dtype=np.int8)  # uniform sensor noise, std 6
    return np.clip(canvas, 0, 255).astype(np.uint8), boxes
