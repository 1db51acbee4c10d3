"""GPV-1's training losses: DETR's Hungarian loss for boxes, token cross-entropy for text.

Every loss returns unscaled named terms; `GPVCriterion.weights` is the separate weight table
that scales them into "loss", so the loop can log both scaled and unscaled terms.
Box convention: the model's boxes and the targets are normalized cxcywh.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from gpvcli.boxes import cxcywh_to_xyxy, generalized_box_iou
from gpvcli.data.prompts import BOX_TASKS, TASKS, TEXT_TASKS
from gpvcli.data.vocab import PAD
from gpvcli.errors import GPVError, GPVRuntimeError
from gpvcli.train.matcher import COST_BBOX, COST_CLASS, COST_GIOU, hungarian_match

# the paper's recipe (DESIGN.md section 3)
DEFAULT_TASK_WEIGHTS = {"vqa": 1.0, "cap": 0.05, "cls": 1.0}
DEFAULT_BOX_WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
NO_OBJECT_WEIGHT = 0.1


def matched_phrases(indices: list[tuple[Tensor, Tensor]], labels: list[Tensor],
                    phrase_of: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(sample, query, phrase) index tensors of every query matched (`indices`, as `hungarian_match`
    returns them) to a box whose label has a phrase; labels (N_i,) index `phrase_of`, which gives each
    label's phrase (-1: not named, left out)."""
    sample, query, phrase = [], [], []
    for b, ((src, tgt), lab) in enumerate(zip(indices, labels)):
        p = phrase_of[lab[tgt]]
        keep = p >= 0
        sample.append(torch.full((int(keep.sum()),), b, dtype=torch.long))
        query.append(src[keep])
        phrase.append(p[keep])
    return torch.cat(sample), torch.cat(query), torch.cat(phrase)


def box_losses(
    pred_logits: Tensor,
    pred_boxes: Tensor,
    targets: list[dict[str, Tensor]],
    indices: list[tuple[Tensor, Tensor]],
    *,
    no_object_weight: float = NO_OBJECT_WEIGHT,
    num_classes: int | None = None,
    num_boxes: float | None = None,
) -> dict[str, Tensor]:
    """DETR's Hungarian loss terms, given a matching (see `hungarian_match`).

    pred_logits: (B, Q, K+1) class logits, index K = no-object (K=1 for GPV relevance).
    pred_boxes: (B, Q, 4) normalized cxcywh.
    targets: B dicts with "boxes" (N_i, 4) normalized cxcywh and "labels" (N_i,) long in [0, K).
    indices: B pairs (query indices, target indices).
    num_classes: K; defaults to C - 1 of the logits.
    num_boxes: the divisor of the box terms; defaults to the batch's ground-truth box count
        (a distributed loop passes the all-reduced count per process); at least 1.
    Returns scalar tensors:
        "loss_ce": cross-entropy over all B*Q queries (target = the matched label, else no-object),
            weighted per class (no-object weight `no_object_weight`, others 1) and divided by the
            summed weights of the targets, as `F.cross_entropy(weight=...)` does;
        "loss_bbox": L1 over matched pairs / num_boxes;
        "loss_giou": (1 - GIoU) over matched pairs / num_boxes.
    """
    B, Q, C = pred_logits.shape
    no_object = C - 1
    if num_classes is not None and num_classes != no_object:
        raise ValueError(f"num_classes={num_classes} but the logits have {C} classes (expected K+1)")
    if num_boxes is None:
        num_boxes = sum(len(t["boxes"]) for t in targets)
    num_boxes = max(float(num_boxes), 1.0)

    device = pred_logits.device
    batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)]).to(device)  # (M,)
    query_idx = torch.cat([src for src, _ in indices]).to(device)  # (M,)
    matched_labels = torch.cat([t["labels"][tgt] for t, (_, tgt) in zip(targets, indices)]).to(device)
    tgt_boxes = torch.cat([t["boxes"][tgt] for t, (_, tgt) in zip(targets, indices)])  # (M, 4)

    target_classes = torch.full((B, Q), no_object, dtype=torch.int64, device=device)
    target_classes[batch_idx, query_idx] = matched_labels
    class_weight = torch.ones(C, device=device)
    class_weight[no_object] = no_object_weight
    # cross_entropy wants the class dimension second: (B, Q, C) -> (B, C, Q).
    loss_ce = F.cross_entropy(pred_logits.transpose(1, 2).float(), target_classes, weight=class_weight)

    src_boxes = pred_boxes[batch_idx, query_idx].float()  # (M, 4) matched predictions
    tgt_boxes = tgt_boxes.to(src_boxes)
    loss_bbox = F.l1_loss(src_boxes, tgt_boxes, reduction="none").sum() / num_boxes
    giou = torch.diag(generalized_box_iou(cxcywh_to_xyxy(src_boxes), cxcywh_to_xyxy(tgt_boxes)))  # (M,)
    loss_giou = (1 - giou).sum() / num_boxes
    return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}


