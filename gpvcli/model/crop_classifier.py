"""The crop classifier of stage "classifier": the visual encoder's CNN backbone with a linear head."""

from __future__ import annotations

import torch
from torch import nn


class CropClassifier(nn.Module):
    """Backbone map -> global average -> linear: (B, 3, H, W) -> (B, K) logits."""

    def __init__(self, visual: nn.Module, head: nn.Linear):
        super().__init__()
        self.visual, self.head = visual, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap, _ = self.visual.backbone_map(images)
        return self.head(fmap.mean(dim=(2, 3)))
