"""DETR's Hungarian matcher: a one-to-one assignment of predicted boxes to ground-truth boxes.

The cost of pairing query q with target box j is
    cost_class * (-p_q[label_j]) + cost_bbox * L1(box_q, box_j) + cost_giou * (-GIoU(box_q, box_j)),
with p the softmax of the query's class logits, L1 on normalized cxcywh and GIoU on the same
boxes as xyxy. scipy's `linear_sum_assignment` minimizes the total cost per sample.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from gpvcli.boxes import cxcywh_to_xyxy, generalized_box_iou
from gpvcli.errors import GPVRuntimeError

COST_CLASS, COST_BBOX, COST_GIOU = 1.0, 5.0, 2.0      # the paper's (DETR's) matching costs


@torch.no_grad()
def hungarian_match(
    pred_logits: Tensor,
    pred_boxes: Tensor,
    targets: list[dict[str, Tensor]],
    *,
    cost_class: float = COST_CLASS,
    cost_bbox: float = COST_BBOX,
    cost_giou: float = COST_GIOU,
) -> list[tuple[Tensor, Tensor]]:
    """Match predictions to targets, sample by sample.

    pred_logits: (B, Q, C) class logits; the last class is no-object (C=2 for GPV relevance:
        index 0 = relevant, 1 = no-object; C=K+1 for a K-class detector).
    pred_boxes: (B, Q, 4) normalized cxcywh.
    targets: B dicts with "boxes" (N_i, 4) normalized cxcywh and "labels" (N_i,) long.
    Returns B pairs (query indices, target indices), two int64 CPU tensors of length min(Q, N_i),
    sorted by query index; empty when the sample has no target.
    """
    B, Q, _ = pred_logits.shape
    sizes = [len(t["boxes"]) for t in targets]
    if sum(sizes) == 0:
        empty = torch.empty(0, dtype=torch.int64)
        return [(empty, empty) for _ in targets]

    # The whole batch against every target of the batch at once, then split per sample.
    prob = pred_logits.flatten(0, 1).float().softmax(-1)  # (B*Q, C)
    boxes = pred_boxes.flatten(0, 1).float()  # (B*Q, 4)
    tgt_labels = torch.cat([t["labels"] for t in targets]).to(prob.device)  # (N,)
    tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(boxes).float()  # (N, 4)

    cost = (
        cost_class * -prob[:, tgt_labels]
        + cost_bbox * torch.cdist(boxes, tgt_boxes, p=1)
        + cost_giou * -generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(tgt_boxes))
    )  # (B*Q, N)
    if not torch.isfinite(cost).all():
        raise GPVRuntimeError(
            "the box matching cost is not finite", hint="the model predicted nan/inf logits or boxes"
        )
    cost = cost.view(B, Q, -1).cpu()  # (B, Q, N)

    out = []
    for i, block in enumerate(cost.split(sizes, dim=-1)):
        rows, cols = linear_sum_assignment(block[i].numpy())
        out.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
    return out
