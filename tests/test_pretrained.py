"""Pretrained starting points (issue 14): DETR in both published layouts, BERT, hub names and refusals.

Checkpoints are rebuilt offline with small configs and random weights, under the tensor names and
config.json keys of the published facebook/detr-resnet-50 (default revision: timm backbone; `no_timm`
revision: transformers' ResNet) and bert-base-uncased. No network is used.
"""

import json
import socket

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import (
    BertConfig,
    BertForPreTraining,
    BertTokenizerFast,
    DetrConfig,
    DetrForObjectDetection,
    ResNetConfig,
)
from typer.testing import CliRunner

from gpvcli.cli.app import app
from gpvcli.errors import GPVError
from gpvcli.model import pretrained
from gpvcli.model.config import TextConfig
from gpvcli.model.text import build_bert, build_tokenizer
from gpvcli.model.visual import VisualConfig, build_visual

DEPTHS, SIZES, STEM = [1, 2, 1, 1], [32, 64, 128, 256], 16
SMALL = {"image_size": [64, 64], "backbone_layer_type": "bottleneck", "backbone_depths": DEPTHS,
             "backbone_hidden_sizes": SIZES, "backbone_embedding_size": STEM, "d_model": 32, "encoder_layers": 1,
             "decoder_layers": 2, "attention_heads": 2, "ffn_dim": 64, "num_queries": 5, "dropout": 0.0,
             "frozen_batchnorm": True, "freeze_stem_and_first_stage": True}
# the keys of facebook/detr-resnet-50's config.json (default revision) that describe the architecture
PUBLISHED_CONFIG = {"architectures": ["DetrForObjectDetection"], "model_type": "detr", "activation_function": "relu",
                    "auxiliary_loss": False, "backbone": "resnet50", "dilation": False, "d_model": 32,
                    "encoder_layers": 1, "decoder_layers": 2, "encoder_attention_heads": 2,
                    "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "num_queries": 5,
                    "position_embedding_type": "sine", "use_pretrained_backbone": True, "use_timm_backbone": True,
                    "id2label": {str(i): f"class{i}" for i in range(7)}}


class TorchvisionBottleneck(nn.Module):
    """torchvision's (and timm's) ResNet bottleneck: stride in the 3x3 convolution, downsample = conv + bn."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        mid = cout // 4
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if cin != cout or stride != 1 else None)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchvisionResNet(nn.Module):
    """A ResNet named as in torchvision and timm (conv1, bn1, layer1..layer4), without the classifier."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, STEM, 7, 2, 3, bias=False), nn.BatchNorm2d(STEM)
        cin = STEM
        for s, (depth, cout) in enumerate(zip(DEPTHS, SIZES)):
            blocks = [TorchvisionBottleneck(cin if b == 0 else cout, cout, 2 if s and b == 0 else 1)
                      for b in range(depth)]
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            cin = cout

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _randomize(module: nn.Module) -> None:
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith("running_var") else torch.randn_like(t) * 0.1)


def _transformers_detr() -> DetrForObjectDetection:
    """A small transformers DETR (transformers' ResNet backbone, 7 classes), random weights and statistics."""
    backbone = ResNetConfig(layer_type="bottleneck", depths=DEPTHS, hidden_sizes=SIZES, embedding_size=STEM,
                            out_features=["stage4"])
    config = DetrConfig(use_timm_backbone=False, backbone_config=backbone, d_model=32, encoder_layers=1,
                        decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                        decoder_ffn_dim=64, num_queries=5, num_labels=7)
    model = DetrForObjectDetection(config)
    _randomize(model)
    return model


def _published_name(name: str) -> str:
    """A transformers 5 DETR tensor name as transformers 4 wrote it in the published checkpoints."""
    return (name.replace("model.backbone.model.", "model.backbone.conv_encoder.model.")
            .replace(".o_proj.", ".out_proj.").replace(".mlp.fc", ".fc"))


