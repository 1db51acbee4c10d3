"""Grounding checks: each task scored again with one of its inputs swapped, through a fixed seeded pairing.

A general purpose vision model must read the query against the image. A model that ignores one of them
scores the same when that input is swapped, so every evaluation also decodes:
    image swap (vqa, cap, cls): sample k with the image (the crop, for cls) of another sample of the same
        task taken from another image; its text and its targets unchanged;
    query swap (loc, refexp): sample k with the query of another sample of the same task on the same image
        whose target differs (another category present, an expression of another object); scored
        against k's own boxes. Samples whose image has no such partner are left out of the check.
The pairing is a function of the samples and the seed alone, so two runs are checked on the same pairs.

`pairings(store, indices, seed)` -> {task: Swap}; `dependence(true, swapped, targets)` -> the check's
row: {"swap", "n", "true", "swapped", "dependence", "se", "within_noise"}, where dependence is the mean
over the checked samples of (true score - swapped score), se its standard error, and within_noise is
True when the dependence is not above two standard errors (the input makes no measurable difference).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from gpvcli.data.store import SplitStore

SWAPPED_INPUT = {"vqa": "image", "cap": "image", "cls": "image", "loc": "query", "refexp": "query"}
NOISE_SE = 2.0      # a dependence counts when it exceeds this many standard errors
PROTOCOL = {"image": "vqa, cap, cls: the image (crop) of another sample of the task, from another image",
            "query": "loc, refexp: the query of another sample on the same image with another target",
            "dependence": "mean over checked samples of (true - swapped score)",
            "within_noise": f"dependence <= {NOISE_SE:g} standard errors of the paired differences"}


@dataclass(frozen=True)
class Swap:
    """Aligned store indices: sample targets[k] is decoded with the image of image_of[k] and the query of
    query_of[k]."""
    kind: str
    targets: np.ndarray
    image_of: np.ndarray
    query_of: np.ndarray


def image_swaps(store: SplitStore, samples: np.ndarray, rng: np.random.Generator) -> Swap:
    """Each sample takes the image of the next sample, in a random cyclic order, that shows another image."""
    images = store.image[samples]
    order = rng.permutation(len(samples))
    targets, sources = [], []
    for j, k in enumerate(order):
        for step in range(1, len(order)):
            m = order[(j + step) % len(order)]
            if images[m] != images[k]:
                targets.append(samples[k])
                sources.append(samples[m])
                break
    targets, sources = np.asarray(targets, np.int64), np.asarray(sources, np.int64)
    return Swap("image", targets, image_of=sources, query_of=targets)


def query_swaps(store: SplitStore, samples: np.ndarray, rng: np.random.Generator) -> Swap:
    """Each sample takes the query of a sample of the same image with another target (drawn uniformly)."""
    by_image: dict[int, list[int]] = defaultdict(list)
    for i in samples.tolist():
        by_image[int(store.image[i])].append(i)
    targets, sources = [], []
    for i in samples.tolist():
        others = [m for m in by_image[int(store.image[i])] if not _same_target(store, i, m)]
        if others:
            targets.append(i)
            sources.append(others[int(rng.integers(len(others)))])
    targets, sources = np.asarray(targets, np.int64), np.asarray(sources, np.int64)
    return Swap("query", targets, image_of=targets, query_of=sources)


def _same_target(store: SplitStore, i: int, m: int) -> bool:
    a, b = store.boxes[i], store.boxes[m]
    return int(store.category_id[i]) == int(store.category_id[m]) and a.shape == b.shape and np.allclose(a, b)


def pairings(store: SplitStore, indices: np.ndarray, seed: int = 0) -> dict[str, Swap]:
    """The swap of every task present in `indices` (store indices)."""
    indices = np.asarray(indices, np.int64)
    tasks = np.asarray(store.task_names)[store.task_code[indices]]
    swaps = {}
    for code, task in enumerate(store.task_names):
        if task not in SWAPPED_INPUT or not (tasks == task).any():
            continue
        rng = np.random.default_rng([seed, code])
        build = image_swaps if SWAPPED_INPUT[task] == "image" else query_swaps
        swap = build(store, indices[tasks == task], rng)
        if len(swap.targets):
            swaps[task] = swap
    return swaps


def dependence(true: dict[int, float], swapped: dict[int, float], swap: Swap) -> dict:
    """The check's row for one task (see the module docstring)."""
    t = np.array([true[i] for i in swap.targets.tolist()])
    s = np.array([swapped[i] for i in swap.targets.tolist()])
    diff = t - s
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf")
    mean = float(diff.mean())
    return {"swap": swap.kind, "n": len(diff), "true": float(t.mean()), "swapped": float(s.mean()),
            "dependence": mean, "se": se, "within_noise": not mean > NOISE_SE * se}


def warnings(rows: dict[str, dict]) -> list[str]:
    """One line per task whose dependence is within noise of zero."""
    return [f"{task}: {row['swap']} dependence {row['dependence']:+.3f} (standard error {row['se']:.3f}) is "
            f"within noise of zero: the {'answers' if row['swap'] == 'image' else 'boxes'} do not depend on the "
            f"{row['swap']}" for task, row in rows.items() if row["within_noise"]]