def hungarian_loss(
    pred_logits: Tensor,
    pred_boxes: Tensor,
    targets: list[dict[str, Tensor]],
    *,
    cost_class: float = COST_CLASS,
    cost_bbox: float = COST_BBOX,
    cost_giou: float = COST_GIOU,
    no_object_weight: float = NO_OBJECT_WEIGHT,
    num_classes: int | None = None,
    num_boxes: float | None = None,
) -> dict[str, Tensor]:
    """DETR's Hungarian loss: `hungarian_match` with the cost_* weights, then `box_losses` of the
    matched pairs (same arguments and unscaled terms as `box_losses`)."""
    indices = hungarian_match(pred_logits, pred_boxes, targets, cost_class=cost_class, cost_bbox=cost_bbox,
                              cost_giou=cost_giou)
    return box_losses(pred_logits, pred_boxes, targets, indices, no_object_weight=no_object_weight,
                      num_classes=num_classes, num_boxes=num_boxes)


def text_loss(
    logits: Tensor, targets: Tensor, sample_weight: Tensor | None = None, *, include_pad: bool = False
) -> Tensor:
    """Token cross-entropy summed over positions, then averaged over samples.

    logits: (B, S, V); targets: (B, S) long, PAD (0) after the STOP token.
    sample_weight: optional (B,) weights; the result is sum_b w_b * ce_b / sum_b w_b (0 when the
        weights sum to 0); None weighs every sample 1.
    include_pad: False ignores PAD positions; True counts them as targets, GPV-1's released-code
        quirk (the decoder is then also trained to emit PAD after STOP).
    Returns a scalar tensor.
    """
    # cross_entropy wants the class dimension second: (B, S, V) -> (B, V, S).
    ce = F.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")  # (B, S)
    if not include_pad:
        ce = ce * (targets != PAD)
    per_sample = ce.sum(dim=1)  # (B,)
    if sample_weight is None:
        return per_sample.mean()
    sample_weight = sample_weight.to(per_sample)
    return (sample_weight * per_sample).sum() / sample_weight.sum().clamp(min=1e-12)


