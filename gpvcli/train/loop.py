"""`gpv train`: the training loop, checkpoints and resume, for GPV (stage "gpv"), detector pretraining
(stage "detector") and the backbone's crop-classification warm-up (stage "classifier").

A run folder `runs/NAME/` holds:
    config.yaml      the resolved run config (model + train), written when the run starts
    metrics.jsonl    one JSON line per log step (every loss term unscaled and scaled, lr, samples/s)
                     and per validation (the task metrics and the selection metric)
    last/, best/     checkpoints: the model (safetensors + its config, vocab, tokenizer; for the detector
                     and classifier stages visual.safetensors + visual_config.yaml, and the classifier's
                     crop_head.safetensors), trainer.pt (optimizer, scheduler and RNG states, loaded with
                     weights_only=True) and state.json (epoch, step, best metric)
    features/        the visual feature cache of the frozen-visual epochs (when used)
Everything is written atomically. `resume=True` continues from last/ and ends where an uninterrupted run
would: the data order is a function of (seed, epoch), VQA targets of (seed, epoch, sample), and the
RNG states are restored.
"""

from __future__ import annotations

import json
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader

from gpvcli import io
from gpvcli.config import to_dict
from gpvcli.data.dataset import Collator, GPVDataset, feature_key, input_image
from gpvcli.data.store import SplitStore
from gpvcli.data.vocab import Vocab
from gpvcli.errors import GPVError, brief
from gpvcli.eval import runner
from gpvcli.train import distributed
from gpvcli.train.config import RunConfig, load_run_config
from gpvcli.train.losses import GPVCriterion, check_finite
from gpvcli.train.sampling import make_batch_sampler

CONFIG_FILE = "config.yaml"


# ---- run folder ---------------------------------------------------------------------------------

def resolve_config(run_dir: Path, *, config: str, overrides: list[str], resume: bool) -> RunConfig:
    """The run's config: saved in run_dir on resume, else the preset with overrides."""
    saved = run_dir / CONFIG_FILE
    for name in ("last", "best"):
        io.restore_interrupted(run_dir / name)
    if resume:
        if not (run_dir / "last").is_dir() or not saved.is_file():
            raise GPVError(f"nothing to resume in {run_dir} (no last/ checkpoint)", hint="start it without --resume")
        if overrides:
            raise GPVError("--resume continues the saved config; it takes no --set/--tasks/--stage",
                           hint=f"edit {saved} if you must change it")
        return load_run_config(saved)
    if (run_dir / "last").exists():
        raise GPVError(f"run folder {run_dir} already holds a run", hint="add --resume, or choose another --run")
    return load_run_config(config, overrides)


def lr_lambda(total_steps: int, warmup: float):
    """Linear warm-up over `warmup` of the steps, then linear decay to 0."""
    warm = max(1, round(warmup * total_steps))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))
    return f


