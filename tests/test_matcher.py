import itertools

import pytest
import torch

from gpvcli.boxes import cxcywh_to_xyxy, generalized_box_iou
from gpvcli.errors import GPVError
from gpvcli.train.matcher import hungarian_match

COSTS = {"cost_class": 1.0, "cost_bbox": 5.0, "cost_giou": 2.0}


def random_case(gen, B, Q, C, sizes):
    logits = torch.randn(B, Q, C, generator=gen)
    boxes = torch.cat(
        [torch.rand(B, Q, 2, generator=gen) * 0.6 + 0.2, torch.rand(B, Q, 2, generator=gen) * 0.3 + 0.05], -1
    )
    targets = []
    for n in sizes:
        tb = torch.cat(
            [torch.rand(n, 2, generator=gen) * 0.6 + 0.2, torch.rand(n, 2, generator=gen) * 0.3 + 0.05], -1
        )
        targets.append({"boxes": tb, "labels": torch.randint(0, C - 1, (n,), generator=gen)})
    return logits, boxes, targets


def pair_cost(logits, boxes, target):
    """(Q, N) cost computed the plain way, for one sample."""
    prob = logits.softmax(-1)[:, target["labels"]]
    l1 = (boxes[:, None, :] - target["boxes"][None, :, :]).abs().sum(-1)
    giou = generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(target["boxes"]))
    return -COSTS["cost_class"] * prob + COSTS["cost_bbox"] * l1 - COSTS["cost_giou"] * giou


@pytest.mark.parametrize("trial", range(12))
def test_matches_brute_force(trial):
    gen = torch.Generator().manual_seed(trial)
    Q = int(torch.randint(1, 6, (1,), generator=gen))
    N = int(torch.randint(1, Q + 1, (1,), generator=gen))
    C = 2 if trial % 2 else 4
    logits, boxes, targets = random_case(gen, 1, Q, C, [N])
    ((rows, cols),) = hungarian_match(logits, boxes, targets, **COSTS)
    cost = pair_cost(logits[0], boxes[0], targets[0])
    assert len(rows) == len(cols) == N
    assert len(set(rows.tolist())) == N and sorted(cols.tolist()) == list(range(N))
    got = cost[rows, cols].sum()
    best = min(sum(cost[q, j] for j, q in enumerate(perm)) for perm in itertools.permutations(range(Q), N))
    assert got == pytest.approx(float(best), abs=1e-5)


def test_batched_equals_one_by_one():
    gen = torch.Generator().manual_seed(7)
    sizes = [3, 0, 5, 1]
    logits, boxes, targets = random_case(gen, 4, 6, 2, sizes)
    batched = hungarian_match(logits, boxes, targets)
    for b, target in enumerate(targets):
        ((rows, cols),) = hungarian_match(logits[b : b + 1], boxes[b : b + 1], [target])
        assert torch.equal(batched[b][0], rows) and torch.equal(batched[b][1], cols)
        assert len(rows) == sizes[b]


def test_empty_targets_give_empty_indices():
    gen = torch.Generator().manual_seed(0)
    logits, boxes, targets = random_case(gen, 2, 4, 2, [0, 0])
    out = hungarian_match(logits, boxes, targets)
    assert len(out) == 2
    for rows, cols in out:
        assert rows.dtype == cols.dtype == torch.int64 and rows.numel() == cols.numel() == 0


def test_perfect_prediction_is_matched_to_itself():
    target_boxes = torch.tensor([[0.2, 0.3, 0.1, 0.2], [0.7, 0.6, 0.3, 0.3]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.7, 0.6, 0.3, 0.3], [0.2, 0.3, 0.1, 0.2]]])
    logits = torch.zeros(1, 3, 2)
    ((rows, cols),) = hungarian_match(
        logits, boxes, [{"boxes": target_boxes, "labels": torch.zeros(2, dtype=torch.long)}]
    )
    assert dict(zip(rows.tolist(), cols.tolist())) == {1: 1, 2: 0}


def test_nan_predictions_raise_gpv_error():
    logits = torch.full((1, 3, 2), float("nan"))
    boxes = torch.rand(1, 3, 4)
    with pytest.raises(GPVError, match="not finite"):
        hungarian_match(
            logits, boxes, [{"boxes": torch.rand(1, 4), "labels": torch.zeros(1, dtype=torch.long)}]
        )