def _save(folder, tensors: dict, config: dict, as_bin: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    if as_bin:
        torch.save(tensors, folder / "pytorch_model.bin")
    else:
        save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def detr():
    torch.manual_seed(0)
    return _transformers_detr()


@pytest.fixture(scope="module")
def no_timm_folder(detr, tmp_path_factory):
    """The `no_timm` layout: transformers' ResNet names under model.backbone.conv_encoder.model."""
    tensors = {_published_name(k): v for k, v in detr.state_dict().items()}
    return _save(tmp_path_factory.mktemp("no_timm"), tensors, json.loads(detr.config.to_json_string()))


@pytest.fixture(scope="module")
def timm_folder(detr, tmp_path_factory):
    """The default layout: the backbone under torchvision/timm names, the rest as in no_timm."""
    torch.manual_seed(1)
    resnet = TorchvisionResNet()
    _randomize(resnet)
    tensors = {_published_name(k): v for k, v in detr.state_dict().items() if not k.startswith("model.backbone.")}
    tensors.update({f"model.backbone.conv_encoder.model.{k}": v for k, v in resnet.state_dict().items()
                    if not k.endswith("num_batches_tracked")})
    folder = _save(tmp_path_factory.mktemp("timm"), tensors, PUBLISHED_CONFIG, as_bin=True)
    return folder, resnet.eval()


def _ours(name: str) -> str:
    for theirs, ours in pretrained._DETR_PREFIXES.items():
        if name.startswith(theirs):
            return ours + name[len(theirs):]
    raise AssertionError(name)


def test_published_no_timm_names_are_what_transformers_reads(no_timm_folder, detr):
    """The test's published names are the legacy layout transformers itself still loads completely."""
    again, info = DetrForObjectDetection.from_pretrained(no_timm_folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(again.state_dict(), detr.state_dict(), rtol=0, atol=0)


def test_no_timm_layout_loads_every_tensor_but_the_class_head(no_timm_folder, detr):
    enc = build_visual(VisualConfig(**SMALL, pretrained=str(no_timm_folder)))
    own, theirs = enc.state_dict(), detr.state_dict()
    report = enc.load_report
    assert report.started_fresh == ["class_head.weight", "class_head.bias"] and report.ignored == []
    assert report.loaded == len(own) - 2 == len(theirs) - 2
    for name, tensor in theirs.items():
        if not name.startswith("class_labels_classifier."):
            torch.testing.assert_close(own[_ours(name)], tensor, rtol=0, atol=0)


def test_timm_layout_loads_without_timm_and_computes_torchvisions_resnet(timm_folder, detr):
    folder, resnet = timm_folder
    enc = build_visual(VisualConfig(**SMALL, pretrained=str(folder))).eval()
    report = enc.load_report
    assert report.started_fresh == ["class_head.weight", "class_head.bias"] and report.ignored == []
    assert report.loaded == len(enc.state_dict()) - 2
    own = enc.state_dict()
    for name, tensor in detr.state_dict().items():  # everything outside the backbone, by value
        if not name.startswith(("model.backbone.", "class_labels_classifier.")):
            torch.testing.assert_close(own[_ours(name)], tensor, rtol=0, atol=0)
    backbone = {k: v for k, v in own.items() if k.startswith("detr.backbone.")}
    assert len(backbone) == sum(1 for k in resnet.state_dict() if not k.endswith("num_batches_tracked"))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fmap, _ = enc.backbone_map(images)
        torch.testing.assert_close(fmap, resnet(images), rtol=1e-4, atol=1e-5)


def test_timm_names_map_one_to_one_onto_transformers_resnet():
    names = [k for k in TorchvisionResNet().state_dict() if not k.endswith("num_batches_tracked")]
    with torch.device("meta"):
        ours = build_visual(VisualConfig(**SMALL)).detr.backbone.model.state_dict()
    assert sorted(pretrained.timm_resnet_name(n) for n in names) == sorted(ours)
    assert pretrained.timm_resnet_name("fc.weight") is None


def test_incomplete_or_foreign_checkpoint_is_refused(detr, tmp_path):
    tensors = {_published_name(k): v for k, v in detr.state_dict().items()}
    gone = ["model.backbone.conv_encoder.model.encoder.stages.1.layers.1.layer.1.convolution.weight",
            "model.encoder.layers.0.fc1.weight"]
    folder = _save(tmp_path / "cut", {k: v for k, v in tensors.items() if k not in gone},
                   json.loads(detr.config.to_json_string()))
    with pytest.raises(GPVError, match="2 tensors missing from the checkpoint") as e:
        build_visual(VisualConfig(**SMALL, pretrained=str(folder)))
    assert "stages.1.layers.1.layer.1.convolution.weight" in str(e.value) and "mlp.fc1.weight" in str(e.value)
    assert e.value.exit_code == 2
    extra = _save(tmp_path / "extra", {**tensors, "model.decoder.layers.2.fc1.weight": torch.zeros(64, 32)},
                  json.loads(detr.config.to_json_string()))
    with pytest.raises(GPVError, match="1 tensor unexpected .*decoder.layers.2.mlp.fc1.weight"):
        build_visual(VisualConfig(**SMALL, pretrained=str(extra)))
    with pytest.raises(GPVError, match="encoder_attention_heads=2 but model.visual.attention_heads=4"):
        build_visual(VisualConfig(**{**SMALL, "attention_heads": 4}, pretrained=str(folder)))
    whole = _save(tmp_path / "whole", tensors, json.loads(detr.config.to_json_string()))
    with pytest.raises(GPVError, match="unexpected .*normalization.running_mean"):  # GroupNorm has no statistics
        build_visual(VisualConfig(**{**SMALL, "frozen_batchnorm": False, "group_norm": 4}, pretrained=str(whole)))
    with pytest.raises(GPVError, match="of another shape .*input_projection.weight"):
        build_visual(VisualConfig(**{**SMALL, "backbone_stage": 3}, pretrained=str(whole)))


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """bert-base-uncased's layout: BertForPreTraining (bert.* + the cls.* pre-training heads) and a tokenizer."""
    torch.manual_seed(2)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "dog", "cat", "red", "on", "the"]
    model = BertForPreTraining(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=64, vocab_size=len(words), max_position_embeddings=32))
    _randomize(model)
    folder = tmp_path_factory.mktemp("bert")
    model.save_pretrained(folder)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True).save_pretrained(folder)
    return folder, model


