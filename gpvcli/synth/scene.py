"""The scenes of the synthetic world: which objects (categories with COCO-like frequencies), their
colours and where they lie; and the seeded draws every part of the world uses."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from gpvcli.data import categories as cats
from gpvcli.synth.render import COLOUR_NAMES, Sprite

# COCO's categories from most to least frequent (by instance count), for uneven frequencies.
FREQUENCY_ORDER = (
    "person", "car", "chair", "book", "bottle", "cup", "dining table", "bowl", "traffic light", "handbag",
    "umbrella", "bird", "boat", "truck", "bench", "sheep", "banana", "kite", "motorcycle", "backpack",
    "potted plant", "cow", "wine glass", "carrot", "knife", "broccoli", "donut", "bicycle", "skis", "vase",
    "horse", "tie", "cell phone", "orange", "cake", "sports ball", "clock", "suitcase", "spoon", "surfboard",
    "bus", "apple", "pizza", "tv", "couch", "remote", "sink", "skateboard", "elephant", "dog",
    "fork", "zebra", "airplane", "giraffe", "laptop", "tennis racket", "teddy bear", "cat", "train",
    "sandwich",
    "bed", "toilet", "baseball glove", "oven", "baseball bat", "hot dog", "keyboard", "snowboard", "frisbee",
    "refrigerator", "mouse", "stop sign", "toothbrush", "fire hydrant", "microwave", "scissors",
    "parking meter", "bear", "toaster", "hair drier",
)
PERSON_BOOST = 2.0
MAX_OBJECTS = 12


def pick(rng: np.random.Generator, items):
    """One item of a non-empty sequence, uniformly."""
    return items[int(rng.random() * len(items))]


def weighted(rng: np.random.Generator, weights) -> int:
    """An index drawn with probability proportional to `weights`."""
    cum = np.cumsum(weights)
    return int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))


def subset(rng: np.random.Generator, n: int, k: int) -> list[int]:
    """k distinct indices of range(n) (k <= n), in increasing order."""
    return sorted(rng.permutation(n)[:k].tolist())


@functools.lru_cache(maxsize=1)
def category_weights() -> np.ndarray:
    """(80,) read-only sampling probabilities in COCO order: a power law over `FREQUENCY_ORDER`,
    person boosted."""
    rank = {name: r for r, name in enumerate(FREQUENCY_ORDER)}
    w = np.array([(rank[c.name] + 1.0) ** -0.5 for c in cats.categories()])
    w[0] *= PERSON_BOOST  # person is category 0
    w /= w.sum()
    w.flags.writeable = False
    return w


@dataclass(frozen=True)
class Obj:
    """One object of a scene: category name, colour name and tight box xyxy in pixels."""

    category: str
    colour: str
    box: tuple[float, float, float, float]

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def cy(self) -> float:
        return (self.box[1] + self.box[3]) / 2


# --------------------------------------------------------------------------- layout


def layout(rng: np.random.Generator, width: int, height: int) -> list[Sprite]:
    """Sprites of one scene, largest first (drawing order), boxes inside the image.

    5-10 distinct categories (`category_weights`); none, one or two of them get 2-3
    instances; at most MAX_OBJECTS objects. Crowded scenes keep the class-blind localizer
    baseline low (with a few objects, ranking all boxes at random already scores high).
    Objects are placed at random where the overlap of their boxes with each placed box is
    at most 15% of the smaller box (shrinking after every 15 failed tries, the long side
    kept >= 16 px at 128x96); an object that does not fit after 60 tries is dropped.
    """
    scale = min(width / 128, height / 96)
    smin, smax = 16 * scale, 48 * scale
    n_cats = int(rng.integers(5, 11))
    # weighted draw without replacement: the n smallest Exp(1) / weight keys
    chosen = np.argsort(rng.exponential(size=len(FREQUENCY_ORDER)) / category_weights())[:n_cats]
    counts = np.ones(n_cats, dtype=int)
    n_multi = weighted(rng, (0.2, 0.5, 0.3))
    counts[:n_multi] = rng.integers(2, 4, size=n_multi)
    instances = np.repeat(chosen, counts)[:MAX_OBJECTS]
    longs = np.sort(smin + (smax - smin) * rng.beta(1.2, 3.5, size=len(instances)))[::-1]
    placed: list[Sprite] = []
    for cat, long in zip(instances.tolist(), longs.tolist(), strict=True):
        short = long * rng.uniform(0.7, 1.0)
        w, h = (long, short) if rng.random() < 0.5 else (short, long)
        for attempt in range(60):
            if attempt and attempt % 15 == 0:  # hard to fit: shrink, keeping the long side >= smin
                shrink = max(0.85, smin / max(w, h))
                w, h = w * shrink, h * shrink
            wi, hi = round(w), round(h)
            x0 = int(rng.integers(0, width - wi + 1))
            y0 = int(rng.integers(0, height - hi + 1))
            if all(_overlap_ok((x0, y0, wi, hi), (p.x0, p.y0, p.w, p.h)) for p in placed):
                placed.append(Sprite(cat, pick(rng, COLOUR_NAMES), x0, y0, wi, hi))
                break
    return placed


def _overlap_ok(a: tuple[int, int, int, int], b: tuple[int, int, int, int], limit: float = 0.15) -> bool:
    """Boxes (x0, y0, w, h): intersection at most `limit` of the smaller box's area."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return True
    return iw * ih <= limit * min(a[2] * a[3], b[2] * b[3])
