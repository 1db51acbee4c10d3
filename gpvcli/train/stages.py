"""What each training stage brings to the trainer (`gpvcli.train.trainer`): its model, data, loss,
validation and checkpoint files, behind one interface, `Stage`.

    "gpv"         GPV on the prepared tasks (`GPVStage`)
    "align"       GPV's encoders, regions and words aligned by grounding category phrases (`AlignmentStage`)
    "detector"    stage 0: the visual encoder alone as an 80-class DETR (`DetectorStage`)
    "classifier"  the CNN backbone's warm-up as an 80-way classifier of the train crops (`CropClassifierStage`)

A new stage is one new class implementing `Stage`, named in `STAGES` (and in `TrainConfig.stage`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from gpvcli import boxes as box_ops
from gpvcli import io
from gpvcli.data import categories as cats
from gpvcli.data.dataset import Collator, GPVDataset, feature_key, input_pixels
from gpvcli.data.pretrain import CropDataset, DetectionDataset
from gpvcli.data.prompts import LOCALIZATION_PROMPTS
from gpvcli.data.store import SplitStore
from gpvcli.data.text import fill_template, mentions, normalize, object_template
from gpvcli.data.vocab import Vocab
from gpvcli.errors import GPVError, brief
from gpvcli.eval import runner
from gpvcli.eval.metrics import localization_ap
from gpvcli.model.checkpoint import WEIGHTS, save_model
from gpvcli.model.crop_classifier import CropClassifier
from gpvcli.model.feature_cache import FeatureCache, build_feature_cache, bytes_per_sample, visual_fingerprint
from gpvcli.model.gpv import RegionPhraseModel, build_model
from gpvcli.model.param_groups import param_groups
from gpvcli.model.text import build_tokenizer
from gpvcli.model.visual import WEIGHTS_FILE, VisualEncoder, build_visual, save_visual
from gpvcli.progress import progress_bar
from gpvcli.train import distributed
from gpvcli.train.config import RunConfig
from gpvcli.train.losses import GPVCriterion, box_losses, hungarian_loss, matched_phrases
from gpvcli.train.matcher import hungarian_match


class Stage(Protocol):
    """A training stage. The trainer builds the optimizer from `param_groups()`, runs `model` (wrapped in
    DDP when launched by torchrun) on batches of `train_set` made by `collate`, and calls the rest."""

    model: nn.Module                  # what the trainer runs and passes to `loss`
    visual: VisualEncoder             # the visual encoder inside `model` (freezing, gradient clipping)
    train_set: Dataset                # with `.tasks`, one task name per sample (the batch sampler reads it)
    collate: Callable[[list[dict]], dict]   # items -> batch, with batch["task"] (list[str])
    loss_weights: dict[str, float]    # weight of each loss term, to log its scaled value

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimizer group: "backbone", "detr", "rest"."""

    def start_epoch(self, epoch: int, *, frozen_visual: bool, cache_dir: Path, dist: distributed.Dist,
                    show_progress: bool) -> None:
        """Prepare the data and the visual encoder's freezing for `epoch`."""

    def loss(self, model: nn.Module, batch: dict, num_boxes: float | None) -> dict[str, torch.Tensor]:
        """Named unscaled loss terms and their weighted sum "loss" of one batch; `model` is `self.model`,
        perhaps DDP-wrapped; num_boxes is DETR's normalization over all ranks (None in one process)."""

    def validate(self, show_progress: bool) -> dict:
        """{"tasks": {metric: value}, "selection": float}, higher selection being better."""

    def save(self, folder: Path) -> None:
        """Write the stage's weights into checkpoint `folder`."""

    def load_weights(self, folder: Path) -> None:
        """Read back what `save` wrote."""


