import math

import pytest
import torch

from gpvcli.errors import GPVError
from gpvcli.train.losses import GPVCriterion, box_losses, check_finite, text_loss
from gpvcli.train.matcher import hungarian_match

B, Q, S, V = 5, 4, 6, 11
TASKS = ["vqa", "cap", "loc", "cls", "refexp"]


def make_case(seed=0):
    gen = torch.Generator().manual_seed(seed)
    outputs = {
        "text_logits": torch.randn(B, S, V, generator=gen, requires_grad=True),
        "relevance_logits": torch.randn(B, Q, 2, generator=gen, requires_grad=True),
        "boxes": (torch.rand(B, Q, 4, generator=gen) * 0.3 + 0.3).requires_grad_(),
    }
    text_targets = torch.zeros(B, S, dtype=torch.long)
    text_targets[0, :2] = torch.tensor([5, 2])
    text_targets[1, :5] = torch.tensor([4, 6, 7, 8, 2])
    text_targets[3, :2] = torch.tensor([9, 2])
    boxes = [torch.zeros(0, 4)] * B
    boxes[2] = torch.tensor([[0.4, 0.4, 0.2, 0.2], [0.6, 0.5, 0.1, 0.3]])
    boxes[4] = torch.tensor([[0.5, 0.5, 0.4, 0.4]])
    batch = {"task": list(TASKS), "text_targets": text_targets, "boxes": boxes}
    return outputs, batch


def changed(a, b):
    return {k for k in a if not torch.allclose(a[k], b[k])}


def test_perfect_prediction_has_zero_box_terms_and_hand_checked_ce():
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]]])
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    targets = [{"boxes": boxes[0, :1].clone(), "labels": torch.zeros(1, dtype=torch.long)}]
    indices = hungarian_match(logits, boxes, targets)
    assert indices[0][0].tolist() == [0]
    terms = box_losses(logits, boxes, targets, indices)
    assert terms["loss_bbox"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["loss_giou"].item() == pytest.approx(0.0, abs=1e-6)
    ce_matched = math.log(1 + math.exp(-2.0))  # -log softmax([2, 0])[0]
    ce_rest = math.log(1 + math.exp(-1.0))  # -log softmax([0, 1])[1]
    assert terms["loss_ce"].item() == pytest.approx((ce_matched + 0.1 * ce_rest) / 1.1, rel=1e-5)


def test_box_terms_hand_checked_and_divided_by_num_boxes():
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])
    targets = [{"boxes": torch.tensor([[0.6, 0.5, 0.2, 0.2]]), "labels": torch.zeros(1, dtype=torch.long)}]
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    terms = box_losses(torch.zeros(1, 1, 2), boxes, targets, indices)
    # L1 = 0.1; IoU = 0.02 / 0.06 and the hull equals the union, so GIoU = 1/3.
    assert terms["loss_bbox"].item() == pytest.approx(0.1, rel=1e-5)
    assert terms["loss_giou"].item() == pytest.approx(2 / 3, rel=1e-5)
    quarter = box_losses(torch.zeros(1, 1, 2), boxes, targets, indices, num_boxes=4)
    assert quarter["loss_bbox"].item() == pytest.approx(0.025, rel=1e-5)
    with pytest.raises(ValueError):
        box_losses(torch.zeros(1, 1, 2), boxes, targets, indices, num_classes=3)