class GPVCriterion:
    """GPV-1's loss: each sample is supervised by its task's output modality only.

    loc/refexp samples: Hungarian matching and `box_losses` on their rows of the relevance
    logits and boxes, with one foreground class (label 0). vqa/cap/cls samples: one term per
    task, "loss_<task>" = `text_loss` over that task's samples in the batch.

    task_weights: weight of each text task's term (defaults vqa 1, cap 0.05, cls 1; keys given
        replace the defaults). box_weights: weights of loss_ce, loss_bbox, loss_giou (defaults
        DEFAULT_BOX_WEIGHTS). cost_*: the matcher's costs. include_pad: see `text_loss`.
    `weights` maps every term name to its weight.
    """

    def __init__(
        self,
        *,
        task_weights: Mapping[str, float] | None = None,
        box_weights: Mapping[str, float] | None = None,
        cost_class: float = COST_CLASS,
        cost_bbox: float = COST_BBOX,
        cost_giou: float = COST_GIOU,
        no_object_weight: float = NO_OBJECT_WEIGHT,
        include_pad: bool = False,
    ):
        task_weights = {**DEFAULT_TASK_WEIGHTS, **(task_weights or {})}
        box_weights = {**DEFAULT_BOX_WEIGHTS, **(box_weights or {})}
        if set(task_weights) != set(TEXT_TASKS):
            raise GPVError(
                f"task weights are for the text tasks {list(TEXT_TASKS)}, got {sorted(task_weights)}"
            )
        if set(box_weights) != set(DEFAULT_BOX_WEIGHTS):
            raise GPVError(f"box weights are for {list(DEFAULT_BOX_WEIGHTS)}, got {sorted(box_weights)}")
        self.weights = {**{f"loss_{t}": float(w) for t, w in task_weights.items()}, **box_weights}
        self.costs = {"cost_class": cost_class, "cost_bbox": cost_bbox, "cost_giou": cost_giou}
        self.no_object_weight = no_object_weight
        self.include_pad = include_pad

    def __call__(
        self, outputs: Mapping[str, Tensor], batch: Mapping, *, num_boxes: float | None = None
    ) -> dict[str, Tensor]:
        """Unscaled terms present in the batch plus "loss", their weighted sum.

        outputs: "text_logits" (B, S, V), "relevance_logits" (B, Q, 2) (index 0 = relevant),
            "boxes" (B, Q, 4) normalized cxcywh.
        batch: "task" (B task names), "text_targets" (B, S) long (PAD where none),
            "boxes" (B tensors (N_i, 4) normalized cxcywh; empty for text tasks).
        num_boxes: see `box_losses` (for a distributed loop).
        A task absent from the batch adds no term.
        """
        tasks = list(batch["task"])
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise GPVError(f"unknown task {unknown[0]!r} in the batch", hint=f"tasks: {', '.join(TASKS)}")
        terms: dict[str, Tensor] = {}

        box_rows = [i for i, t in enumerate(tasks) if t in BOX_TASKS]
        if box_rows:
            logits = outputs["relevance_logits"][box_rows]  # (B_box, Q, 2)
            boxes = outputs["boxes"][box_rows]  # (B_box, Q, 4)
            targets = []
            for i in box_rows:
                gt = batch["boxes"][i].to(boxes.device)
                targets.append(
                    {"boxes": gt, "labels": torch.zeros(len(gt), dtype=torch.int64, device=gt.device)}
                )
            terms.update(hungarian_loss(logits, boxes, targets, **self.costs,
                                        no_object_weight=self.no_object_weight, num_boxes=num_boxes))

        for task in TEXT_TASKS:
            rows = [i for i, t in enumerate(tasks) if t == task]
            if rows:
                terms[f"loss_{task}"] = text_loss(
                    outputs["text_logits"][rows], batch["text_targets"][rows], include_pad=self.include_pad
                )

        terms["loss"] = sum((self.weights[k] * v for k, v in terms.items()), outputs["boxes"].new_zeros(()))
        return terms


def check_finite(terms: Mapping[str, Tensor], *, step: int | None = None) -> None:
    """Raise GPVRuntimeError naming the first non-finite term: "loss_cap is nan at step 12"."""
    names = list(terms)
    if not names:
        return
    finite = torch.isfinite(torch.stack([terms[n].detach().float().reshape(()) for n in names])).tolist()
    for name, ok in zip(names, finite):
        if not ok:
            where = f" at step {step}" if step is not None else ""
            raise GPVRuntimeError(
                f"{name} is {float(terms[name].detach())}{where}",
                hint="lower the learning rate, or check the data and the last checkpoint",
            )
