"""Size and cost of a model config: parameters per component, FLOPs and activations.

Definitions:
- Parameters: every parameter tensor once, split trainable (requires_grad) /
  frozen, grouped into the components of `COMPONENTS`.
- FLOPs: one forward pass of one sample (an image at the preset's image size, a
  query of `query_len` tokens, a teacher-forced answer of `answer_len` tokens,
  task vqa) counted by `torch.utils.flop_counter.FlopCounterMode`: 2 FLOPs per
  multiply-add of matrix products, convolutions and attention; other ops
  (norms, activations, RoI sampling) are not counted. The text head's share
  includes transforming every output word vector (V x E x D multiply-adds),
  which GPV-1 does on every forward pass whatever the batch size.
- Activations: the number of output elements of every leaf module (a module
  without children) in that same forward pass, each call counted (fvcore-style).
The model is built and run on fake tensors (shapes only; nothing is allocated or
computed), and pretrained names in the config are not loaded: sizes come from the config.
"""

from __future__ import annotations

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from gpvcli.data.vocab import SPECIALS, START, Vocab
from gpvcli.model.config import ModelConfig, without_pretrained
from gpvcli.model.gpv import GPV, build_model

# "joiners": the region and query Linears to D; "relevance": its Linear, the conditioning vectors and the
# region-phrase score (model.phrase_grounding).
COMPONENTS = ("visual backbone", "rest of DETR", "text encoder", "joiners", "co-attention",
              "relevance", "text decoder", "word-vector transforms", "word tables")
# The paper's figures for GPV-1 (seed supplementary, Sec. 2 and Table 3).
PAPER = {"parameters": {"modality": 236e6, "task": 311e6}, "flops": 139e9, "activations": 289e6}
QUERY_LEN = 16
ANSWER_LEN = 5


def _component(name: str, detr_ids: set[int], param: nn.Parameter) -> str:
    if name.startswith("visual."):
        return "rest of DETR" if id(param) in detr_ids else "visual backbone"
    if name.startswith("text.bert."):
        return "text encoder"
    if name.startswith(("regions.", "text.proj.")):
        return "joiners"
    if name.startswith("coattention."):
        return "co-attention"
    if name.startswith(("relevance.", "conditioning.", "phrase_score.")):
        return "relevance"
    part = name.split(".")[2]  # text_heads.NAME.PART...
    if part in ("input_words", "output_words"):
        return "word tables"
    if part in ("input_transform", "output_transform"):
        return "word-vector transforms"
    return "text decoder"


def parameter_counts(model: GPV) -> dict:
    """{component: {"trainable": n, "frozen": n}} for every COMPONENTS entry, plus "total"."""
    detr_ids = {id(p) for p in model.visual.detr_parameters()}
    counts = {c: {"trainable": 0, "frozen": 0} for c in (*COMPONENTS, "total")}
    for name, p in model.named_parameters():
        key = "trainable" if p.requires_grad else "frozen"
        counts[_component(name, detr_ids, p)][key] += p.numel()
        counts["total"][key] += p.numel()
    return counts


def _placeholder_vocab(vocab_size: int) -> Vocab:
    return Vocab([*SPECIALS, *(f"word{i}" for i in range(vocab_size - len(SPECIALS)))])


def count_parameters(cfg: ModelConfig, vocab_size: int) -> dict:
    """`parameter_counts` of the model of `cfg`, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = build_model(without_pretrained(cfg), _placeholder_vocab(vocab_size))
    return parameter_counts(model)


def model_info(cfg: ModelConfig, vocab_size: int, *, query_len: int = QUERY_LEN,
               answer_len: int = ANSWER_LEN) -> dict:
    """Parameters, FLOPs and activations of `cfg` with a `vocab_size`-word answer vocabulary.

    Returns {"parameters": parameter_counts, "flops": total, "flops_by_module": {module path: FLOPs},
    "activations": total, "image_size": [H, W], "query_len", "answer_len", "vocab_size",
    "visual_outputs": {"queries", "state_dim", "roi_dim", "classes", "colour_dim"} (what a feature cache stores per region)}.
    """
    activations = 0

    def count(module, inputs, output):
        nonlocal activations
        if isinstance(output, torch.Tensor):
            activations += output.numel()

    H, W = cfg.visual.image_size
    # Fake tensors carry shapes only: nothing is allocated or computed, yet every op is dispatched.
    with FakeTensorMode():
        model = build_model(without_pretrained(cfg), _placeholder_vocab(vocab_size))
        counts = parameter_counts(model)
        model.eval().requires_grad_(False)  # FlopCounterMode's module tracker needs no grad-requiring tensors
        for m in model.modules():
            if not list(m.children()):
                m.register_forward_hook(count)
        query_ids = torch.ones(1, query_len, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            model(query_ids=query_ids, query_mask=torch.ones_like(query_ids), task=["vqa"],
                  images=torch.zeros(1, 3, H, W), answer_inputs=torch.full((1, answer_len), START))
    by_module = {name.removeprefix("GPV."): sum(ops.values())
                 for name, ops in counter.get_flop_counts().items()
                 if name.count(".") == 1 or name.startswith("GPV.text_heads.") and name.count(".") == 2}
    visual = {"queries": cfg.visual.num_queries, "state_dim": model.visual.state_dim,
              "roi_dim": model.visual.roi_dim, "classes": cfg.visual.num_classes,
              "colour_dim": model.visual.colour_dim}
    return {"parameters": counts, "flops": counter.get_total_flops(), "flops_by_module": by_module,
            "activations": activations, "image_size": [H, W], "query_len": query_len,
            "answer_len": answer_len, "vocab_size": vocab_size, "visual_outputs": visual}
