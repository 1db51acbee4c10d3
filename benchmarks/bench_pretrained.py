"""The gpv1 preset's starting point at full size, offline: load report, values and seconds.

Rebuilds facebook/detr-resnet-50 in both published layouts (default revision: timm backbone names,
`pytorch_model.bin`; `no_timm` revision: transformers' ResNet names, `model.safetensors`) and
bert-base-uncased (BertForPreTraining with its `cls.*` heads, a 30,522-word tokenizer), all with random
weights, in a temporary Hugging Face cache with HF_HUB_OFFLINE=1; then builds the gpv1 preset's
encoders from the hub names and checks every loaded tensor by value.

    python benchmarks/bench_pretrained.py      # about 1 GB of temporary files, removed at the end
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(tempfile.mkdtemp(prefix="gpv-hub-"))
os.environ["HF_HUB_CACHE"] = str(CACHE)   # read when huggingface_hub is imported
os.environ["HF_HUB_OFFLINE"] = "1"

import torch
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertForPreTraining,
    BertTokenizerFast,
    DetrConfig,
    DetrForObjectDetection,
    ResNetConfig,
)

from gpvcli.model import pretrained
from gpvcli.model.config import load_model_config
from gpvcli.model.text import build_bert
from gpvcli.model.visual import build_visual

DEPTHS = [3, 4, 6, 3]


def snapshot(repo: str, revision: str, commit: str) -> Path:
    entry = CACHE / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True, exist_ok=True)
    (entry / "refs" / revision).write_text(commit)
    folder = entry / "snapshots" / commit
    folder.mkdir(parents=True)
    return folder


def timm_names() -> list[str]:
    """ResNet-50's tensor names in timm / torchvision (no classifier, no BatchNorm step counters)."""
    bn = ("weight", "bias", "running_mean", "running_var")
    names = ["conv1.weight", *(f"bn1.{p}" for p in bn)]
    for s, depth in enumerate(DEPTHS, 1):
        for b in range(depth):
            for k in (1, 2, 3):
                names += [f"layer{s}.{b}.conv{k}.weight", *(f"layer{s}.{b}.bn{k}.{p}" for p in bn)]
            if b == 0:
                names += [f"layer{s}.{b}.downsample.0.weight", *(f"layer{s}.{b}.downsample.1.{p}" for p in bn)]
    return names


def published(name: str) -> str:
    return (name.replace("model.backbone.model.", "model.backbone.conv_encoder.model.")
            .replace(".o_proj.", ".out_proj.").replace(".mlp.fc", ".fc"))


def write_detr() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    backbone = ResNetConfig(layer_type="bottleneck", depths=DEPTHS, hidden_sizes=[256, 512, 1024, 2048],
                            embedding_size=64, out_features=["stage4"])
    model = DetrForObjectDetection(DetrConfig(use_timm_backbone=False, backbone_config=backbone, num_labels=91))
    state = {published(k): v.contiguous() for k, v in model.state_dict().items()}
    for k, v in state.items():
        if k.endswith("running_var"):
            v.uniform_(0.5, 1.5)
        elif k.endswith("running_mean"):
            v.normal_()
    no_timm = snapshot("facebook/detr-resnet-50", "no_timm", "1" * 40)
    save_file(state, str(no_timm / "model.safetensors"))
    (no_timm / "config.json").write_text(model.config.to_json_string())

    prefix = "model.backbone.conv_encoder.model."
    to_timm = {prefix + pretrained.timm_resnet_name(n): prefix + n for n in timm_names()}
    assert len(to_timm) == sum(k.startswith(prefix) for k in state), "timm names do not cover the backbone"
    main = snapshot("facebook/detr-resnet-50", "main", "2" * 40)
    torch.save({to_timm.get(k, k): v for k, v in state.items()}, main / "pytorch_model.bin")
    config = {"architectures": ["DetrForObjectDetection"], "model_type": "detr", "backbone": "resnet50",
              "use_timm_backbone": True, "use_pretrained_backbone": True, "dilation": False,
              "position_embedding_type": "sine", "activation_function": "relu", "d_model": 256,
              "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8, "decoder_attention_heads": 8,
              "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048, "num_queries": 100,
              "id2label": {str(i): f"class{i}" for i in range(91)}}
    (main / "config.json").write_text(json.dumps(config))
    return state


def write_bert() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    model = BertForPreTraining(BertConfig())
    folder = snapshot("bert-base-uncased", "main", "3" * 40)
    model.save_pretrained(folder)
    words = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += [f"w{i}" for i in range(30522 - len(words))]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True).save_pretrained(folder)
    return model.state_dict()


def main() -> None:
    try:
        measure()
    finally:
        shutil.rmtree(CACHE, ignore_errors=True)


def measure() -> None:
    detr, bert_state = write_detr(), write_bert()
    cfg = load_model_config("gpv1")
    print("check_named:", pretrained.check_named(cfg))
    for spec in ("facebook/detr-resnet-50", "facebook/detr-resnet-50@no_timm"):
        t = time.perf_counter()
        enc = build_visual(load_model_config("gpv1", [f"model.visual.pretrained={spec}"]).visual)
        seconds = time.perf_counter() - t
        own = enc.state_dict()
        same = all(torch.equal(own[pretrained.detr_tensor_name(k)], v) for k, v in detr.items()
                   if not k.startswith("class_labels_classifier."))
        print(f"{enc.load_report.line()}; every loaded tensor equal by value: {same}; {seconds:.1f} s")
    t = time.perf_counter()
    bert, report = build_bert(cfg.text)
    seconds = time.perf_counter() - t
    same = all(torch.equal(v, bert_state[f"bert.{k}"]) for k, v in bert.state_dict().items())
    print(f"{report.line()}; every loaded tensor equal by value: {same}; {seconds:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
