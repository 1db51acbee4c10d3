import math

import torch

from gpvcli.model.roi import roi_align_mean


def _bilinear(fmap: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision's bilinear_interpolate, point by point; fmap (C, H, W), (y, x) pixel-index coordinates."""
    _, h, w = fmap.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return torch.zeros(fmap.shape[0], dtype=fmap.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = math.floor(y), math.floor(x)
    if y_low >= h - 1:
        y_low = y_high = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_low = x_high = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * fmap[:, y_low, x_low] + hy * lx * fmap[:, y_low, x_high]
            + ly * hx * fmap[:, y_high, x_low] + ly * lx * fmap[:, y_high, x_high])


def _reference(features, boxes, output_size, sampling_ratio):
    """RoI-Align (aligned=True) bin by bin and sample by sample, then the mean over bins."""
    b, c, h, w = features.shape
    out = torch.zeros(b, boxes.shape[1], c, dtype=features.dtype)
    for i in range(b):
        for q in range(boxes.shape[1]):
            x0, y0, x1, y1 = boxes[i, q].tolist()
            sx, sy = x0 * w - 0.5, y0 * h - 0.5
            bin_w, bin_h = (x1 - x0) * w / output_size, (y1 - y0) * h / output_size
            bins = []
            for ph in range(output_size):
                for pw in range(output_size):
                    acc = torch.zeros(c, dtype=features.dtype)
                    for iy in range(sampling_ratio):
                        for ix in range(sampling_ratio):
                            y = sy + ph * bin_h + (iy + 0.5) * bin_h / sampling_ratio
                            x = sx + pw * bin_w + (ix + 0.5) * bin_w / sampling_ratio
                            acc = acc + _bilinear(features[i], y, x)
                    bins.append(acc / sampling_ratio**2)
            out[i, q] = torch.stack(bins).mean(0)
    return out


def _boxes():
    return torch.tensor([
        [[0.1, 0.2, 0.6, 0.9], [0.0, 0.0, 1.0, 1.0], [-0.3, 0.5, 0.4, 1.4], [0.5, 0.5, 0.51, 0.505]],
        [[0.9, -0.2, 1.3, 0.3], [0.33, 0.41, 0.35, 0.44], [-0.5, -0.5, -0.2, -0.1], [0.2, 0.1, 0.8, 0.3]],
    ], dtype=torch.float64)  # (B=2, Q=4, 4): inside, whole map, partly outside, tiny, fully outside


def test_matches_pointwise_reference():
    torch.manual_seed(0)
    features = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    for output_size, sampling_ratio in [(7, 2), (3, 1)]:
        got = roi_align_mean(features, _boxes(), output_size=output_size, sampling_ratio=sampling_ratio)
        want = _reference(features, _boxes(), output_size, sampling_ratio)
        assert got.shape == (2, 4, 3)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_far_outside_box_is_zero_and_whole_map_of_constant_is_constant():
    features = torch.full((1, 2, 4, 4), 3.0)
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]]])
    got = roi_align_mean(features, boxes)
    torch.testing.assert_close(got, torch.tensor([[[3.0, 3.0], [0.0, 0.0]]]))


def test_gradient_reaches_features_not_boxes():
    features = torch.randn(2, 3, 5, 6, requires_grad=True)
    boxes = _boxes().float().requires_grad_(True)
    roi_align_mean(features, boxes).sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert boxes.grad is None