def test_box_losses_with_no_targets():
    logits = torch.randn(2, 3, 2)
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    terms = box_losses(
        logits, torch.rand(2, 3, 4), targets, hungarian_match(logits, torch.rand(2, 3, 4), targets)
    )
    assert terms["loss_bbox"].item() == 0.0 and terms["loss_giou"].item() == 0.0
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 2), torch.ones(6, dtype=torch.long))
    assert terms["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_text_loss_sums_positions_averages_samples_and_ignores_pad():
    logits = torch.zeros(2, 4, V)
    targets = torch.tensor([[5, 2, 0, 0], [4, 6, 7, 2]])
    assert text_loss(logits, targets).item() == pytest.approx((2 + 4) / 2 * math.log(V), rel=1e-5)
    assert text_loss(logits, targets, include_pad=True).item() == pytest.approx(4 * math.log(V), rel=1e-5)
    noisy = logits.clone()
    noisy[0, 2:] = torch.randn(2, V)
    assert text_loss(noisy, targets).item() == pytest.approx(text_loss(logits, targets).item())
    assert text_loss(noisy, targets, include_pad=True).item() != pytest.approx(4 * math.log(V), rel=1e-5)
    weighted = text_loss(logits, targets, torch.tensor([0.0, 1.0]))
    assert weighted.item() == pytest.approx(4 * math.log(V), rel=1e-5)
    assert text_loss(logits, targets, torch.zeros(2)).item() == 0.0


def test_criterion_routes_each_task_to_its_terms():
    criterion = GPVCriterion()
    outputs, batch = make_case()
    base = criterion(outputs, batch)
    assert set(base) == {"loss_vqa", "loss_cap", "loss_cls", "loss_ce", "loss_bbox", "loss_giou", "loss"}
    assert all(torch.isfinite(v) for v in base.values())

    moved = dict(batch, boxes=list(batch["boxes"]))
    moved["boxes"][2] = torch.tensor([[0.1, 0.1, 0.05, 0.05]])
    assert changed(base, criterion(outputs, moved)) == {"loss_ce", "loss_bbox", "loss_giou", "loss"}

    recaptioned = dict(batch, text_targets=batch["text_targets"].clone())
    recaptioned["text_targets"][1, :3] = torch.tensor([10, 3, 2])
    recaptioned["text_targets"][1, 3:] = 0
    assert changed(base, criterion(outputs, recaptioned)) == {"loss_cap", "loss"}

    # Text targets on box rows and boxes on text rows are ignored.
    noise = dict(batch, text_targets=batch["text_targets"].clone(), boxes=list(batch["boxes"]))
    noise["text_targets"][2, :2] = torch.tensor([5, 2])
    noise["boxes"][0] = torch.tensor([[0.5, 0.5, 0.1, 0.1]])
    assert changed(base, criterion(outputs, noise)) == set()


def test_total_is_the_weighted_sum_with_caption_weight():
    criterion = GPVCriterion()
    outputs, batch = make_case(1)
    terms = criterion(outputs, batch)
    assert criterion.weights == {
        "loss_vqa": 1.0,
        "loss_cap": 0.05,
        "loss_cls": 1.0,
        "loss_ce": 1.0,
        "loss_bbox": 5.0,
        "loss_giou": 2.0,
    }
    expected = sum(criterion.weights[k] * v for k, v in terms.items() if k != "loss")
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)

    cap_only = {
        "task": ["cap", "cap"],
        "text_targets": batch["text_targets"][[1, 1]],
        "boxes": [torch.zeros(0, 4)] * 2,
    }
    cap_outputs = {k: v[[1, 1]] for k, v in outputs.items()}
    cap_terms = criterion(cap_outputs, cap_only)
    assert set(cap_terms) == {"loss_cap", "loss"}
    assert cap_terms["loss"].item() == pytest.approx(0.05 * cap_terms["loss_cap"].item(), rel=1e-6)


def test_per_task_average_over_that_tasks_samples():
    criterion = GPVCriterion()
    outputs, batch = make_case(2)
    batch = dict(batch, task=["vqa", "vqa", "loc", "cls", "refexp"])
    terms = criterion(outputs, batch)
    expected = text_loss(outputs["text_logits"][:2], batch["text_targets"][:2])
    assert terms["loss_vqa"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert "loss_cap" not in terms


def test_absent_tasks_and_empty_boxes_give_no_nan():
    criterion = GPVCriterion()
    outputs, _ = make_case(3)
    loc_only = {
        "task": ["loc"],
        "text_targets": torch.zeros(1, S, dtype=torch.long),
        "boxes": [torch.zeros(0, 4)],
    }
    terms = criterion({k: v[2:3] for k, v in outputs.items()}, loc_only)
    assert set(terms) == {"loss_ce", "loss_bbox", "loss_giou", "loss"}
    assert terms["loss_bbox"].item() == 0.0 and torch.isfinite(terms["loss"])


def test_gradients_reach_logits_and_boxes():
    outputs, batch = make_case(4)
    GPVCriterion()(outputs, batch)["loss"].backward()
    for name in ("text_logits", "relevance_logits", "boxes"):
        grad = outputs[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # Box rows of text tasks get no gradient, text rows of box tasks neither.
    assert outputs["boxes"].grad[0].abs().sum() == 0
    assert outputs["text_logits"].grad[2].abs().sum() == 0


def test_bad_settings_and_unknown_task():
    with pytest.raises(GPVError):
        GPVCriterion(task_weights={"loc": 1.0})
    with pytest.raises(GPVError):
        GPVCriterion(box_weights={"loss_mask": 1.0})
    outputs, batch = make_case()
    with pytest.raises(GPVError, match="unknown task"):
        GPVCriterion()(outputs, dict(batch, task=["vqa", "cap", "loc", "cls", "detect"]))


def test_check_finite_names_the_term():
    check_finite({"loss_vqa": torch.tensor(1.0), "loss": torch.tensor(2.0)})
    with pytest.raises(GPVError, match="loss_cap is nan at step 12"):
        check_finite({"loss_vqa": torch.tensor(1.0), "loss_cap": torch.tensor(float("nan"))}, step=12)
    with pytest.raises(GPVError, match="^loss is inf"):
        check_finite({"loss": torch.tensor(float("inf"))})
