"""Datasets of the visual encoder's pretraining stages, read from a prepared split.

`CropDataset` (stage "classifier") yields the split's cls crops: image (3, H, W), label (int).
`DetectionDataset` (stage "detector") yields each image with every localization box as a detection target:
image (3, H, W), boxes (N, 4) normalized cxcywh, labels (N,). Labels are contiguous category indices
(`label_of` maps a COCO category id to one). Each class's `collate` stacks items into a batch with
images (B, 3, H, W) and task (list[str]).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gpvcli import boxes as box_ops
from gpvcli.data.dataset import input_image
from gpvcli.data.images import load_image, to_tensor
from gpvcli.data.store import SplitStore


class CropDataset(Dataset):
    """The cls samples of a split: image (3, H, W) of the crop, label = contiguous category index."""

    def __init__(self, store: SplitStore, label_of: dict[int, int], image_size: tuple[int, int]):
        self.store, self.image_size = store, image_size
        self.indices = np.flatnonzero(np.asarray(store.tasks) == "cls")
        self.labels = [label_of[int(store.category_id[i])] for i in self.indices.tolist()]
        self.tasks = ["cls"] * len(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        return {"image": input_image(self.store, int(self.indices[k]), self.image_size), "label": self.labels[k]}

    @staticmethod
    def collate(items: list[dict]) -> dict:
        return {"images": torch.stack([it["image"] for it in items]),
                "labels": torch.tensor([it["label"] for it in items]), "task": ["cls"] * len(items)}


class DetectionDataset(Dataset):
    """Images of a split with every localization box as a detection target:
    image (3, H, W), boxes (N, 4) normalized cxcywh, labels (N,) contiguous category index."""

    def __init__(self, store: SplitStore, label_of: dict[int, int], image_size: tuple[int, int]):
        self.store, self.image_size = store, image_size
        loc = np.flatnonzero(np.asarray(store.tasks) == "loc")
        by_image: dict[int, list[int]] = {}
        for i in loc.tolist():
            by_image.setdefault(int(store.image[i]), []).append(i)
        self.rows = sorted(by_image)
        self.targets = []
        for row in self.rows:
            w, h = float(store.image_width[row]), float(store.image_height[row])
            xyxy = np.concatenate([store.boxes[i] for i in by_image[row]]) / np.array([w, h, w, h], np.float32)
            labels = np.concatenate([[label_of[int(store.category_id[i])]] * len(store.boxes[i])
                                     for i in by_image[row]])
            self.targets.append((box_ops.xyxy_to_cxcywh(torch.from_numpy(xyxy).clamp(0, 1)),   # clipped
                                 torch.as_tensor(labels, dtype=torch.long)))
        self.tasks = ["loc"] * len(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> dict:
        path = Path(self.store.images_root) / self.store.image_file[self.rows[k]]
        boxes, labels = self.targets[k]
        return {"image": to_tensor(load_image(path), self.image_size), "boxes": boxes, "labels": labels}

    @staticmethod
    def collate(items: list[dict]) -> dict:
        return {"images": torch.stack([it["image"] for it in items]), "boxes": [it["boxes"] for it in items],
                "labels": [it["labels"] for it in items], "task": ["loc"] * len(items)}
