import copy

import pytest
import torch
from torch import nn
from transformers import DetrForObjectDetection
from transformers.models.detr.modeling_detr import DetrFrozenBatchNorm2d, DetrSinePositionEmbedding

from gpvcli.boxes import cxcywh_to_xyxy
from gpvcli.errors import GPVError
from gpvcli.model.roi import roi_align_mean
from gpvcli.model.visual import VisualConfig, VisualEncoder, build_visual, load_visual, save_visual, sine_code


def tiny(**overrides) -> VisualConfig:
    sizes = {"image_size": [64, 64], "backbone_hidden_sizes": [8, 16, 16, 32], "backbone_embedding_size": 8,
             "d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "attention_heads": 2, "ffn_dim": 64,
             "num_queries": 5}
    return VisualConfig(**{**sizes, **overrides})


PRETRAINED_POLICY = {"frozen_batchnorm": True, "freeze_stem_and_first_stage": True}


def _backbone(enc: VisualEncoder) -> nn.Module:
    return enc.detr.backbone.model


def test_forward_contract():
    torch.manual_seed(0)
    enc = build_visual(tiny()).eval()
    images = torch.randn(2, 3, 64, 64)
    out = enc(images)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "boxes": (2, 5, 4), "states": (2, 5, 32), "objectness": (2, 5, 2), "roi": (2, 5, 32)}
    assert (enc.state_dim, enc.roi_dim) == (32, 32)
    assert out["boxes"].min() >= 0 and out["boxes"].max() <= 1
    fmap = _backbone(enc)(images).feature_maps[-1]  # (B, C, 2, 2): the stride-32 map
    assert fmap.shape == (2, 32, 2, 2)
    torch.testing.assert_close(out["roi"], roi_align_mean(fmap, cxcywh_to_xyxy(out["boxes"])))
    masked = enc(images, pixel_mask=torch.ones(2, 64, 64, dtype=torch.long))
    torch.testing.assert_close(masked["states"], out["states"])


def test_from_scratch_policy_trains_everything_with_real_batch_norm():
    torch.manual_seed(0)
    enc = build_visual(tiny())
    assert all(p.requires_grad for p in enc.parameters())
    norms = [m for m in _backbone(enc).modules() if isinstance(m, (nn.BatchNorm2d, DetrFrozenBatchNorm2d))]
    assert norms and all(type(m) is nn.BatchNorm2d for m in norms)
    stem_bn = _backbone(enc).embedder.embedder.normalization
    assert stem_bn.weight.requires_grad
    # Real batch norm normalizes a batch in train mode and updates its running statistics.
    x = torch.randn(4, stem_bn.num_features, 5, 5) * 7 + 3
    enc.train()
    y = stem_bn(x)
    assert y.mean().abs() < 1e-4 and (y.std() - 1).abs() < 0.05
    assert stem_bn.running_mean.abs().sum() > 0
    out = enc(torch.randn(2, 3, 64, 64))
    sum(v.pow(2).mean() for v in out.values()).backward()
    assert _backbone(enc).embedder.embedder.convolution.weight.grad.abs().sum() > 0
    assert stem_bn.weight.grad is not None
    ids = {id(p) for p in enc.parameters()}
    groups = [{id(p) for p in enc.backbone_parameters()}, {id(p) for p in enc.detr_parameters()}]
    assert groups[0].isdisjoint(groups[1]) and groups[0] | groups[1] == ids


def test_pretrained_policy_freezes_stem_first_stage_and_batch_norm():
    torch.manual_seed(0)
    enc = build_visual(tiny(**PRETRAINED_POLICY))
    backbone = _backbone(enc)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    frozen_bn = backbone.encoder.stages[2].layers[0].layer[0].normalization
    assert isinstance(frozen_bn, DetrFrozenBatchNorm2d)
    for name, p in backbone.named_parameters():
        assert p.requires_grad == (not name.startswith(("embedder.", "encoder.stages.0."))), name
    assert any(p.requires_grad for n, p in backbone.named_parameters() if n.startswith("encoder.stages.1."))
    assert all(p.requires_grad for p in enc.detr_parameters())
    trainable = {id(p) for p in enc.parameters() if p.requires_grad}
    assert {id(p) for p in enc.backbone_parameters() + enc.detr_parameters()} == trainable
    # Frozen batch norm: fixed statistics, used even in train mode, never updated.
    frozen_bn.running_mean.fill_(2.0)
    frozen_bn.running_var.fill_(4.0)
    x = torch.randn(3, frozen_bn.running_mean.numel(), 4, 4)
    enc.train()
    torch.testing.assert_close(frozen_bn(x), (x - 2.0) / (4.0 + 1e-5) ** 0.5)
    enc(torch.randn(2, 3, 64, 64))
    assert torch.all(frozen_bn.running_mean == 2.0)