BERT_SIZES = {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64, "vocab_size": 10, "max_position": 32}


def test_bert_loads_completely_and_ignores_the_pretraining_heads(bert_folder):
    folder, model = bert_folder
    bert, report = build_bert(TextConfig(pretrained=str(folder), **BERT_SIZES))
    saved = model.state_dict()
    assert report.loaded == len(bert.state_dict()) and report.started_fresh == []
    heads = sorted(k for k in pretrained.read_tensors(folder) if k.startswith("cls."))
    assert heads and report.ignored == heads
    for name, tensor in bert.state_dict().items():
        torch.testing.assert_close(tensor, saved[f"bert.{name}"], rtol=0, atol=0)
    assert len(build_tokenizer(TextConfig(pretrained=str(folder), **BERT_SIZES))) == 10
    with pytest.raises(GPVError, match="num_hidden_layers=2 but the config says model.text.layers=3"):
        build_bert(TextConfig(pretrained=str(folder), **{**BERT_SIZES, "layers": 3}))


def test_incomplete_bert_is_refused_and_hub_names_find_it_in_the_cache(bert_folder, tmp_path, monkeypatch):
    from huggingface_hub import constants

    folder, _ = bert_folder
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in folder.iterdir():
        (cut / f.name).write_bytes(f.read_bytes())
    tensors = pretrained.read_tensors(folder)
    gone = "bert.encoder.layer.1.attention.self.query.weight"
    save_file({k: v for k, v in tensors.items() if k != gone}, str(cut / "model.safetensors"))
    with pytest.raises(GPVError, match="1 tensor missing from the checkpoint .*layer.1.attention.self.query.weight"):
        build_bert(TextConfig(pretrained=str(cut), **BERT_SIZES))
    wide = "bert.encoder.layer.0.intermediate.dense.weight"
    save_file({**tensors, wide: torch.zeros(65, 32)}, str(cut / "model.safetensors"))
    with pytest.raises(GPVError, match=r"1 tensor of another shape \(encoder.layer.0.intermediate.dense.weight "
                                       r"\[65, 32\] in the checkpoint, \[64, 32\] in the model\)"):
        build_bert(TextConfig(pretrained=str(cut), **BERT_SIZES))

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = _hub_cache(tmp_path / "hub", folder, "bert-base-uncased", "main")
    bert, report = build_bert(TextConfig(pretrained="bert-base-uncased", **BERT_SIZES))
    assert report.folder == str(snapshot) and report.loaded == len(bert.state_dict())
    assert len(build_tokenizer(TextConfig(pretrained="bert-base-uncased", **BERT_SIZES))) == 10


