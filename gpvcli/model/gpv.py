"""GPV-1: the whole forward pass, top to bottom.

visual encoder -> region descriptors -> text encoder -> co-attention -> relevance
-> relevance conditioning -> text decoder.

Letters: B batch, Q regions (DETR queries), T query tokens, S answer tokens,
D hidden, V answer vocabulary. Boxes are normalized cxcywh in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gpvcli.data.prompts import TASKS
from gpvcli.data.vocab import PAD, Vocab
from gpvcli.errors import GPVError
from gpvcli.model import decoding
from gpvcli.model.coattention import CoAttention
from gpvcli.model.config import ModelConfig
from gpvcli.model.heads import (
    GroundedMemory,
    RegionPhraseScore,
    RelevanceConditioning,
    RelevanceHead,
    TextHead,
    mean_tokens,
)
from gpvcli.model.param_groups import param_groups
from gpvcli.model.text import TextEncoder, build_bert, build_tokenizer, word_vectors
from gpvcli.model.visual import VisualEncoder, build_visual

# Samples of tasks without a text target (loc, refexp) still produce text; with a
# head per task it comes from this head.
DEFAULT_TEXT_HEAD = "vqa"


class RegionDescriptor(nn.Module):
    """roi (B,Q,C), states (B,Q,Ds) -> regions (B,Q,D): Linear([LayerNorm(roi) without affine ; states])."""

    def __init__(self, *, roi_dim: int, state_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(roi_dim + state_dim, dim)

    def forward(self, roi: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        roi = F.layer_norm(roi, roi.shape[-1:])
        return self.proj(torch.cat([roi, states], dim=-1))  # (B,Q,C+Ds) -> (B,Q,D)


class GPV(nn.Module):
    """One model for vqa, cap, loc, cls and refexp; the task is known only through the query words.

    text_heads: {"text": TextHead} (head per modality) or {"vqa", "cap", "cls"} (head per task).
    max_answer_len: task -> largest number of generated words; "default" for other tasks.
    """

    def __init__(self, *, visual: VisualEncoder, text: TextEncoder, dim: int, coattention: CoAttention,
                 text_heads: dict[str, TextHead], relevance_conditioning: bool, mask_query_padding: bool,
                 max_answer_len: dict[str, int], phrase_grounding: bool = False, grounded_memory: bool = False):
        super().__init__()
        self.visual = visual
        self.regions = RegionDescriptor(roi_dim=visual.roi_dim, state_dim=visual.state_dim, dim=dim)
        self.text = text
        self.coattention = coattention
        self.relevance = RelevanceHead(dim=dim)
        self.phrase_score = RegionPhraseScore(dim=dim) if phrase_grounding else None
        if grounded_memory and not phrase_grounding:
            raise GPVError("model.grounded_memory reads the region-query score",
                           hint="add --set model.phrase_grounding=true")
        self.grounded_memory = GroundedMemory(dim=dim, colour_dim=visual.colour_dim) if grounded_memory else None
        self.conditioning = RelevanceConditioning(dim=dim) if relevance_conditioning else None
        self.text_heads = nn.ModuleDict(text_heads)
        self.mask_query_padding = mask_query_padding
        self.max_answer_len = max_answer_len

    def head_name(self, task: str) -> str:
        """The text head that serves `task`."""
        if task not in TASKS:
            raise GPVError(f"unknown task {task!r}", hint=f"tasks: {', '.join(TASKS)}")
        if "text" in self.text_heads:
            return "text"
        return task if task in self.text_heads else DEFAULT_TEXT_HEAD

    def answer_len(self, task: str) -> int:
        """The largest number of words generated for `task`."""
        return self.max_answer_len.get(task, self.max_answer_len["default"])

    def encode(self, *, query_ids: torch.Tensor, query_mask: torch.Tensor, images: torch.Tensor | None = None,
               visual: dict | None = None) -> dict:
        """Everything before the text decoder.

        query_ids (B,T) long, query_mask (B,T) (1 = real token); exactly one of images
        (B,3,H,W) normalized, or visual: the VisualEncoder output dict (cached features).
        Returns "boxes" (B,Q,4), "relevance_logits" (B,Q,2) (index 0 = relevant),
        "relevance" (B,Q), "memory" (B,M,D) = [conditioned regions ; co-attended
        language], M = Q+T, with `model.grounded_memory` also [; grounded regions ; focus], M = 2Q+T+1,
        and "memory_mask" (B,M) bool (True = attend) or None.
        """
        if (images is None) == (visual is None):
            raise ValueError("give exactly one of images or visual")
        if visual is None:
            visual = self.visual(images)
        regions = self.regions(visual["roi"], visual["states"])
        described = regions
        language = self.text(query_ids, query_mask)
        grounding = None
        if self.phrase_score is not None:       # each region against the whole query, before co-attention
            query = mean_tokens(language, query_mask)[:, None]                         # (B,1,D)
            grounding = self.phrase_score(regions, query)[..., 0]                       # (B,Q,1) -> (B,Q)
        keep = query_mask.bool() if self.mask_query_padding else None
        language, regions = self.coattention(language, regions, keep)
        relevance_logits = self.relevance(regions, visual["objectness"], grounding)
        if self.conditioning is not None:
            regions = self.conditioning(regions, relevance_logits)
        parts = [regions, language]                      # (B,Q,D), (B,T,D)
        if self.grounded_memory is not None:
            parts.append(self.grounded_memory(described, grounding, visual.get("colour")))  # (B,Q+1,D)
        memory = torch.cat(parts, dim=1)                                                 # (B,M,D)
        memory_mask = None
        if keep is not None:
            after = memory.shape[1] - regions.shape[1] - keep.shape[1]                   # grounded memory
            memory_mask = torch.cat([keep.new_ones(regions.shape[:2]), keep, keep.new_ones(len(keep), after)], 1)
        return {"boxes": visual["boxes"], "relevance_logits": relevance_logits,
                "relevance": relevance_logits.softmax(-1)[..., 0], "memory": memory, "memory_mask": memory_mask}

    def _groups(self, task: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """Head name -> indices (long, on `device`) of the samples it serves."""
        names = [self.head_name(t) for t in task]
        return {h: torch.tensor([i for i, n in enumerate(names) if n == h], device=device)
                for h in dict.fromkeys(names)}

    def forward(self, *, query_ids: torch.Tensor, query_mask: torch.Tensor, task: list[str],
                images: torch.Tensor | None = None, visual: dict | None = None,
                answer_inputs: torch.Tensor | None = None) -> dict:
        """Boxes, relevance, and teacher-forced answer logits.

        Inputs as in `encode`; task: B task names (route samples to text heads);
        answer_inputs (B,S) long = START + target[:-1] (optional).
        Returns "boxes" (B,Q,4) normalized cxcywh, "relevance_logits" (B,Q,2),
        "relevance" (B,Q), and "text_logits" (B,S,V) when answer_inputs is given.
        """
        enc = self.encode(query_ids=query_ids, query_mask=query_mask, images=images, visual=visual)
        out = {k: enc[k] for k in ("boxes", "relevance_logits", "relevance")}
        if answer_inputs is not None:
            memory, mask = enc["memory"], enc["memory_mask"]
            groups = self._groups(task, memory.device)
            parts = [self.text_heads[name](answer_inputs[idx], memory[idx], None if mask is None else mask[idx])
                     for name, idx in groups.items()]
            order = torch.cat(list(groups.values())).argsort()
            out["text_logits"] = torch.cat(parts)[order]  # grouped by head -> batch order (B,S,V)
        return out

    @torch.no_grad()
    def generate(self, *, query_ids: torch.Tensor, query_mask: torch.Tensor, task: list[str],
                 images: torch.Tensor | None = None, visual: dict | None = None, max_len: int | None = None,
                 beam_size: int = 1, allowed_words: torch.Tensor | None = None) -> dict:
        """`forward`'s outputs (no text logits) plus generated answers.

        max_len: largest number of words (default: each sample's task's answer_len);
        beam_size 1 = greedy; allowed_words (V,) bool (see gpvcli.model.decoding).
        Adds "tokens" (B,S) long (words, STOP, then PAD) and "scores" (B,) sequence log-probabilities.
        Call `model.eval()` first (dropout is not switched off here).
        """
        enc = self.encode(query_ids=query_ids, query_mask=query_mask, images=images, visual=visual)
        memory, mask = enc["memory"], enc["memory_mask"]
        lengths = torch.tensor([self.answer_len(t) if max_len is None else max_len for t in task],
                               device=memory.device)
        parts = []
        for name, idx in self._groups(task, memory.device).items():
            kwargs = {"max_len": lengths[idx], "allowed_words": allowed_words}
            sub_mask = None if mask is None else mask[idx]
            if beam_size == 1:
                tokens, scores = decoding.greedy(self.text_heads[name], memory[idx], sub_mask, **kwargs)
            else:
                tokens, scores = decoding.beam_search(self.text_heads[name], memory[idx], sub_mask,
                                                      beam_size=beam_size, **kwargs)
            parts.append((idx, tokens, scores))
        S = max(tokens.shape[1] for _, tokens, _ in parts)
        all_tokens = torch.full((len(task), S), PAD, dtype=torch.long, device=memory.device)
        all_scores = torch.zeros(len(task), device=memory.device)
        for idx, tokens, scores in parts:
            all_tokens[idx, :tokens.shape[1]] = tokens
            all_scores[idx] = scores
        out = {k: enc[k] for k in ("boxes", "relevance_logits", "relevance")}
        return {**out, "tokens": all_tokens, "scores": all_scores}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters for the optimizer (see `gpvcli.model.param_groups`)."""
        return param_groups(self, self.visual)

    def compile_parts(self, **options) -> None:
        """torch.compile (with `options`), in place, of the parts whose inputs are tensors only (visual and text
        encoders, co-attention, text heads): the routing by task (a list of strings, which a whole-model graph
        would be specialized on, batch by batch) stays eager, and the weights keep their names."""
        for part in (self.visual, self.text, self.coattention, *self.text_heads.values()):
            part.compile(**options)


