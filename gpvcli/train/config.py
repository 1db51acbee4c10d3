"""The training configuration (`train:` section of a preset) and the full run configuration.

A run's config.yaml holds both sections: `model:` (gpvcli.model.config.ModelConfig) and `train:`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gpvcli.config import from_dict, load_with_overrides
from gpvcli.data.prompts import TASKS
from gpvcli.errors import GPVError
from gpvcli.model.config import ModelConfig
from gpvcli.train.losses import DEFAULT_BOX_WEIGHTS, DEFAULT_TASK_WEIGHTS, NO_OBJECT_WEIGHT
from gpvcli.train.matcher import COST_BBOX, COST_CLASS, COST_GIOU


def _tasks() -> list[str]:
    return ["vqa", "cap", "loc", "cls"]


@dataclass
class TrainConfig:
    """How to train (DESIGN.md section 3; defaults = the paper's recipe).

    stage ("gpv" | "align" | "detector" | "classifier", "gpv"): train GPV; or align regions and words
        before it (detection posed as grounding of category phrases, for encoders trained from
        scratch; needs model.phrase_grounding); or pretrain the visual encoder alone as an 80-class
        DETR detector (stage 0; COCO-SCE drops H_cls,loc boxes); or warm up its CNN backbone as an
        80-way classifier of the train cls crops (before the detector, from scratch).
    init_from (str | None, None): a GPV checkpoint folder (the last/ or best/ of an align or gpv run
        of the same preset and data) whose weights start the model of stage gpv.
    align_questions (float, 0): stage align: the share of steps whose phrases are the training split's
        VQA questions that name one category, each category put in the place of the one it names (the
        rest are Table 4 localization prompts), so that words are found in the image however a task
        phrases them; only categories some training question names are put in a question.
    frozen_alignment (bool, False): stage gpv: the text encoder, the region descriptor and the
        region-query score (`model.phrase_grounding`) keep the weights train.init_from gives them (the align
        stage's): otherwise the text losses move a question's embedding away from the regions it names.
    tasks (list[str], [vqa, cap, loc, cls]): the tasks trained (refexp may be added).
    epochs (int, 40): passes over the training samples.
    batch_size (int, 120): global batch (over all processes and accumulation steps).
    grad_accum (int, 1): micro-batches per optimizer step.
    lr (float, 1e-4): AdamW learning rate.
    backbone_lr (float, 1e-5): learning rate of the CNN backbone.
    weight_decay (float, 1e-4): AdamW weight decay.
    warmup (float, 0.1): fraction of steps of linear warm-up; then linear decay to 0.
    detr_clip (float, 0.1): gradient-norm clip of the visual encoder's parameters (0 = none).
    frozen_visual_epochs (int, 10): first epochs with the visual encoder frozen.
    cache_features (bool, True): while the visual encoder is frozen, read its outputs from a
        feature cache (computed once per run) instead of running it.
    cache_form ("float16" | "int8", "float16"): how the cache stores region vectors: float16, or int8
        with a float32 scale per vector (half the bytes; `gpvcli.model.feature_cache`).
    cache_max_gb (float, 0): a bound on the cache's size in GB (1e9 bytes; 0 = none): whole images are
        cached first, then classification crops, while they fit; the frozen encoder computes the
        rest live in each batch.
    cache_memory_gb (float, 2): a cache file up to this size in GB is read into memory once per process
        (random reads of single rows from HDF5 can take longer than a small model's step); a larger one
        is read from disk row by row.
    sampling ("uniform" | "task" | "balanced", "uniform"): mini-batch sampling (seed Sec. 2).
    task_weights (dict, {vqa: 1, cap: 0.05, cls: 1}): text-loss weight per task.
    box_weights (dict, {loss_ce: 1, loss_bbox: 5, loss_giou: 2}): box-loss weights.
    cost_class, cost_bbox, cost_giou (float, 1, 5, 2): Hungarian matching costs.
    no_object_weight (float, 0.1): cross-entropy weight of the no-object class.
    include_pad (bool, False): count PAD positions in the text loss (GPV-1's quirk).
    precision ("fp32" | "bf16", "bf16"): autocast dtype (bf16 on GPU; optional on CPU).
    seed (int, 0): seeds model init, sampling and VQA target draws.
    num_workers (int, 0): DataLoader worker processes (they decode and resize the images, tokenize
        and read the feature cache; batches go to a CUDA device through pinned memory).
    prefetch (int, 4): batches each worker prepares ahead (with num_workers > 0).
    compile (bool, False): run the model through torch.compile (the checkpoints stay the plain model's).
    channels_last (bool, False): images in channels-last memory for the CNN.
    threads (int, 0): torch CPU threads (0 = torch's default).
    val_samples (int, 1000): size of the fixed validation subset scored each epoch.
    val_batch_size (int, 64): batch size of validation decoding.
    save_every (int, 0): also save last/ every this many optimizer steps (0 = each epoch).
    max_steps (int, 0): stop after this many optimizer steps (0 = no cap); the schedule
        still spans them, so a capped run is a complete, shorter run.
    log_every (int, 10): optimizer steps between metrics.jsonl lines.
    device (str, "auto"): "auto" (CUDA when present), "cpu" or "cuda".
    """

    stage: Literal["gpv", "align", "detector", "classifier"] = "gpv"
    init_from: str | None = None
    align_questions: float = 0.0
    frozen_alignment: bool = False
    tasks: list[str] = field(default_factory=_tasks)
    epochs: int = 40
    batch_size: int = 120
    grad_accum: int = 1
    lr: float = 1e-4
    backbone_lr: float = 1e-5
    weight_decay: float = 1e-4
    warmup: float = 0.1
    detr_clip: float = 0.1
    frozen_visual_epochs: int = 10
    cache_features: bool = True
    cache_form: Literal["float16", "int8"] = "float16"
    cache_max_gb: float = 0.0
    cache_memory_gb: float = 2.0
    sampling: Literal["uniform", "task", "balanced"] = "uniform"
    task_weights: dict = field(default_factory=lambda: dict(DEFAULT_TASK_WEIGHTS))
    box_weights: dict = field(default_factory=lambda: dict(DEFAULT_BOX_WEIGHTS))
    cost_class: float = COST_CLASS
    cost_bbox: float = COST_BBOX
    cost_giou: float = COST_GIOU
    no_object_weight: float = NO_OBJECT_WEIGHT
    include_pad: bool = False
    precision: Literal["fp32", "bf16"] = "bf16"
    seed: int = 0
    num_workers: int = 0
    prefetch: int = 4
    compile: bool = False
    channels_last: bool = False
    threads: int = 0
    val_samples: int = 1000
    val_batch_size: int = 64
    save_every: int = 0
    max_steps: int = 0
    log_every: int = 10
    device: str = "auto"

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise GPVError(f"config train.tasks={self.tasks}: unknown task {unknown[0] if unknown else '(none)'}",
                           hint=f"tasks: {', '.join(TASKS)}")
        if self.batch_size < 1 or self.grad_accum < 1 or self.batch_size % self.grad_accum:
            raise GPVError(f"config train.batch_size={self.batch_size} must be a positive multiple of "
                           f"train.grad_accum={self.grad_accum}")
        if not 0 <= self.align_questions <= 1:
            raise GPVError(f"config train.align_questions={self.align_questions} must be in [0, 1]")
        if self.device not in ("auto", "cpu", "cuda"):
            raise GPVError(f"config train.device={self.device!r}: use auto, cpu or cuda")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_run_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A preset (or YAML file) with `section.key=value` overrides, checked strictly."""
    return from_dict(RunConfig, load_with_overrides(name_or_path, overrides))
