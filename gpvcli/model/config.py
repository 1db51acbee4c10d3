"""The model configuration: typed dataclasses read from the `model:` section of a preset.

Every field states its type, default and meaning. `load_model_config("tiny",
["model.hidden=64"])` reads a preset (or a YAML path), applies overrides and
checks every key and type (`gpvcli.config.from_dict`). Other sections of a
preset (train:, ...) are ignored here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gpvcli.config import from_dict, load_with_overrides
from gpvcli.data.prompts import TEXT_TASKS
from gpvcli.errors import GPVError
from gpvcli.model.visual import VisualConfig


@dataclass
class TextConfig:
    """The BERT text encoder.

    pretrained (str | None, None): a transformers BERT to start from: a local folder
        or a hub name with an optional @revision (gpvcli.model.pretrained resolves it,
        from the local cache first); None = random init from the sizes below and a
        WordPiece tokenizer over the prepared query_vocab.txt. With a name, the sizes
        below must match the model's and every BERT tensor must load.
    frozen (bool, True): no gradients to BERT, which stays in eval mode.
    hidden (int, 768): BERT hidden size (E).
    layers (int, 12): BERT layers.
    heads (int, 12): BERT attention heads.
    intermediate (int, 3072): BERT FFN size.
    vocab_size (int, 30522): BERT word-piece vocabulary; at least the tokenizer's size.
    max_position (int, 512): BERT positions, the longest query in tokens.
    """

    pretrained: str | None = None
    frozen: bool = True
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    vocab_size: int = 30522
    max_position: int = 512


def _default_max_answer_len() -> dict:
    return {"vqa": 5, "cls": 5, "cap": 20, "default": 5}


@dataclass
class ModelConfig:
    """GPV-1 (DESIGN.md section 2). Defaults are the paper's sizes except where noted.

    visual (VisualConfig): the DETR visual encoder (gpvcli.model.visual).
    text (TextConfig): the BERT text encoder.
    hidden (int, 768): D, the width of co-attention, relevance and the text decoder.
    coattention_layers (int, 3): ViLBERT-style co-attention layers.
    coattention_heads (int, 16): their attention heads.
    coattention_ffn (int, 3072): their FFN size (GELU).
    decoder_layers (int, 3): text decoder layers.
    decoder_heads (int, 8): text decoder attention heads.
    decoder_ffn (int, 2048): text decoder FFN size (ReLU).
    dropout (float, 0.1): dropout in co-attention and the text decoder.
    answer_vectors ("frozen_text" | "learned", "frozen_text"): word vectors of the
        text decoder. frozen_text = each answer word's frozen text-encoder vector
        (random normal when text.pretrained is None), with a learned Linear on the
        input side and another on the output side (GPV-1); learned = ordinary
        learned input and output embeddings.
    relevance_conditioning (bool, True): add p_rel * t_rel + p_irr * t_irr to each
        region before text decoding (Table 2 ablates it).
    heads ("modality" | "task", "modality"): one text head shared by all tasks
        (GPV-1), or one per text task (vqa, cap, cls; Table 3). Boxes keep one head.
    max_answer_len (dict, {vqa: 5, cls: 5, cap: 20, default: 5}): largest number of
        generated words per task; "default" serves other tasks.
    mask_query_padding (bool, True): regions and the text decoder ignore query
        padding tokens. GPV-1 did not mask them (false reproduces that).
    decoder_positions (bool, True): add sinusoidal position encodings to the text
        decoder's inputs. GPV-1 had none (false reproduces that); word order in
        captions is easier to learn with them.
    phrase_grounding (bool, False): add to each region's relevant logit a score of how well the
        region matches the query as the text encoder reads it (scaled cosine of the region descriptor
        and the mean query token, before co-attention; see heads.RegionPhraseScore). Not in GPV-1;
        the tiny preset uses it with the alignment stage, which trains the same score on category
        phrases, so that GPV starts with words and regions in one space.
    grounded_memory (bool, False): the text decoder's memory also holds the region descriptors
        before co-attention, each marked by its region-query score, and their score-weighted mean
        (heads.GroundedMemory). Needs phrase_grounding. Not in GPV-1.
    focus_input (bool, False): each text head also adds a Linear of the grounded memory's focus to
        every input word vector (heads.TextHead). Needs grounded_memory. Not in GPV-1.
    """

    visual: VisualConfig = field(default_factory=VisualConfig)
    text: TextConfig = field(default_factory=TextConfig)
    hidden: int = 768
    coattention_layers: int = 3
    coattention_heads: int = 16
    coattention_ffn: int = 3072
    decoder_layers: int = 3
    decoder_heads: int = 8
    decoder_ffn: int = 2048
    dropout: float = 0.1
    answer_vectors: Literal["frozen_text", "learned"] = "frozen_text"
    relevance_conditioning: bool = True
    heads: Literal["modality", "task"] = "modality"
    max_answer_len: dict = field(default_factory=_default_max_answer_len)
    mask_query_padding: bool = True
    decoder_positions: bool = True
    phrase_grounding: bool = False
    grounded_memory: bool = False
    focus_input: bool = False

    def __post_init__(self) -> None:
        lens = self.max_answer_len
        bad = [k for k, v in lens.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad or "default" not in lens:
            raise GPVError(f"config model.max_answer_len={lens} needs positive integers and a 'default' key")
        for width, dim, name, heads in (("hidden", self.hidden, "coattention_heads", self.coattention_heads),
                                        ("hidden", self.hidden, "decoder_heads", self.decoder_heads),
                                        ("text.hidden", self.text.hidden, "text.heads", self.text.heads)):
            if dim % heads:
                raise GPVError(f"config model.{width}={dim} is not divisible by model.{name}={heads}")

    def text_head_names(self) -> tuple[str, ...]:
        """Names of the text heads: ("text",) per modality, TEXT_TASKS per task."""
        return ("text",) if self.heads == "modality" else TEXT_TASKS


def without_pretrained(cfg: ModelConfig) -> ModelConfig:
    """A copy of `cfg` that builds randomly initialised encoders (for loading saved weights or counting)."""
    return dataclasses.replace(cfg, visual=dataclasses.replace(cfg.visual, pretrained=None),
                               text=dataclasses.replace(cfg.text, pretrained=None))


def load_model_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ModelConfig:
    """The `model:` section of a preset name or YAML path, with `model.key=value` overrides applied.

    Overrides of other sections are applied to them and ignored here.
    """
    model = load_with_overrides(name_or_path, overrides).get("model")
    if not isinstance(model, dict):
        raise GPVError(f"config {name_or_path} has no model: section")
    return from_dict(ModelConfig, model, "model")