def test_set_trainable_freezes_and_keeps_eval_mode():
    enc = build_visual(tiny(**PRETRAINED_POLICY))
    enc.set_trainable(False)
    wrapper = nn.ModuleList([enc]).train()
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc.training and not enc.detr.training and not wrapper[0].class_head.training
    enc.set_trainable(True)
    enc.train()
    assert enc.training
    assert not _backbone(enc).embedder.embedder.convolution.weight.requires_grad
    assert _backbone(enc).encoder.stages[1].layers[0].layer[0].convolution.weight.requires_grad


def test_gpv1_size_is_detr_r50():
    gpv1 = VisualConfig(
        image_size=[480, 640], backbone_layer_type="bottleneck", backbone_depths=[3, 4, 6, 3],
        backbone_hidden_sizes=[256, 512, 1024, 2048], backbone_embedding_size=64, d_model=256, encoder_layers=6,
        decoder_layers=6, attention_heads=8, ffn_dim=2048, num_queries=100, **PRETRAINED_POLICY)
    with torch.device("meta"):
        enc = build_visual(gpv1)
    total = sum(p.numel() for p in enc.parameters())
    assert 41.3e6 < total < 41.7e6
    assert (enc.state_dim, enc.roi_dim) == (256, 2048)


@pytest.mark.parametrize("frozen_batchnorm", [True, False])
def test_loads_transformers_detr_checkpoint(tmp_path, frozen_batchnorm):
    torch.manual_seed(0)
    cfg = tiny(frozen_batchnorm=frozen_batchnorm)
    hf_config = copy.deepcopy(build_visual(tiny()).detr.config)
    hf_config.num_labels = 7  # a detector head: 7 categories + no-object
    hf = DetrForObjectDetection(hf_config)
    with torch.no_grad():
        for name, buf in hf.named_buffers():  # non-trivial batch-norm statistics
            if name.endswith(("running_mean", "running_var")):
                buf.uniform_(0.5, 1.5)
    hf.save_pretrained(tmp_path / "detr")
    saved = hf.state_dict()

    torch.manual_seed(1)
    fresh_head = build_visual(cfg).class_head.weight.detach().clone()
    torch.manual_seed(1)
    enc = build_visual(VisualConfig(**{**cfg.__dict__, "pretrained": str(tmp_path / "detr")}))
    report = enc.load_report
    assert report.started_fresh == ["class_head.weight", "class_head.bias"] and report.ignored == []
    own = enc.state_dict()
    loaded = [n for n in own if not n.endswith("num_batches_tracked") and n not in report.started_fresh]
    assert report.loaded == len(loaded)
    for name in loaded:
        hf_name = name.replace("detr.", "model.", 1).replace("box_head.", "bbox_predictor.", 1)
        torch.testing.assert_close(own[name], saved[hf_name], rtol=0, atol=0)
    torch.testing.assert_close(enc.class_head.weight, fresh_head)
    assert enc.class_head.weight.shape == (2, 32)


def test_save_load_and_stage0_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = tiny(num_classes=8)  # a stage-0 detector
    detector = build_visual(cfg).eval()
    save_visual(detector, cfg, tmp_path / "det")
    assert sorted(p.name for p in (tmp_path / "det").iterdir()) == ["visual.safetensors", "visual_config.yaml"]
    again, cfg_again = load_visual(tmp_path / "det")
    assert cfg_again == cfg
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(images), detector(images))

    gpv = build_visual(tiny(pretrained=str(tmp_path / "det")))
    assert gpv.load_report.started_fresh == ["class_head.weight", "class_head.bias"]
    assert gpv.load_report.loaded == sum(not n.endswith("num_batches_tracked") for n in gpv.state_dict()) - 2
    torch.testing.assert_close(gpv.box_head.layers[0].weight, detector.box_head.layers[0].weight)

    with pytest.raises(GPVError, match="no saved visual encoder"):
        load_visual(tmp_path)