class RegionPhraseModel(nn.Module):
    """GPV's modules before co-attention (the same objects as `gpv`'s), as the align stage trains them.

    images (B,3,H,W) normalized; phrase_ids, phrase_mask (P,T): P phrases, tokenized.
    Returns the visual encoder's output dict and the region-phrase logits (B,Q,P) of each region
    descriptor against each phrase's mean token (`gpv.phrase_score`).
    """

    def __init__(self, gpv: GPV):
        super().__init__()
        if gpv.phrase_score is None:
            raise GPVError("the region-phrase score needs model.phrase_grounding=true")
        self.visual, self.regions, self.text = gpv.visual, gpv.regions, gpv.text
        self.phrase_score = gpv.phrase_score

    def forward(self, images: torch.Tensor, phrase_ids: torch.Tensor,
                phrase_mask: torch.Tensor) -> tuple[dict, torch.Tensor]:
        visual = self.visual(images)
        regions = self.regions(visual["roi"], visual["states"])                         # (B,Q,D)
        phrases = mean_tokens(self.text(phrase_ids, phrase_mask), phrase_mask)           # (P,T,D) -> (P,D)
        return visual, self.phrase_score(regions, phrases)                               # (B,Q,P)


def build_model(cfg: ModelConfig, vocab: Vocab) -> GPV:
    """GPV of `cfg` with answer vocabulary `vocab`.

    frozen_text answer vectors are computed with the pretrained text encoder when
    `cfg.text.pretrained` is set, else drawn from a standard normal (kept frozen).
    """
    if cfg.visual.num_classes != 2:
        raise GPVError(f"GPV needs model.visual.num_classes=2 (object / no-object), got {cfg.visual.num_classes}")
    if cfg.focus_input and not cfg.grounded_memory:
        raise GPVError("model.focus_input reads the grounded memory's focus", hint="add --set model.grounded_memory=true")
    bert, text_report = build_bert(cfg.text)
    table = None
    if cfg.answer_vectors == "frozen_text":
        if cfg.text.pretrained is None:
            table = torch.randn(len(vocab), cfg.text.hidden)
        else:
            table = word_vectors(bert, build_tokenizer(cfg.text), vocab.words)
    heads = {name: TextHead(vocab_size=len(vocab), dim=cfg.hidden, layers=cfg.decoder_layers,
                            heads=cfg.decoder_heads, ffn=cfg.decoder_ffn, dropout=cfg.dropout,
                            answer_vectors=cfg.answer_vectors, positions=cfg.decoder_positions, word_table=table,
                            focus_input=cfg.focus_input)
             for name in cfg.text_head_names()}
    return GPV(
        visual=build_visual(cfg.visual),
        text=TextEncoder(bert=bert, dim=cfg.hidden, frozen=cfg.text.frozen, load_report=text_report),
        dim=cfg.hidden,
        coattention=CoAttention(layers=cfg.coattention_layers, dim=cfg.hidden, heads=cfg.coattention_heads,
                                ffn=cfg.coattention_ffn, dropout=cfg.dropout),
        text_heads=heads,
        relevance_conditioning=cfg.relevance_conditioning,
        mask_query_padding=cfg.mask_query_padding,
        max_answer_len=dict(cfg.max_answer_len),
        phrase_grounding=cfg.phrase_grounding,
        grounded_memory=cfg.grounded_memory,
    )
