"""Box conventions and box maths, as pure functions on torch tensors.

Conventions used across the toolkit:
- cxcywh: (center x, center y, width, height), normalized to [0, 1] by image width/height.
  This is what the model predicts.
- xyxy: (x0, y0, x1, y1) corners, in whatever unit the caller uses (pixels or normalized).
- xywh: COCO's (x, y, width, height) in pixels, as the annotation files hold it.
IoU uses continuous coordinates (no "+1 pixel").
"""

from __future__ import annotations

import torch
from torch import Tensor


def cxcywh_to_xyxy(b: Tensor) -> Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def xyxy_to_cxcywh(b: Tensor) -> Tensor:
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def xywh_to_xyxy(b: Tensor) -> Tensor:
    x, y, w, h = b.unbind(-1)
    return torch.stack([x, y, x + w, y + h], dim=-1)


def area(b: Tensor) -> Tensor:
    """Area of xyxy boxes (zero for degenerate boxes)."""
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def _inter_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)  # (N, M)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return inter, union


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of xyxy boxes a (N, 4) and b (M, 4) -> (N, M); 0 where the union is 0."""
    inter, union = _inter_union(a, b)
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise generalized IoU of xyxy boxes a (N, 4) and b (M, 4) -> (N, M), in [-1, 1]."""
    inter, union = _inter_union(a, b)
    iou = inter / union.clamp(min=1e-12)
    lt = torch.minimum(a[:, None, :2], b[None, :, :2])
    rb = torch.maximum(a[:, None, 2:], b[None, :, 2:])
    hull = (rb - lt).clamp(min=0).prod(-1)
    return iou - (hull - union) / hull.clamp(min=1e-12)