def _hub_cache(root, folder, repo: str, revision: str):
    """A Hugging Face hub cache holding `folder`'s files as `repo` at `revision`."""
    entry = root / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    snapshot = entry / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (entry / "refs").mkdir()
    (entry / "refs" / revision).write_text(commit)
    return snapshot


def test_hub_names_resolve_from_the_cache_or_fail_with_the_download_command(no_timm_folder, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(pretrained, "_hub_reachable", lambda: False)  # as without network
    spec = "facebook/detr-resnet-50@no_timm"
    with pytest.raises(GPVError, match="cannot be reached .*hf download facebook/detr-resnet-50 --revision no_timm "
                                       "--local-dir DIR"):
        build_visual(VisualConfig(**SMALL, pretrained=spec))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GPVError, match="HF_HUB_OFFLINE is set"):
        build_visual(VisualConfig(**SMALL, pretrained=spec))
    with pytest.raises(pretrained.NotCached):
        pretrained.resolve(spec, "model.visual.pretrained", download=False)

    snapshot = _hub_cache(tmp_path, no_timm_folder, "facebook/detr-resnet-50", "no_timm")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = []  # a cached name is resolved without a network call, offline mode or not

    def no_network(*args, **kwargs):
        calls.append(args)
        raise OSError("no network in this test")
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    enc = build_visual(VisualConfig(**SMALL, pretrained=spec))
    assert calls == []
    assert enc.load_report.folder == str(snapshot) and enc.load_report.source == spec
    assert enc.load_report.started_fresh == ["class_head.weight", "class_head.bias"]
    with pytest.raises(GPVError, match="not in the local Hugging Face cache"):  # main is not cached
        build_visual(VisualConfig(**SMALL, pretrained="facebook/detr-resnet-50"))


def test_info_checks_named_checkpoints_first(no_timm_folder, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    runner = CliRunner()
    missing = runner.invoke(app, ["info", "--set", "model.visual.pretrained=/no/such/folder"])
    assert missing.exit_code == 2 and "model.visual.pretrained=/no/such/folder: no such folder" in missing.output
    empty = runner.invoke(app, ["info", "--set", f"model.text.pretrained={tmp_path}"])
    assert empty.exit_code == 2 and "holds no checkpoint" in empty.output
    small = [f"model.visual.{k}={json.dumps(v)}" for k, v in SMALL.items()]
    found = runner.invoke(app, ["info", "--json", "--set", f"model.visual.pretrained={no_timm_folder}",
                                "--set", "model.text.pretrained=bert-base-uncased", *(x for s in small for x in ("--set", s))])
    assert found.exit_code == 0, found.output
    status = json.loads(found.output)["pretrained"]
    assert status["visual"] == f"{no_timm_folder} ({no_timm_folder})"
    assert status["text"].startswith("bert-base-uncased: not downloaded yet") and "hf download" in status["text"]
