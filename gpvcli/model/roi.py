"""RoI-Align averaged over its output grid: one C-vector per box.

Convention (identical to torchvision's `roi_align(..., aligned=True)` with a fixed
`sampling_ratio`): boxes are normalized xyxy in [0, 1] of the image, which maps onto
the feature map's continuous extent [0, Wf] x [0, Hf]; feature pixel i covers
[i, i + 1] and its value sits at its centre i + 0.5. Each box is split into
output_size x output_size bins; each bin is sampled at sampling_ratio x
sampling_ratio regularly spaced points (bin sub-cell centres) by bilinear
interpolation. A point less than one pixel outside the map reads the clamped edge
value; a point further out reads 0. Bins are averaged into the output grid and the
grid is averaged into one vector per box. Boxes may extend outside [0, 1] or be
tiny; no gradient flows to the boxes (as in torchvision), only to the features.

Implementation: the samples form an n x n product grid (n = output_size *
sampling_ratio), and bilinear interpolation (with the clamping and the outside test)
factorizes into a y weight times an x weight. The mean over all samples is therefore
wy^T F wx with wy (Hf,) and wx (Wf,) the mean per-axis interpolation weights: one
einsum, exact, and far cheaper on CPU than `grid_sample` (whose backward pass dominated
a training step).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _axis_weights(lo: Tensor, hi: Tensor, size: int, n: int) -> Tensor:
    """Mean bilinear weight of each of `size` pixels over n samples of [lo, hi] (normalized).

    lo, hi: (B, Q). Returns (B, Q, size).
    """
    frac = (torch.arange(n, device=lo.device, dtype=lo.dtype) + 0.5) / n  # (n,)
    pos = (lo[..., None] + frac * (hi - lo)[..., None]) * size - 0.5  # (B, Q, n) pixel-index coordinates
    valid = (pos >= -1) & (pos <= size)  # (B, Q, n)
    pos = pos.clamp(0, size - 1)
    pixels = torch.arange(size, device=lo.device, dtype=lo.dtype)  # (size,)
    hat = (1 - (pos[..., None] - pixels).abs()).clamp(min=0)  # (B, Q, n, size) bilinear weights
    return (hat * valid[..., None]).mean(dim=2)  # (B, Q, size)


def roi_align_mean(features: Tensor, boxes_xyxy: Tensor, *, output_size: int = 7,
                   sampling_ratio: int = 2) -> Tensor:
    """RoI-Align of each box, then the mean over its output_size x output_size grid.

    features: (B, C, Hf, Wf). boxes_xyxy: (B, Q, 4) normalized xyxy (see module doc).
    Returns (B, Q, C) in the features' dtype.
    """
    _, _, hf, wf = features.shape
    n = output_size * sampling_ratio  # samples per box side
    x0, y0, x1, y1 = boxes_xyxy.detach().to(features.dtype).unbind(-1)  # each (B, Q)
    wy = _axis_weights(y0, y1, hf, n)  # (B, Q, Hf)
    wx = _axis_weights(x0, x1, wf, n)  # (B, Q, Wf)
    return torch.einsum("bqh,bchw,bqw->bqc", wy, features, wx)  # (B, Q, C)