def test_group_norm_behaves_alike_in_training_and_evaluation():
    torch.manual_seed(0)
    enc = build_visual(tiny(group_norm=4, dropout=0.0))
    norms = [m for m in _backbone(enc).modules() if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d,
                                                                   DetrFrozenBatchNorm2d))]
    assert norms and all(isinstance(m, nn.GroupNorm) and m.num_groups == 4 for m in norms)
    assert all(p.requires_grad for m in norms for p in m.parameters())
    images = torch.randn(3, 3, 64, 64)
    train_out = enc.train()(images)["boxes"]
    eval_out = enc.eval()(images)["boxes"]
    torch.testing.assert_close(train_out, eval_out)


def test_backbone_stage_picks_the_feature_map():
    enc = build_visual(tiny(backbone_stage=3)).eval()
    fmap = _backbone(enc)(torch.randn(1, 3, 64, 64)).feature_maps[-1]
    assert fmap.shape == (1, 16, 4, 4) and enc.roi_dim == 16       # stride 16, the third stage's channels


def test_object_queries_start_from_a_unit_normal():
    torch.manual_seed(0)
    weight = build_visual(tiny(num_queries=64)).detr.query_position_embeddings.weight
    assert 0.8 < weight.std() < 1.2                 # N(0, 1) as the original DETR, not transformers' N(0, 0.02)


def test_sine_code_is_detrs_token_position_code():
    pe = DetrSinePositionEmbedding(16, normalize=True)
    pos = pe(torch.Size([1, 32, 3, 4]), "cpu", torch.float32)[0].flatten(1).T   # (12, 32), row-major tokens
    points = torch.tensor([[(j + 1) / 4, (i + 1) / 3] for i in range(3) for j in range(4)])  # as DETR places them
    torch.testing.assert_close(sine_code(points, 32), pos)


def test_anchor_queries_attend_near_their_point_and_regress_from_it():
    torch.manual_seed(0)
    enc = build_visual(tiny(query_anchors=True, num_queries=4, backbone_stage=3)).eval()  # 4x4 map on 64x64
    assert enc.detr.query_position_embeddings is None
    with torch.no_grad():
        enc.anchors.copy_(torch.logit(torch.tensor([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])))
    bias = enc._anchor_bias((4, 4), torch.ones(2, 16, dtype=torch.long))
    assert bias.shape == (2, 1, 4, 16)
    assert bias[0, 0].argmax(-1).tolist() == [0, 3, 12, 6]    # the token whose centre is nearest each anchor
    padded = torch.ones(1, 16, dtype=torch.long)
    padded[0, 3] = 0
    assert enc._anchor_bias((4, 4), padded)[0, 0, 1].argmax() != 3

    # the box centre is the anchor moved by the box head's first two outputs, in logit space
    with torch.no_grad():
        enc.box_head.layers[-1].weight.zero_()
        enc.box_head.layers[-1].bias.zero_()
        boxes = enc(torch.randn(2, 3, 64, 64))["boxes"]
    torch.testing.assert_close(boxes[..., :2], enc.anchors.sigmoid().expand(2, -1, -1))
    torch.testing.assert_close(boxes[..., 2:], torch.full((2, 4, 2), 0.5))


def test_anchor_queries_save_load_and_train_in_bf16(tmp_path):
    torch.manual_seed(0)
    cfg = tiny(query_anchors=True)
    enc = build_visual(cfg).eval()
    save_visual(enc, cfg, tmp_path / "det")
    again, _ = load_visual(tmp_path / "det")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(images), enc(images))
    enc.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = enc(images)
    (out["boxes"].float().sum() + out["objectness"].float().sum()).backward()
    for name in ("anchors", "anchor_log_sigma"):
        assert getattr(enc, name).grad.abs().sum() > 0, name
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)   # none unused (DDP)
