"""Samples of a prepared split as model-ready tensors, and their collation into batches.

`GPVDataset(store, vocab, image_size=(H, W), max_answer_len=...)` yields one dict per sample:
    index (int), task (str), image (uint8 Tensor (3, H, W), see `gpvcli.data.images.pixels`) or
    feature_key (str, when features are cached; with a `FeatureCache` attached as `features`, a key the
    cache lacks comes with its image too, for the frozen encoder to compute live),
    query (str), target_ids (LongTensor (S_i,) answer ids ending in STOP; empty for box tasks),
    boxes (Tensor (N_i, 4) normalized cxcywh; empty for text tasks).
For cls the image is the stored crop. With `image_of` / `query_of` (store indices aligned with `indices`),
sample indices[k] is read with the image of image_of[k] and the query of query_of[k], its targets unchanged
(the grounding checks of `gpvcli.eval.grounding`). The VQA training target is drawn on each read from the answers
given by at least 3 of the 10 annotators (else the multiple-choice answer), with a generator seeded by
(seed, epoch, sample index), so a resumed run draws exactly what an uninterrupted one would.

`Collator(tokenizer)` pads a list of items into a batch:
    index (list[int]), task (list[str]), images (uint8 (B, 3, H, W), channels-last memory) or feature_keys
    (list[str]); with a `FeatureCache` attached as `features`, the cached keys' stored rows instead:
    visual (`FeatureCache.rows`, in batch order of the cached samples), cached (bool (B,): which samples
    they are; the others' images are in images, in batch order),
    query_ids / query_mask (B, T), answer_inputs (B, S) = START + targets[:-1], text_targets (B, S)
    (PAD = 0 where none), boxes (list of B tensors (N_i, 4) normalized cxcywh).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from torch.utils.data import Dataset

from gpvcli import boxes as box_ops
from gpvcli.data.images import crop, load_image, normalize, pixels, stack_pixels
from gpvcli.data.store import SplitStore
from gpvcli.data.vocab import PAD, START, Vocab

TEXT_TARGET_TASKS = ("vqa", "cap", "cls")
MAX_QUERY_TOKENS = 64          # query tokens the model reads (longer queries are cut in training)


def feature_key(store: SplitStore, i: int) -> str:
    """Feature-cache key of sample i: the whole image, or the classification crop."""
    image_id = int(store.image_id[store.image[i]])
    c = store.crop[i]
    if np.isnan(c).any():
        return f"img:{image_id}"
    return f"crop:{image_id}:" + ",".join(f"{v:.1f}" for v in c)


def vqa_training_answer(answers: list[str], fallback: str, rng: np.random.Generator) -> str:
    """One of the answers given by >= 3 annotators (drawn uniformly), else the multiple-choice answer."""
    counts = Counter(answers)
    common = sorted(a for a, n in counts.items() if n >= 3)
    return common[int(rng.integers(len(common)))] if common else fallback


class GPVDataset(Dataset):
    def __init__(self, store: SplitStore, vocab: Vocab, *, image_size: tuple[int, int],
                 max_answer_len: dict[str, int], seed: int = 0, use_features: bool = False,
                 indices: np.ndarray | None = None, image_of: np.ndarray | None = None,
                 query_of: np.ndarray | None = None):
        self.store = store
        self.vocab = vocab
        self.image_size = tuple(image_size)
        self.max_answer_len = max_answer_len
        self.seed = seed
        self.epoch = 0
        self.use_features = use_features
        self.indices = np.arange(len(store)) if indices is None else np.asarray(indices)
        self.image_of = self.indices if image_of is None else np.asarray(image_of)
        self.query_of = self.indices if query_of is None else np.asarray(query_of)
        self.tasks = [store.task_names[c] for c in store.task_code[self.indices]]
        self.features = None           # a FeatureCache: keys it lacks come with their images

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def load_image(self, i: int) -> torch.Tensor:
        """Normalized float (3, H, W) model input of store sample i."""
        return input_image(self.store, i, self.image_size)

    def target_text(self, i: int, task: str) -> str:
        if task == "vqa":
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            return vqa_training_answer(self.store.answers[i], self.store.target[i], rng)
        return self.store.target[i]

    def __getitem__(self, k: int) -> dict:
        i = int(self.indices[k])
        task = self.tasks[k]
        seen = int(self.image_of[k])
        item = {"index": i, "task": task, "query": self.store.query[int(self.query_of[k])]}
        if self.use_features:
            item["feature_key"] = feature_key(self.store, seen)
        if not self.use_features or (self.features is not None and item["feature_key"] not in self.features):
            item["image"] = input_pixels(self.store, seen, self.image_size)
        if task in TEXT_TARGET_TASKS:
            limit = self.max_answer_len.get(task, self.max_answer_len.get("default"))
            item["target_ids"] = torch.tensor(self.vocab.encode(self.target_text(i, task), limit), dtype=torch.long)
        else:
            item["target_ids"] = torch.zeros(0, dtype=torch.long)
        boxes = torch.from_numpy(self.store.boxes[i].copy())                     # (N, 4) xyxy pixels
        w = float(self.store.image_width[self.store.image[i]])
        h = float(self.store.image_height[self.store.image[i]])
        scale = torch.tensor([w, h, w, h])
        item["boxes"] = box_ops.xyxy_to_cxcywh((boxes / scale).clamp(0, 1)) if len(boxes) else boxes   # clipped
        return item


def input_image(store: SplitStore, i: int, image_size: tuple[int, int]) -> torch.Tensor:
    """The model input of store sample i: the (cropped, for cls) image as a normalized (3, H, W) tensor."""
    return normalize(input_pixels(store, i, image_size)).contiguous()


def input_pixels(store: SplitStore, i: int, image_size: tuple[int, int]) -> torch.Tensor:
    """The (cropped, for cls) image of store sample i as uint8 (3, H, W) at image_size (H, W); a whole image
    at least twice that size is decoded at reduced scale (`load_image`'s reduce_to)."""
    c = store.crop[i]
    whole = np.isnan(c).any()
    img = load_image(store.image_path(i), reduce_to=image_size[::-1] if whole else None)
    return pixels(img if whole else crop(img, c), image_size)


class Collator:
    """Pads items into a batch (see the module docstring); tokenizes the queries."""

    def __init__(self, tokenizer, max_query_len: int = MAX_QUERY_TOKENS):
        self.tokenizer = tokenizer
        self.max_query_len = max_query_len
        self.features = None           # a FeatureCache: batches carry its rows (read where collation runs)

    def __call__(self, items: list[dict]) -> dict:
        enc = self.tokenizer([it["query"] for it in items], padding=True, truncation=True,
                             max_length=self.max_query_len, return_tensors="pt")
        longest = max(1, max(len(it["target_ids"]) for it in items))
        targets = torch.full((len(items), longest), PAD, dtype=torch.long)          # (B, S)
        for b, it in enumerate(items):
            targets[b, :len(it["target_ids"])] = it["target_ids"]
        answer_inputs = torch.cat([torch.full((len(items), 1), START, dtype=torch.long), targets[:, :-1]], 1)
        batch = {
            "index": [it["index"] for it in items],
            "task": [it["task"] for it in items],
            "query_ids": enc["input_ids"],
            "query_mask": enc["attention_mask"],
            "answer_inputs": answer_inputs,
            "text_targets": targets,
            "boxes": [it["boxes"] for it in items],
        }
        live = [it["image"] for it in items if "image" in it]
        if live:
            batch["images"] = stack_pixels(live)                                     # (B_live, 3, H, W)
        if "feature_key" in items[0]:
            if self.features is None:
                batch["feature_keys"] = [it["feature_key"] for it in items]
            else:
                cached = [it["feature_key"] for it in items if "image" not in it]
                batch["cached"] = torch.tensor(["image" not in it for it in items])    # (B,)
                if cached:
                    batch["visual"] = self.features.rows(cached)                    # (B_cached, Q, ...)
        return batch