def loader_generator(seed: int, epoch: int) -> torch.Generator:
    """A DataLoader's own generator (its worker seeds), so that creating a loader never draws from the
    global RNG: a resumed run then draws exactly the dropout masks an uninterrupted one does."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch + 1)


def val_subset(size: int, samples: int, seed: int) -> np.ndarray:
    """Sorted positions of the fixed validation subset: `samples` of `size`, drawn with `seed`."""
    return np.sort(np.random.default_rng(seed).permutation(size)[:samples])


# ---- GPV ----------------------------------------------------------------------------------------

class GPVStage:
    """Stage "gpv": GPV on the prepared tasks; frozen-visual epochs may read a feature cache."""

    def __init__(self, cfg: RunConfig, data_dir: Path, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.vocab = Vocab.load(data_dir / "vocab.json")
        self.tokenizer = build_tokenizer(cfg.model.text, data_dir / "query_vocab.txt")
        self.model = build_model(cfg.model, self.vocab).to(device)
        if cfg.train.init_from:
            self.start_from(Path(cfg.train.init_from))
        if cfg.train.frozen_alignment:
            if not (cfg.train.init_from and cfg.model.phrase_grounding):
                raise GPVError("train.frozen_alignment keeps the alignment train.init_from starts from",
                               hint="set train.init_from to an align run's last/ and model.phrase_grounding=true")
            for part in (self.model.text, self.model.regions, self.model.phrase_score):
                part.requires_grad_(False)
        self.visual = self.model.visual
        self.train_store = SplitStore(data_dir / "train.h5")
        self.val_store = SplitStore(data_dir / "val.h5")
        t = cfg.train
        self.train_set = self.dataset(self.train_store, t.tasks)
        if len(self.train_set) == 0:
            raise GPVError(f"no training samples of tasks {t.tasks} in {data_dir}")
        val = self.dataset(self.val_store, t.tasks)
        self.val_set = self.dataset(self.val_store, t.tasks, val.indices[val_subset(len(val), t.val_samples, t.seed)])
        self.collate = Collator(self.tokenizer)
        self.criterion = GPVCriterion(task_weights=t.task_weights, box_weights=t.box_weights,
                                      cost_class=t.cost_class, cost_bbox=t.cost_bbox, cost_giou=t.cost_giou,
                                      no_object_weight=t.no_object_weight, include_pad=t.include_pad)
        self.loss_weights = self.criterion.weights
        self.features: FeatureCache | None = None

    # Modules that model.heads, model.relevance_conditioning and model.grounded_memory add or remove: a model
    # that differs from train.init_from's only there starts them as initialised (the align stage leaves
    # them untrained).
    VARIED_MODULES = ("text_heads.", "conditioning.", "grounded_memory.")

    def start_from(self, folder: Path) -> None:
        """Every weight from the GPV checkpoint in `folder` (e.g. the align stage's last/), but those of
        VARIED_MODULES that this model's config names differently."""
        try:
            missing, unexpected = self.model.load_state_dict(load_file(folder / WEIGHTS), strict=False)
            other = [k for k in (*missing, *unexpected) if not k.startswith(self.VARIED_MODULES)]
            if other:
                raise RuntimeError(f"{len(other)} weights differ, e.g. {other[0]}")
        except (OSError, RuntimeError) as e:
            raise GPVError(f"train.init_from={folder} does not hold this model's weights ({brief(e)})",
                           hint="give the last/ or best/ of an align or gpv run of the same preset and data")

    def dataset(self, store: SplitStore, tasks: list[str], indices: np.ndarray | None = None) -> GPVDataset:
        if indices is None:
            indices = np.flatnonzero(np.isin(np.asarray(store.tasks), tasks))
        return GPVDataset(store, self.vocab, image_size=tuple(self.cfg.model.visual.image_size),
                          max_answer_len=self.cfg.model.max_answer_len, seed=self.cfg.train.seed, indices=indices)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return self.model.param_groups()

    def start_epoch(self, epoch: int, *, frozen_visual: bool, cache_dir: Path, dist: distributed.Dist,
                    show_progress: bool) -> None:
        """Freeze (and read cached features, from memory within train.cache_memory_gb) or unfreeze the visual
        encoder; seed the epoch's VQA targets."""
        self.visual.set_trainable(not frozen_visual)
        use_cache = frozen_visual and self.cfg.train.cache_features
        if use_cache and self.features is None:
            self.features = ensure_feature_cache(self.visual, self.cfg, self.train_set, cache_dir / "train.h5",
                                                 dist, show_progress)
            if self.features.path.stat().st_size <= self.cfg.train.cache_memory_gb * 1e9:
                self.features.load()
        self.train_set.use_features = use_cache
        self.train_set.features = self.collate.features = self.features if use_cache else None
        self.train_set.set_epoch(epoch)

    def loss(self, model: nn.Module, batch: dict, num_boxes: float | None) -> dict:
        inputs = runner.model_inputs(batch, self.device, encoder=self.visual,
                                     channels_last=self.cfg.train.channels_last)
        outputs = model(**inputs, answer_inputs=batch["answer_inputs"].to(self.device, non_blocking=True))
        batch = {**batch, "text_targets": batch["text_targets"].to(self.device, non_blocking=True)}
        return self.criterion(outputs, batch, num_boxes=num_boxes)

    def validate(self, show_progress: bool = False) -> dict:
        """Task metrics on the fixed validation subset, and the selection metric (their sum)."""
        batches = runner.task_batches(self.val_set.tasks, self.cfg.train.val_batch_size)
        loader = DataLoader(self.val_set, batch_sampler=batches, collate_fn=Collator(self.tokenizer),
                            generator=loader_generator(self.cfg.train.seed, -1),
                            **loader_options(self.cfg.train, self.device))
        with progress_bar(show_progress) as progress:
            task = progress.add_task("validating", total=len(self.val_set), info="")
            preds = runner.predict(self.model, loader, self.vocab, device=self.device,
                                   progress=lambda n: progress.advance(task, n))
        table, _ = runner.score(self.val_store, preds)
        return {"tasks": table, "selection": runner.selection_metric(table)}

    def save(self, folder: Path) -> None:
        save_model(folder, self.model, self.cfg.model, self.vocab, self.tokenizer)

    def load_weights(self, folder: Path) -> None:
        self.model.load_state_dict(load_file(folder / WEIGHTS))


def loader_options(t, device: torch.device) -> dict:
    """DataLoader keywords of a `TrainConfig`'s workers: prefetching workers, and pinned host memory for the
    non-blocking copies to a CUDA device. Workers live for one loader (an epoch): each epoch's dataset state
    (its epoch, for the VQA target draws) reaches fresh workers."""
    options = {"num_workers": t.num_workers, "pin_memory": device.type == "cuda"}
    if t.num_workers:
        options["prefetch_factor"] = t.prefetch
    return options


def cache_plan(dataset: GPVDataset, max_bytes: float, per_key: int) -> tuple[dict[str, int], int]:
    """The keys to cache (key -> a sample index that shows it), whole images first, then crops, in sample
    order, while they fit in `max_bytes` (0 = all); and how many keys are left to compute live."""
    keys: dict[str, int] = {}
    for i in dataset.indices.tolist():
        keys.setdefault(feature_key(dataset.store, i), i)
    ordered = sorted(keys, key=lambda k: not k.startswith("img:"))      # stable: sample order within each
    fits = len(ordered) if not max_bytes else int(max_bytes // per_key)
    return {k: keys[k] for k in ordered[:fits]}, max(0, len(ordered) - fits)


def ensure_feature_cache(visual: VisualEncoder, cfg: RunConfig, dataset: GPVDataset, path: Path,
                         dist: distributed.Dist, show_progress: bool) -> FeatureCache:
    """The feature cache of `dataset`'s images and crops for this visual encoder (in `train.cache_form`, within
    `train.cache_max_gb`), built on rank 0 if needed (absent, unreadable, made by another encoder, in another
    form or missing some keys: a cache is derived data, rebuilt rather than refused). Its images are read by
    DataLoader workers."""
    t = cfg.train
    v = cfg.model.visual
    per_key = bytes_per_sample(queries=v.num_queries, state_dim=visual.state_dim, roi_dim=visual.roi_dim,
                               classes=v.num_classes, form=t.cache_form, colour_dim=visual.colour_dim)
    keys, _ = cache_plan(dataset, t.cache_max_gb * 1e9, per_key)

    def usable() -> bool:
        try:
            cache = FeatureCache(path, None)
        except GPVError:
            return False
        # a cache of more entries serves too (the ablation's shared cache of the four-task train set)
        return cache.fingerprint == fingerprint and cache.form == t.cache_form and set(keys) <= set(cache.keys())

    fingerprint = visual_fingerprint(visual, cfg.model.visual)
    if dist.main and not usable():
        if not keys:
            raise GPVError(f"train.cache_max_gb={t.cache_max_gb} holds no cache entry ({per_key} bytes each)",
                           hint="raise it, or set train.cache_features=false")
        images = _KeyImages(dataset, list(keys.items()))
        loader = DataLoader(images, batch_size=None, **loader_options(t, next(visual.parameters()).device))
        build_feature_cache(visual, loader, path, fingerprint=fingerprint, show_progress=show_progress,
                            total=len(keys), batch_size=t.val_batch_size, form=t.cache_form)
    distributed.barrier(dist)
    return FeatureCache(path, fingerprint)


class _KeyImages(Dataset):
    """(key, uint8 pixels) of each (key, sample index) pair: the images a feature cache is built from."""

    def __init__(self, dataset: GPVDataset, keys: list[tuple[str, int]]):
        self.dataset, self.keys = dataset, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, k: int) -> tuple[str, torch.Tensor]:
        key, i = self.keys[k]
        return key, input_pixels(self.dataset.store, i, self.dataset.image_size)


# ---- the visual encoder alone ---------------------------------------------------------------------

class _VisualStage:
    """What the two visual-encoder pretraining stages share: the encoder with an 80-category (+ no-object)
    class head, built from `model.visual`, trained throughout, and saved as the visual/ folder that
    `model.visual.pretrained` takes."""

    def __init__(self, cfg: RunConfig, data_dir: Path, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.num_classes = len(cats.categories())              # 80; the class head adds no-object (last)
        self.visual_cfg = dataclasses.replace(cfg.model.visual, num_classes=self.num_classes + 1)
        self.visual = build_visual(self.visual_cfg).to(device)
        self.visual.set_trainable(True)
        self.label_of = {c.id: k for k, c in enumerate(cats.categories())}
        self.image_size = tuple(cfg.model.visual.image_size)
        self.train_store = SplitStore(data_dir / "train.h5")
        self.val_store = SplitStore(data_dir / "val.h5")
        self.loss_weights = cfg.train.box_weights

    def _val_subset(self, val: Dataset) -> Subset:
        t = self.cfg.train
        return Subset(val, val_subset(len(val), t.val_samples, t.seed).tolist())

    def start_epoch(self, epoch: int, *, frozen_visual: bool, cache_dir: Path, dist: distributed.Dist,
                    show_progress: bool) -> None:
        if frozen_visual:
            raise GPVError(f"the {self.cfg.train.stage} stage trains the visual encoder: "
                           "set train.frozen_visual_epochs=0")

    def save(self, folder: Path) -> None:
        with io.atomic_dir(folder) as tmp:
            save_visual(self.visual, self.visual_cfg, tmp)

    def load_weights(self, folder: Path) -> None:
        self.visual.load_state_dict(load_file(folder / WEIGHTS_FILE))


class CropClassifierStage(_VisualStage):
    """Stage "classifier", a warm-up before the detector: the CNN backbone alone learns to name the object
    crops of the split's train cls samples (80-way; for COCO-SCE the prepared train split has no H_cls,loc
    crops), through a linear head on its globally averaged map, since a from-scratch DETR class head stays
    near chance. The detector (`model.visual.pretrained` = this run's last/) starts from the backbone it
    leaves."""

    HEAD_FILE = "crop_head.safetensors"

    def __init__(self, cfg: RunConfig, data_dir: Path, device: torch.device):
        super().__init__(cfg, data_dir, device)
        self.head = nn.Linear(self.visual.map_dim, self.num_classes).to(device)
        self.model = CropClassifier(self.visual, self.head)
        size = tuple(cfg.model.visual.region_crops or self.image_size)     # the regions' crops, when used
        self.train_set = CropDataset(self.train_store, self.label_of, size)
        self.val_set = self._val_subset(CropDataset(self.val_store, self.label_of, size))
        self.collate = CropDataset.collate

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return param_groups(self.model, self.visual, detr=False)

    def loss(self, model: nn.Module, batch: dict, num_boxes: float | None) -> dict:
        logits = model(batch["images"].to(self.device))
        loss = nn.functional.cross_entropy(logits.float(), batch["labels"].to(self.device))
        return {"loss_crop": loss, "loss": loss}

    @torch.no_grad()
    def validate(self, show_progress: bool = False) -> dict:
        """Top-1 accuracy of the crop classifier on the fixed validation subset ("crop_acc", the selection)."""
        self.model.eval()
        loader = DataLoader(self.val_set, batch_size=self.cfg.train.val_batch_size, collate_fn=self.collate)
        right = total = 0
        for batch in loader:
            pred = self.model(batch["images"].to(self.device)).argmax(-1).cpu()
            right += int((pred == batch["labels"]).sum())
            total += len(pred)
        self.model.train()
        acc = right / max(1, total)
        return {"tasks": {"crop_acc": acc}, "selection": acc}

    def save(self, folder: Path) -> None:
        super().save(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        with io.atomic_path(folder / self.HEAD_FILE) as tmp:
            save_file(state, str(tmp))

    def load_weights(self, folder: Path) -> None:
        super().load_weights(folder)
        self.head.load_state_dict(load_file(folder / self.HEAD_FILE))


class DetectorStage(_VisualStage):
    """Stage 0: the visual encoder alone as an 80-class DETR on the split's train images (for COCO-SCE the
    prepared train split has no H_cls,loc boxes). Its checkpoint's visual/ folder is what
    `model.visual.pretrained` takes."""

    def __init__(self, cfg: RunConfig, data_dir: Path, device: torch.device):
        super().__init__(cfg, data_dir, device)
        self.model = self.visual
        self.train_set = DetectionDataset(self.train_store, self.label_of, self.image_size)
        self.val_set = self._val_subset(DetectionDataset(self.val_store, self.label_of, self.image_size))
        self.collate = DetectionDataset.collate

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return param_groups(self.model, self.visual)

    def loss(self, model: nn.Module, batch: dict, num_boxes: float | None) -> dict:
        out = model(batch["images"].to(self.device))
        targets = [{"boxes": b.to(self.device), "labels": lab.to(self.device)}
                   for b, lab in zip(batch["boxes"], batch["labels"])]
        t = self.cfg.train
        terms = hungarian_loss(out["objectness"], out["boxes"], targets, cost_class=t.cost_class,
                               cost_bbox=t.cost_bbox, cost_giou=t.cost_giou, no_object_weight=t.no_object_weight,
                               num_classes=self.num_classes, num_boxes=num_boxes)
        terms["loss"] = sum(t.box_weights[k] * v for k, v in terms.items())
        return terms

    @torch.no_grad()
    def validate(self, show_progress: bool = False) -> dict:
        """Mean per-(image, category) AP@0.5 with class scores ("ap50"), and class-agnostic AP@0.5
        with objectness = 1 - p(no-object) ("ap50_agnostic"). Selection: ap50."""
        self.model.eval()
        loader = DataLoader(self.val_set, batch_size=self.cfg.train.val_batch_size, collate_fn=self.collate,
                            generator=loader_generator(self.cfg.train.seed, -1))
        aware, agnostic = [], []
        for batch in loader:
            out = self.model(batch["images"].to(self.device))
            probs = out["objectness"].float().softmax(-1).cpu()                    # (B, Q, K+1)
            pred = box_ops.cxcywh_to_xyxy(out["boxes"].float().cpu())             # (B, Q, 4) normalized
            for b, (gt, labels) in enumerate(zip(batch["boxes"], batch["labels"])):
                gt_xyxy = box_ops.cxcywh_to_xyxy(gt)
                agnostic.append(localization_ap(pred[b], 1 - probs[b, :, -1], gt_xyxy))
                for c in labels.unique().tolist():
                    aware.append(localization_ap(pred[b], probs[b, :, c], gt_xyxy[labels == c]))
        self.model.train()
        table = {"ap50": float(np.mean(aware)) if aware else 0.0,
                 "ap50_agnostic": float(np.mean(agnostic)) if agnostic else 0.0}
        return {"tasks": table, "selection": table["ap50"]}


# ---- regions and words -----------------------------------------------------------------------------

class AlignmentStage:
    """Stage "align": detection posed as phrase grounding, between the backbone warm-up (or the detector) and
    GPV. GPV's own visual encoder, region descriptor and text encoder are trained together: each DETR query
    predicts a box and objectness (the 2-way head GPV adds to relevance), and its region descriptor is
    scored against the text encoder's reading of every training category named in a Table 4 localization
    prompt (`model.phrase_grounding`'s RegionPhraseScore): each query matched to a box learns, by
    cross-entropy over the named categories, which one its box shows (contrastive region-phrase alignment,
    as MDETR's; a sigmoid focal loss over phrases, GLIP's, left every phrase embedding alike within 600 steps
    here, since its negatives carry almost no gradient). The images are the split's train
    images with their localization boxes (COCO-SCE has no H_cls,loc boxes there), and only the categories
    that have boxes are named. With `train.align_questions` > 0, that share of steps phrases the categories
    as the split's training questions do ("What color is the [OBJECT]?", from every question naming one
    category, drawn as often as asked), naming only categories some training question names (COCO-SCE
    keeps H_vqa,cap out of them): a region-query score taught on localization prompts alone does not find
    the thing a question names. The checkpoint is a whole GPV checkpoint (co-attention and heads as
    initialised) that the GPV stage starts from through `train.init_from`."""

    PHRASE_WEIGHT = 1.0     # as DETR's class term

    def __init__(self, cfg: RunConfig, data_dir: Path, device: torch.device):
        if not cfg.model.phrase_grounding:
            raise GPVError("the align stage trains the region-phrase score", hint="add --set model.phrase_grounding=true")
        self.cfg, self.device = cfg, device
        self.vocab = Vocab.load(data_dir / "vocab.json")
        self.tokenizer = build_tokenizer(cfg.model.text, data_dir / "query_vocab.txt")
        self.gpv = build_model(cfg.model, self.vocab).to(device)       # what is saved: a whole GPV checkpoint
        self.model = RegionPhraseModel(self.gpv)
        self.visual = self.gpv.visual
        self.visual.set_trainable(True)
        label_of = {c.id: k for k, c in enumerate(cats.categories())}
        image_size = tuple(cfg.model.visual.image_size)
        self.train_store = SplitStore(data_dir / "train.h5")
        self.val_store = SplitStore(data_dir / "val.h5")
        self.train_set = DetectionDataset(self.train_store, label_of, image_size)
        val = DetectionDataset(self.val_store, label_of, image_size)
        self.val_set = Subset(val, val_subset(len(val), cfg.train.val_samples, cfg.train.seed).tolist())
        self.collate = DetectionDataset.collate
        named = sorted({int(k) for _, labels in self.train_set.targets for k in labels.tolist()})
        self.localization = PhraseForms(LOCALIZATION_PROMPTS, [1] * len(LOCALIZATION_PROMPTS), named)
        self.questions = question_forms(self.train_store, named) if cfg.train.align_questions > 0 else None
        if cfg.train.align_questions > 0 and self.questions is None:
            raise GPVError("train.align_questions: no training question names a category with boxes",
                           hint="leave train.align_questions at 0 for these data")
        self.loss_weights = {**cfg.train.box_weights, "loss_phrase": self.PHRASE_WEIGHT}

    start_epoch = _VisualStage.start_epoch

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return param_groups(self.model, self.visual)

    def phrases(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`texts` tokenized: ids and mask (P, T)."""
        enc = self.tokenizer(texts, padding=True, return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def loss(self, model: nn.Module, batch: dict, num_boxes: float | None) -> dict:
        t = self.cfg.train
        asked = self.questions is not None and float(torch.rand(())) < t.align_questions
        forms = self.questions if asked else self.localization
        out, logits = model(batch["images"].to(self.device), *self.phrases(forms.draw()))
        targets = [{"boxes": b.to(self.device), "labels": torch.zeros(len(b), dtype=torch.long, device=self.device)}
                   for b in batch["boxes"]]
        indices = hungarian_match(out["objectness"], out["boxes"], targets, cost_class=t.cost_class,
                                  cost_bbox=t.cost_bbox, cost_giou=t.cost_giou)
        terms = box_losses(out["objectness"], out["boxes"], targets, indices, no_object_weight=t.no_object_weight,
                           num_classes=1, num_boxes=num_boxes)
        sample, query, phrase = matched_phrases(indices, batch["labels"], forms.phrase_of)
        terms["loss_phrase"] = F.cross_entropy(logits[sample.to(self.device), query.to(self.device)].float(),
                                               phrase.to(self.device)) if len(phrase) else logits.sum() * 0
        terms["loss"] = sum(self.loss_weights[k] * v for k, v in terms.items())
        return terms

    @torch.no_grad()
    def validate(self, show_progress: bool = False) -> dict:
        """Mean per-(image, named category) AP@0.5 of the boxes ranked by objectness log-odds plus the
        region-phrase logit of the category in the first localization prompt ("ap50", the selection: the
        relevance GPV starts from), and class-agnostic AP@0.5 by objectness ("ap50_agnostic")."""
        self.model.eval()
        loader = DataLoader(self.val_set, batch_size=self.cfg.train.val_batch_size, collate_fn=self.collate)
        aware, agnostic = [], []
        for batch in loader:
            out, logits = self.model(batch["images"].to(self.device), *self.phrases(self.localization.fill(0)))
            obj = out["objectness"].float().log_softmax(-1).cpu()                        # (B, Q, 2)
            logits = logits.float().cpu() + (obj[..., 0] - obj[..., 1])[..., None]     # (B, Q, P)
            pred = box_ops.cxcywh_to_xyxy(out["boxes"].float().cpu())
            for b, (gt, labels) in enumerate(zip(batch["boxes"], batch["labels"])):
                gt_xyxy = box_ops.cxcywh_to_xyxy(gt)
                agnostic.append(localization_ap(pred[b], obj[b, :, 0].exp(), gt_xyxy))
                for c in labels.unique().tolist():
                    if (p := int(self.localization.phrase_of[c])) >= 0:
                        aware.append(localization_ap(pred[b], logits[b, :, p], gt_xyxy[labels == c]))
        self.model.train()
        table = {"ap50": float(np.mean(aware)) if aware else 0.0,
                 "ap50_agnostic": float(np.mean(agnostic)) if agnostic else 0.0}
        return {"tasks": table, "selection": table["ap50"]}

    def save(self, folder: Path) -> None:
        save_model(folder, self.gpv, self.cfg.model, self.vocab, self.tokenizer)

    def load_weights(self, folder: Path) -> None:
        self.gpv.load_state_dict(load_file(folder / WEIGHTS))


class PhraseForms:
    """Templates holding "[OBJECT]" (or "[OBJECTS]", `text.object_template`), each drawn in proportion to its
    weight and filled with every category of `labels` (category indices, in COCO's order): the phrases
    (P of them) one alignment step scores every region against; `phrase_of` (80,) gives each category
    index its phrase (-1: not among them)."""

    def __init__(self, templates: list[str] | tuple[str, ...], weights: list[float], labels: list[int]):
        self.templates = list(templates)
        self.weights = torch.tensor(weights, dtype=torch.double)
        self.names = [cats.categories()[k].name for k in labels]
        self.phrase_of = torch.full((len(cats.categories()),), -1, dtype=torch.long)
        self.phrase_of[labels] = torch.arange(len(labels))

    def fill(self, template: int) -> list[str]:
        return [fill_template(self.templates[template], n) for n in self.names]

    def draw(self) -> list[str]:
        return self.fill(int(torch.multinomial(self.weights, 1)))


def question_forms(store: SplitStore, labels: list[int]) -> PhraseForms | None:
    """The phrase forms of `store`'s VQA questions that name one category (each weighted by how often it is
    asked), filled with the categories of `labels` that some question names; None when there are none."""
    asked, templates = set(), Counter()
    for query, task in zip(store.query, store.tasks):
        if task == "vqa":
            asked.update(mentions(normalize(query)))
            if (template := object_template(query)) is not None:
                templates[template] += 1
    labels = [k for k in labels if cats.categories()[k].name in asked]
    if not templates or not labels:
        return None
    return PhraseForms(list(templates), list(templates.values()), labels)


STAGES: dict[str, Callable[[RunConfig, Path, torch.device], Stage]] = {
    "gpv": GPVStage, "align": AlignmentStage, "detector": DetectorStage, "classifier": CropClassifierStage}