def _loader_generator(seed: int, epoch: int) -> torch.Generator:
    """A DataLoader's own generator (its worker seeds), so that creating a loader never draws from the
    global RNG: a resumed run then draws exactly the dropout masks an uninterrupted one does."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch + 1)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack([s for s in torch.cuda.get_rng_state_all()])
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# ---- stages ---------------------------------------------------------------------------------------

class GPVStage:
    """Everything stage "gpv" adds to the generic loop: model, data, loss, validation, saving."""

    def __init__(self, cfg: RunConfig, data_dir: Path, device: torch.device):
        from gpvcli.model.gpv import build_model
        from gpvcli.model.text import build_tokenizer

        self.cfg = cfg
        self.device = device
        self.vocab = Vocab.load(data_dir / "vocab.json")
        self.tokenizer = build_tokenizer(cfg.model.text, data_dir / "query_vocab.txt")
        self.model = build_model(cfg.model, self.vocab).to(device)
        self.train_store = SplitStore(data_dir / "train.h5")
        self.val_store = SplitStore(data_dir / "val.h5")
        t = cfg.train
        self.train_set = self._dataset(self.train_store, t.tasks)
        if len(self.train_set) == 0:
            raise GPVError(f"no training samples of tasks {t.tasks} in {data_dir}")
        val = self._dataset(self.val_store, t.tasks)
        keep = np.random.default_rng(t.seed).permutation(len(val))[:t.val_samples]
        self.val_set = self._dataset(self.val_store, t.tasks, val.indices[np.sort(keep)])
        self.collate = Collator(self.tokenizer)
        self.criterion = GPVCriterion(task_weights=t.task_weights, box_weights=t.box_weights,
                                      cost_class=t.cost_class, cost_bbox=t.cost_bbox, cost_giou=t.cost_giou,
                                      no_object_weight=t.no_object_weight, include_pad=t.include_pad)
        self.features = None

    def _dataset(self, store: SplitStore, tasks: list[str], indices: np.ndarray | None = None) -> GPVDataset:
        if indices is None:
            indices = np.flatnonzero(np.isin(np.asarray(store.tasks), tasks))
        return GPVDataset(store, self.vocab, image_size=tuple(self.cfg.model.visual.image_size),
                          max_answer_len=self.cfg.model.max_answer_len, seed=self.cfg.train.seed, indices=indices)

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return self.model.param_groups()

    def set_visual_frozen(self, frozen: bool, cache_dir: Path, dist: distributed.Dist, show_progress: bool) -> None:
        """Freeze (and read cached features) or unfreeze the visual encoder."""
        self.visual.set_trainable(not frozen)
        use_cache = frozen and self.cfg.train.cache_features
        if use_cache and self.features is None:
            self.features = ensure_feature_cache(self.visual, self.cfg, self.train_set, cache_dir / "train.h5",
                                                 dist, show_progress)
        self.train_set.use_features = use_cache

    def loss(self, model: nn.Module, batch: dict, num_boxes: float | None) -> dict:
        outputs = model(**runner.model_inputs(batch, self.device, self.features.get if self.features else None),
                        answer_inputs=batch["answer_inputs"].to(self.device))
        batch = {**batch, "text_targets": batch["text_targets"].to(self.device)}
        return self.criterion(outputs, batch, num_boxes=num_boxes)

    def validate(self, show_progress: bool = False) -> dict:
        """Task metrics on the fixed validation subset, and the selection metric (their sum)."""
        batches = runner.task_batches(self.val_set.tasks, self.cfg.train.val_batch_size)
        loader = DataLoader(self.val_set, batch_sampler=batches, collate_fn=self.collate,
                            generator=_loader_generator(self.cfg.train.seed, -1))
        with progress_bar(show_progress) as progress:
            task = progress.add_task("validating", total=len(self.val_set), info="")
            preds = runner.predict(self.model, loader, self.vocab, device=self.device,
                                   progress=lambda n: progress.advance(task, n))
        table, _ = runner.score(self.val_store, preds)
        return {"tasks": table, "selection": runner.selection_metric(table)}

    def save(self, folder: Path) -> None:
        from gpvcli.model.checkpoint import save_model

        save_model(folder, self.model, self.cfg.model, self.vocab, self.tokenizer)

    def load_weights(self, folder: Path) -> None:
        self.model.load_state_dict(load_file(folder / "model.safetensors"))


class _VisualStage:
    """What the two visual-encoder pretraining stages share: the encoder with an 80-category (+ no-object)
    class head, built from `model.visual`, saved as the visual/ folder that `model.visual.pretrained` takes."""

    def __init__(self, cfg: RunConfig, data_dir: Path, device: torch.device):
        import dataclasses

        from gpvcli.data import categories as cats
        from gpvcli.model.visual import build_visual

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

    def _val_subset(self, val: torch.utils.data.Dataset) -> torch.utils.data.Subset:
        keep = np.random.default_rng(self.cfg.train.seed).permutation(len(val))[:self.cfg.train.val_samples]
        return torch.utils.data.Subset(val, np.sort(keep).tolist())

    def set_visual_frozen(self, frozen: bool, cache_dir: Path, dist, show_progress: bool) -> None:
        if frozen:
            raise GPVError(f"the {self.cfg.train.stage} stage trains the visual encoder: "
                           "set train.frozen_visual_epochs=0")

    def save(self, folder: Path) -> None:
        from gpvcli.model.visual import save_visual

        with io.atomic_dir(folder) as tmp:
            save_visual(self.visual, self.visual_cfg, tmp)

    def load_weights(self, folder: Path) -> None:
        from gpvcli.model.visual import WEIGHTS_FILE

        self.visual.load_state_dict(load_file(folder / WEIGHTS_FILE))


class CropClassifierStage(_VisualStage):
    """Stage "classifier", a warm-up before the detector: the CNN backbone alone learns to name the object
    crops of the split's train cls samples (80-way; for COCO-SCE the prepared train split has no H_cls,loc
    crops), through a linear head on its globally averaged map (measured on the default synthetic world:
    56% crop accuracy after 200 steps of 64, 1.5 minutes on 2 CPU cores, while a from-scratch DETR class head
    stays near chance). The detector (`model.visual.pretrained` = this run's last/) starts from the backbone
    it leaves."""

    HEAD_FILE = "crop_head.safetensors"

    def __init__(self, cfg: RunConfig, data_dir: Path, device: torch.device):
        super().__init__(cfg, data_dir, device)
        self.head = nn.Linear(self.visual.roi_dim, self.num_classes).to(device)
        self.model = CropClassifier(self.visual, self.head)
        self.train_set = CropDataset(self.train_store, self.label_of, self.image_size)
        self.val_set = self._val_subset(CropDataset(self.val_store, self.label_of, self.image_size))
        self.collate = CropDataset.collate

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"backbone": self.visual.backbone_parameters(), "rest": list(self.head.parameters())}

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
        from safetensors.torch import save_file

        super().save(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        with io.atomic_path(folder / self.HEAD_FILE) as tmp:
            save_file(state, str(tmp))

    def load_weights(self, folder: Path) -> None:
        super().load_weights(folder)
        self.head.load_state_dict(load_file(folder / self.HEAD_FILE))


class CropClassifier(nn.Module):
    """Backbone map -> global average -> linear: (B, 3, H, W) -> (B, K) logits."""

    def __init__(self, visual: nn.Module, head: nn.Linear):
        super().__init__()
        self.visual, self.head = visual, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap, _ = self.visual.backbone_map(images)
        return self.head(fmap.mean(dim=(2, 3)))


class CropDataset(torch.utils.data.Dataset):
    """The cls samples of a split: image (3, H, W) of the crop, label = contiguous category index."""

    def __init__(self, store: SplitStore, label_of: dict[int, int], image_size: tuple[int, int]):
        self.store, self.image_size = store, image_size
        self.indices = np.flatnonzero(np.asarray(store.tasks) == "cls")
        self.labels = [label_of[int(store.category_id[i])] for i in self.indices.tolist()]
        self.tasks = ["cls"] * len(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        return {"image": input_image(self.store, int(self.indices[k]), self.image_size), "label": self.labels[k]}

    @staticmethod
    def collate(items: list[dict]) -> dict:
        return {"images": torch.stack([it["image"] for it in items]),
                "labels": torch.tensor([it["label"] for it in items]), "task": ["cls"] * len(items)}


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
        backbone = {id(p) for p in self.model.backbone_parameters()}
        groups = {"backbone": [], "detr": [], "rest": []}
        for p in self.model.parameters():
            if p.requires_grad:
                groups["backbone" if id(p) in backbone else "detr"].append(p)
        return groups

    def loss(self, model: nn.Module, batch: dict, num_boxes: float | None) -> dict:
        from gpvcli.train.losses import box_losses
        from gpvcli.train.matcher import hungarian_match

        out = model(batch["images"].to(self.device))
        targets = [{"boxes": b.to(self.device), "labels": lab.to(self.device)}
                   for b, lab in zip(batch["boxes"], batch["labels"])]
        t = self.cfg.train
        indices = hungarian_match(out["objectness"], out["boxes"], targets, cost_class=t.cost_class,
                                  cost_bbox=t.cost_bbox, cost_giou=t.cost_giou)
        terms = box_losses(out["objectness"], out["boxes"], targets, indices, no_object_weight=t.no_object_weight,
                           num_classes=self.num_classes, num_boxes=num_boxes)
        terms["loss"] = sum(t.box_weights[k] * v for k, v in terms.items())
        return terms

    @torch.no_grad()
    def validate(self, show_progress: bool = False) -> dict:
        """Mean per-(image, category) AP@0.5 with class scores ("ap50"), and class-agnostic AP@0.5
        with objectness = 1 - p(no-object) ("ap50_agnostic"). Selection: ap50."""
        from gpvcli import boxes as box_ops
        from gpvcli.eval.metrics import localization_ap

        self.model.eval()
        loader = DataLoader(self.val_set, batch_size=self.cfg.train.val_batch_size, collate_fn=self.collate,
                            generator=_loader_generator(self.cfg.train.seed, -1))
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


class DetectionDataset(torch.utils.data.Dataset):
    """Images of a split with every localization box as a detection target:
    image (3, H, W), boxes (N, 4) normalized cxcywh, labels (N,) contiguous category index."""

    def __init__(self, store: SplitStore, label_of: dict[int, int], image_size: tuple[int, int]):
        from gpvcli import boxes as box_ops

        self.store, self.image_size = store, image_size
        loc = np.flatnonzero(np.asarray(store.tasks) == "loc")
        by_image: dict[int, list[int]] = {}
        for i in loc.tolist():
            by_image.setdefault(int(store.image[i]), []).append(i)
        self.rows = sorted(by_image)
        self.targets = []
        for row in self.rows:
            w, h = float(store.image_width[row]), float(store.image_height[row])
            xyxy = np.concatenate([store.boxes[i] for i in by_image[row]]) / np.array([w, h, w, h], np.float32)
            labels = np.concatenate([[label_of[int(store.category_id[i])]] * len(store.boxes[i])
                                     for i in by_image[row]])
            self.targets.append((box_ops.xyxy_to_cxcywh(torch.from_numpy(xyxy)).clamp(0, 1),
                                 torch.as_tensor(labels, dtype=torch.long)))
        self.tasks = ["loc"] * len(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> dict:
        from gpvcli.data.images import load_image, to_tensor

        path = Path(self.store.images_root) / self.store.image_file[self.rows[k]]
        boxes, labels = self.targets[k]
        return {"image": to_tensor(load_image(path), self.image_size), "boxes": boxes, "labels": labels}

    @staticmethod
    def collate(items: list[dict]) -> dict:
        return {"images": torch.stack([it["image"] for it in items]), "boxes": [it["boxes"] for it in items],
                "labels": [it["labels"] for it in items], "task": ["loc"] * len(items)}


def ensure_feature_cache(visual: nn.Module, cfg: RunConfig, dataset: GPVDataset, path: Path,
                         dist: distributed.Dist, show_progress: bool):
    """The feature cache of `dataset`'s images and crops for this visual encoder, built on rank 0 if needed
    (absent, unreadable, or made by another encoder: a cache is derived data, rebuilt rather than refused)."""
    from gpvcli.model.feature_cache import FeatureCache, build_feature_cache, visual_fingerprint

    def usable() -> bool:
        try:
            return FeatureCache(path, None).fingerprint == fingerprint
        except GPVError:
            return False

    fingerprint = visual_fingerprint(visual, cfg.model.visual)
    if dist.main and not usable():
        keys = {}
        for i in dataset.indices.tolist():
            keys.setdefault(feature_key(dataset.store, i), i)

        def items():
            for key, i in keys.items():
                yield key, dataset.load_image(i)
        build_feature_cache(visual, items(), path, fingerprint=fingerprint, show_progress=show_progress,
                            total=len(keys), batch_size=cfg.train.val_batch_size)
    distributed.barrier(dist)
    return FeatureCache(path, fingerprint)


# ---- the loop -------------------------------------------------------------------------------------

def progress_bar(show: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=not show)


def train(run_dir: str | Path, *, config: str = "tiny", data_dir: str | Path | None = None,
          overrides: list[str] | tuple[str, ...] = (), resume: bool = False, show_progress: bool = True) -> dict:
    """Train (or resume) a run; returns {"run_dir", "steps", "best", "last_validation"}."""
    from gpvcli import paths
    from gpvcli.model.pretrained import check_named, load_reports, reports_line

    run_dir = Path(run_dir)
    cfg = resolve_config(run_dir, config=config, overrides=list(overrides), resume=resume)
    t = cfg.train
    # named checkpoints are found (or downloaded) and checked before data is prepared
    check_named(cfg.model, kinds=("visual", "text") if t.stage == "gpv" else ("visual",))
    dist = distributed.setup(t.device)
    try:
        if data_dir is None:
            data_dir = paths.default_prepared_dir("sce")
            if not (data_dir / "train.h5").is_file() and not dist.enabled:
                from gpvcli.data.prepare import prepare

                prepare("sce", out_dir=data_dir, show_progress=show_progress)
        data_dir = Path(data_dir)
        if not (data_dir / "train.h5").is_file():
            raise GPVError(f"no prepared data in {data_dir}", hint="run `gpv prepare` or pass --data")
        if t.threads:
            torch.set_num_threads(t.threads)
        torch.manual_seed(t.seed)
        stage_cls = {"gpv": GPVStage, "detector": DetectorStage, "classifier": CropClassifierStage}[t.stage]
        stage = stage_cls(cfg, data_dir, dist.device)
        if dist.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                reports = load_reports(stage.model)
                print(reports_line(reports), flush=True)
                io.write_text(run_dir / CONFIG_FILE, _yaml(cfg))
                io.write_json(run_dir / "run.json", {"data_dir": str(data_dir.resolve()), "stage": t.stage,
                                                     "weights": {k: r.as_dict() for k, r in reports.items()}})
        return Trainer(stage, cfg, run_dir, dist, show_progress).fit(resume)
    finally:
        distributed.cleanup(dist)


def _yaml(cfg: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


class Trainer:
    def __init__(self, stage, cfg: RunConfig, run_dir: Path, dist: distributed.Dist, show_progress: bool):
        self.stage, self.cfg, self.run_dir, self.dist = stage, cfg, run_dir, dist
        self.show_progress = show_progress and dist.main
        t = cfg.train
        self.micro_batch = t.batch_size // t.grad_accum
        self.sampler = make_batch_sampler(t.sampling, stage.train_set.tasks, batch_size=self.micro_batch,
                                          seed=t.seed, rank=dist.rank, world_size=dist.world_size)
        self.steps_per_epoch = len(self.sampler) // t.grad_accum
        if self.steps_per_epoch == 0:
            raise GPVError(f"{len(stage.train_set)} training samples make no batch of {t.batch_size}",
                           hint="lower --set train.batch_size")
        self.total_steps = t.epochs * self.steps_per_epoch
        if t.max_steps:
            self.total_steps = min(self.total_steps, t.max_steps)
        self.visual.set_trainable(True)              # every parameter that any phase trains
        groups = stage.param_groups()
        lrs = {"backbone": t.backbone_lr, "detr": t.lr, "rest": t.lr}
        self.optimizer = torch.optim.AdamW([{"params": p, "lr": lrs[name], "name": name}
                                            for name, p in groups.items() if p],
                                           lr=t.lr, weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(self.total_steps, t.warmup))
        self.detr_params = [p for p in self.visual.parameters() if p.requires_grad]
        self.model = stage.model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(stage.model, device_ids=[dist.local_rank]
                                                 if dist.device.type == "cuda" else None,
                                                 find_unused_parameters=True)
        self.state = {"epoch": 0, "step_in_epoch": 0, "step": 0, "best": None}

    @property
    def visual(self) -> nn.Module:
        return self.stage.visual

    # -- checkpoints --
    def save(self, name: str) -> None:
        if not self.dist.main:
            return
        with io.atomic_dir(self.run_dir / name) as tmp:
            self.stage.save(tmp)
            with io.atomic_path(tmp / "trainer.pt") as f:
                torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                            "rng": rng_state()}, f)
            io.write_json(tmp / "state.json", self.state)

    def load(self, name: str) -> None:
        folder = self.run_dir / name
        hint = "restore the folder as saved, or start a new run in another --run"
        try:        # a damaged or foreign file fails in safetensors, zip, unpickling or state-dict loading
            self.stage.load_weights(folder)
        except Exception as e:
            raise GPVError(f"cannot resume from {folder}: its weights do not load ({brief(e)})",
                           hint=hint) from e
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")      # torch's note on the pickle protocol of a foreign file
                trainer = torch.load(folder / "trainer.pt", map_location="cpu", weights_only=True)
            self.optimizer.load_state_dict(trainer["optimizer"])
            self.scheduler.load_state_dict(trainer["scheduler"])
            set_rng_state(trainer["rng"])
        except Exception as e:
            raise GPVError(f"cannot resume from {folder}: trainer.pt is not this run's trainer state "
                           f"({type(e).__name__}; only tensors and plain data are read from it)",
                           hint=hint) from e
        self.state = io.read_json(folder / "state.json", "checkpoint state")
        self.drop_metrics_after(self.state["step"])

    def drop_metrics_after(self, step: int) -> None:
        """Forget metrics.jsonl records of steps after the checkpoint (the resumed run logs them again)
        and a last line cut short by a kill."""
        path = self.run_dir / "metrics.jsonl"
        if not self.dist.main or not path.is_file():
            return
        lines = path.read_text().splitlines()
        keep = []
        for line in lines:
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line + "\n")
            except json.JSONDecodeError:
                pass
        if len(keep) < len(lines):
            io.write_text(path, "".join(keep))

    def log(self, record: dict) -> None:
        if self.dist.main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    # -- the loop --
    def fit(self, resume: bool) -> dict:
        t = self.cfg.train
        if resume:
            self.load("last")
        amp = torch.autocast(self.dist.device.type, dtype=torch.bfloat16) if t.precision == "bf16" else nullcontext()
        last_val = None
        with progress_bar(self.show_progress) as progress:
            bar = progress.add_task(f"training {self.run_dir.name}", total=self.total_steps,
                                    completed=self.state["step"], info="")
            while self.state["step"] < self.total_steps:
                epoch = self.state["epoch"]
                frozen = epoch < t.frozen_visual_epochs
                self.stage.set_visual_frozen(frozen, self.run_dir / "features", self.dist, self.show_progress)
                self.model.train()
                self.sampler.set_epoch(epoch)
                if hasattr(self.stage.train_set, "set_epoch"):
                    self.stage.train_set.set_epoch(epoch)
                batches = list(self.sampler)[self.state["step_in_epoch"] * t.grad_accum:
                                             self.steps_per_epoch * t.grad_accum]
                loader = DataLoader(self.stage.train_set, batch_sampler=batches, collate_fn=self.stage.collate,
                                    num_workers=t.num_workers, generator=_loader_generator(t.seed, epoch))
                tick, seen = time.perf_counter(), 0
                for k, batch in enumerate(loader):
                    last_micro = (k + 1) % t.grad_accum == 0
                    sync = nullcontext() if last_micro or not self.dist.enabled else self.model.no_sync()
                    with sync:
                        with amp:
                            terms = self.stage.loss(self.model, batch, self.num_boxes(batch))
                        check_finite(terms, step=self.state["step"])
                        (terms["loss"] / t.grad_accum).backward()
                    seen += len(batch["task"]) * self.dist.world_size
                    if not last_micro:
                        continue
                    if t.detr_clip > 0 and not frozen:
                        torch.nn.utils.clip_grad_norm_(self.detr_params, t.detr_clip)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.state["step"] += 1
                    self.state["step_in_epoch"] += 1
                    step = self.state["step"]
                    rate = seen / max(1e-9, time.perf_counter() - tick)
                    progress.update(bar, advance=1, info=f"epoch {epoch} loss {terms['loss'].item():.3f} "
                                                         f"{rate:.0f} samples/s")
                    if step % t.log_every == 0 or step == self.total_steps:
                        self.log_step(terms, epoch, rate)
                    if t.save_every and step % t.save_every == 0 and step < self.total_steps:
                        self.save("last")
                    if step >= self.total_steps:
                        break
                if self.state["step_in_epoch"] >= self.steps_per_epoch or self.state["step"] >= self.total_steps:
                    last_val = self.end_epoch()
        return {"run_dir": str(self.run_dir), "steps": self.state["step"], "best": self.state["best"],
                "last_validation": last_val}

    def num_boxes(self, batch: dict) -> float | None:
        """Ground-truth boxes of this micro-batch over all ranks, per rank (DETR's normalization)."""
        if not self.dist.enabled:
            return None
        n = torch.tensor(float(sum(len(b) for b, task in zip(batch["boxes"], batch["task"])
                                   if task in ("loc", "refexp"))), device=self.dist.device)
        return max(1.0, distributed.all_reduce_sum(self.dist, n).item() / self.dist.world_size)

    def log_step(self, terms: dict, epoch: int, rate: float) -> None:
        weights = getattr(getattr(self.stage, "criterion", None), "weights", None) or self.cfg.train.box_weights
        record = {"step": self.state["step"], "epoch": epoch, "samples_per_s": round(rate, 2),
                  "lr": {g["name"]: g["lr"] for g in self.optimizer.param_groups}}
        if self.dist.enabled:   # the loss averaged over ranks; the other terms are rank 0's
            terms = {**terms, "loss": distributed.all_reduce_sum(self.dist, terms["loss"].detach())
                     / self.dist.world_size}
        for name, value in terms.items():
            record[name] = value.item()
            if name in weights:
                record[f"{name}_scaled"] = weights[name] * value.item()
        self.log(record)

    def end_epoch(self) -> dict | None:
        """Validate, save last/ (and best/ when the selection metric improves), move to the next epoch."""
        result = None
        if self.dist.main:
            result = self.stage.validate(self.show_progress)
            self.log({"step": self.state["step"], "epoch": self.state["epoch"], "validation": result})
        self.state["epoch"] += 1
        self.state["step_in_epoch"] = 0
        improved = result is not None and (self.state["best"] is None or result["selection"] > self.state["best"])
        if improved:
            self.state["best"] = result["selection"]
        self.save("last")
        if improved:
            self.save("best")
        distributed.barrier(self.dist)
        return result
