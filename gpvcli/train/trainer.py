"""`gpv train`: the training loop, checkpoints and resume, for any stage of `gpvcli.train.stages`.

The run folder's layout is owned by `gpvcli.runs`. metrics.jsonl gets one JSON line per log step (every loss term
unscaled and scaled, lr, samples/s) and per validation (the task metrics and the selection metric); last/
and best/ get the stage's weights (`Stage.save`), trainer.pt (optimizer, scheduler and RNG states, loaded
with weights_only=True) and state.json (epoch, step, best metric). Everything is written atomically. `resume=True`
continues from last/, on the data, config and stage the run recorded, and ends where an uninterrupted run
would: the data order is a function of (seed, epoch), VQA targets of (seed, epoch, sample), and the
RNG states are restored. One process trains a run folder at a time (`gpvcli.locks`). SIGTERM or SIGINT
(a scheduler's preemption, Ctrl-C) stops training after the current optimizer step: last/ is saved and
`Interrupted` raised (the CLI exits with 128 + the signal number: 143 for SIGTERM, 130 for SIGINT).
"""

from __future__ import annotations

import json
import signal
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from gpvcli import io, locks, runs
from gpvcli.config import DEFAULT_PRESET, to_dict
from gpvcli.default_data import prepared_data
from gpvcli.device import use_fast_math
from gpvcli.errors import GPVError, Interrupted, brief
from gpvcli.progress import progress_bar
from gpvcli.train import distributed
from gpvcli.train.config import RunConfig, TrainConfig, load_run_config
from gpvcli.train.losses import check_finite
from gpvcli.train.sampling import make_batch_sampler
from gpvcli.train.stages import STAGES, Stage, loader_generator, loader_options
from gpvcli.viz.curves import tensorboard_log

LR_OF_GROUP = {"backbone": "backbone_lr", "detr": "lr", "rest": "lr"}     # TrainConfig field of each group


# ---- run folder ---------------------------------------------------------------------------------

def resolve_config(run_dir: Path, *, config: str, overrides: list[str], resume: bool) -> RunConfig:
    """The run's config: saved in run_dir on resume, else the preset with overrides."""
    saved = run_dir / runs.CONFIG
    last = runs.restore_checkpoints(run_dir)
    if resume:
        if not last.is_dir() or not saved.is_file():
            raise GPVError(f"nothing to resume in {run_dir} (no last/ checkpoint)", hint="start it without --resume")
        if overrides:
            raise GPVError("--resume continues the saved config; it takes no --set/--tasks/--stage",
                           hint=f"edit {saved} if you must change it")
        return load_run_config(saved)
    if last.exists():
        raise GPVError(f"run folder {run_dir} already holds a run", hint="add --resume, or choose another --run")
    return load_run_config(config, overrides)


def train(run_dir: str | Path, *, config: str = DEFAULT_PRESET, data_dir: str | Path | None = None,
          overrides: list[str] | tuple[str, ...] = (), resume: bool = False, show_progress: bool = True) -> dict:
    """Train (or resume) a run; returns {"run_dir", "steps", "best", "last_validation"}. Raises Interrupted
    when stopped by SIGTERM / SIGINT (after saving last/)."""
    from gpvcli.model.pretrained import check_named, load_reports, reports_line

    run_dir = Path(run_dir)
    with locks.writing(run_dir, option="--run") if distributed.launched_rank() == 0 else nullcontext():
        cfg = resolve_config(run_dir, config=config, overrides=list(overrides), resume=resume)
        if resume:
            data_dir = runs.resume_data(run_dir, data_dir)
        t = cfg.train
        # named checkpoints are found (or downloaded) and checked before data is prepared
        check_named(cfg.model, kinds=("visual", "text") if t.stage in ("gpv", "align") else ("visual",))
        dist = distributed.setup(t.device)
        use_fast_math(dist.device)
        try:
            data_dir = prepared_data(data_dir, prepare_missing=not dist.enabled, show_progress=show_progress)
            if t.threads:
                torch.set_num_threads(t.threads)
            torch.manual_seed(t.seed)
            stage = STAGES[t.stage](cfg, data_dir, dist.device)
            if dist.main:
                run_dir.mkdir(parents=True, exist_ok=True)
                weights = None
                if not resume:
                    reports = load_reports(stage.model)
                    print(reports_line(reports), flush=True)
                    weights = {k: r.as_dict() for k, r in reports.items()}
                    io.write_text(run_dir / runs.CONFIG, _yaml(cfg))
                if not resume or runs.recorded_data_dir(run_dir) != data_dir:   # a first start, or data moved
                    runs.write_record(run_dir, data_dir=data_dir, stage=t.stage, weights=weights)
            return Trainer(stage, cfg, run_dir, dist, show_progress).fit(resume)
        finally:
            distributed.cleanup(dist)


def _yaml(cfg: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# ---- optimizer and RNG state ----------------------------------------------------------------------

def lr_lambda(total_steps: int, warmup: float):
    """Linear warm-up over `warmup` of the steps, then linear decay to 0."""
    warm = max(1, round(warmup * total_steps))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))
    return f


def build_optimizer(groups: dict[str, list[torch.nn.Parameter]], t: TrainConfig,
                    device: torch.device = torch.device("cpu")) -> torch.optim.AdamW:
    """AdamW over the non-empty parameter groups, each named and at its learning rate; the fused
    implementation (one kernel for all parameters) on CUDA."""
    return torch.optim.AdamW([{"params": p, "lr": getattr(t, LR_OF_GROUP[name]), "name": name}
                              for name, p in groups.items() if p], lr=t.lr, weight_decay=t.weight_decay,
                             fused=True if device.type == "cuda" else None)


def compile_model(model: torch.nn.Module) -> None:
    """torch.compile `model` in place (its state-dict names unchanged): GPV by its tensor-only parts
    (`GPV.compile_parts`), any other model whole."""
    if hasattr(model, "compile_parts"):
        model.compile_parts()
    else:
        model.compile()


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack([s for s in torch.cuda.get_rng_state_all()])
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# ---- stop signals --------------------------------------------------------------------------------

class StopSignals:
    """While active (in the main thread), SIGTERM and SIGINT are noted, not acted on: `signum` holds the
    first one received; later ones (a second Ctrl-C during the final save) are ignored."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.note) for s in self.SIGNALS}

    def note(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


# ---- the loop -------------------------------------------------------------------------------------

class Trainer:
    def __init__(self, stage: Stage, cfg: RunConfig, run_dir: Path, dist: distributed.Dist, show_progress: bool):
        self.stage, self.cfg, self.run_dir, self.dist = stage, cfg, run_dir, dist
        self.show_progress = show_progress and dist.main
        t = cfg.train
        self.sampler = make_batch_sampler(t.sampling, stage.train_set.tasks, batch_size=t.batch_size // t.grad_accum,
                                          seed=t.seed, rank=dist.rank, world_size=dist.world_size)
        self.steps_per_epoch = len(self.sampler) // t.grad_accum
        if self.steps_per_epoch == 0:
            raise GPVError(f"{len(stage.train_set)} training samples make no batch of {t.batch_size}",
                           hint="lower --set train.batch_size")
        self.total_steps = t.epochs * self.steps_per_epoch
        if t.max_steps:
            self.total_steps = min(self.total_steps, t.max_steps)
        stage.visual.set_trainable(True)              # every parameter that any phase trains
        self.optimizer = build_optimizer(stage.param_groups(), t, dist.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(self.total_steps, t.warmup))
        self.detr_params = [p for p in stage.visual.parameters() if p.requires_grad]
        if t.compile:
            compile_model(stage.model)
        self.model = stage.model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.model, device_ids=[dist.local_rank]
                                                 if dist.device.type == "cuda" else None,
                                                 find_unused_parameters=True)
        self.state = {"epoch": 0, "step_in_epoch": 0, "step": 0, "best": None}
        self.signals = StopSignals()
        self.stopping = False          # a stop signal reached some rank: every rank stops after this step
        self.saved_step: int | None = None

    def fit(self, resume: bool) -> dict:
        if resume:
            self.load(runs.LAST)
        self.events = tensorboard_log(self.run_dir, self.state["step"]) if self.dist.main else None
        last_val = None
        with self.signals, progress_bar(self.show_progress) as progress:
            bar = progress.add_task(f"training {self.cfg.train.stage} ({self.run_dir.name})", total=self.total_steps,
                                    completed=self.state["step"], info="")
            while not self.done():
                self.run_epoch(lambda info: progress.update(bar, advance=1, info=info))
                if self.state["step_in_epoch"] >= self.steps_per_epoch or self.done():
                    last_val = self.end_epoch()
                    self.stopping = distributed.any_rank(self.dist, self.signals.signum is not None)
                if self.stopping and not self.done():
                    self.stop()
        return {"run_dir": str(self.run_dir), "steps": self.state["step"], "best": self.state["best"],
                "last_validation": last_val}

    def done(self) -> bool:
        return self.state["step"] >= self.total_steps

    def stop(self) -> None:
        """Save last/ (unless this step's is saved) and raise Interrupted."""
        step = self.state["step"]
        if self.saved_step != step:
            self.save(runs.LAST)
        distributed.barrier(self.dist)
        signum = self.signals.signum or signal.SIGTERM   # a rank stopped by another's signal: the scheduler's
        raise Interrupted(f"by {signal.Signals(signum).name} after step {step} of {self.total_steps}; "
                          f"{self.run_dir / runs.LAST} saved", signum=signum,
                          hint=f"`gpv train --run {self.run_dir} --resume` continues it")

    def run_epoch(self, report: Callable[[str], None]) -> None:
        """The optimizer steps left in the current epoch (all, unless resumed mid-epoch), or up to the end."""
        t = self.cfg.train
        epoch = self.state["epoch"]
        frozen = epoch < t.frozen_visual_epochs
        self.stage.start_epoch(epoch, frozen_visual=frozen, cache_dir=self.run_dir / runs.FEATURES, dist=self.dist,
                               show_progress=self.show_progress)
        self.model.train()
        tick, seen = time.perf_counter(), 0
        for k, batch in enumerate(self.epoch_loader(epoch)):
            last_micro = (k + 1) % t.grad_accum == 0
            terms = self.backward(batch, sync=last_micro)
            seen += len(batch["task"]) * self.dist.world_size
            if not last_micro:
                continue
            self.optimizer_step(clip=t.detr_clip > 0 and not frozen)
            rate = seen / max(1e-9, time.perf_counter() - tick)
            report(f"epoch {epoch} loss {terms['loss'].item():.3f} {rate:.0f} samples/s")
            self.after_step(terms, epoch, rate)
            self.stopping = distributed.any_rank(self.dist, self.signals.signum is not None)
            if self.done() or self.stopping:
                break

    def epoch_loader(self, epoch: int) -> DataLoader:
        """The epoch's micro-batches from the current step on (the data order is a function of seed and epoch)."""
        t = self.cfg.train
        self.sampler.set_epoch(epoch)
        batches = list(self.sampler)[self.state["step_in_epoch"] * t.grad_accum:self.steps_per_epoch * t.grad_accum]
        return DataLoader(self.stage.train_set, batch_sampler=batches, collate_fn=self.stage.collate,
                          generator=loader_generator(t.seed, epoch), **loader_options(t, self.dist.device))

    def backward(self, batch: dict, *, sync: bool) -> dict:
        """Loss terms of one micro-batch, its share of the gradient accumulated (DDP syncs when `sync`)."""
        t = self.cfg.train
        amp = torch.autocast(self.dist.device.type, dtype=torch.bfloat16) if t.precision == "bf16" else nullcontext()
        with nullcontext() if sync or not self.dist.enabled else self.model.no_sync():
            with amp:
                terms = self.stage.loss(self.model, batch, self.num_boxes(batch))
            check_finite(terms, step=self.state["step"])
            (terms["loss"] / t.grad_accum).backward()
        return terms

    def optimizer_step(self, *, clip: bool) -> None:
        if clip:
            torch.nn.utils.clip_grad_norm_(self.detr_params, self.cfg.train.detr_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state["step"] += 1
        self.state["step_in_epoch"] += 1

    def after_step(self, terms: dict, epoch: int, rate: float) -> None:
        """Log every log_every steps (and the last), save last/ every save_every steps (but the last)."""
        t, step = self.cfg.train, self.state["step"]
        if step % t.log_every == 0 or step == self.total_steps:
            self.log_step(terms, epoch, rate)
        if t.save_every and step % t.save_every == 0 and step < self.total_steps:
            self.save(runs.LAST)

    def num_boxes(self, batch: dict) -> float | None:
        """Ground-truth boxes of this micro-batch over all ranks, per rank (DETR's normalization)."""
        if not self.dist.enabled:
            return None
        n = torch.tensor(float(sum(len(b) for b, task in zip(batch["boxes"], batch["task"])
                                   if task in ("loc", "refexp"))), device=self.dist.device)
        return max(1.0, distributed.all_reduce_sum(self.dist, n).item() / self.dist.world_size)

    def log_step(self, terms: dict, epoch: int, rate: float) -> None:
        weights = self.stage.loss_weights
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
        self.save(runs.LAST)
        if improved:
            self.save(runs.BEST)
        distributed.barrier(self.dist)
        return result

    # -- checkpoints and metrics --
    def save(self, name: str) -> None:
        if name == runs.LAST:
            self.saved_step = self.state["step"]
        if not self.dist.main:
            return
        with io.atomic_dir(self.run_dir / name) as tmp:
            self.stage.save(tmp)
            with io.atomic_path(tmp / runs.TRAINER_STATE) as f:
                torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                            "rng": rng_state()}, f)
            io.write_json(tmp / runs.STATE, self.state)

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
                trainer = torch.load(folder / runs.TRAINER_STATE, map_location="cpu", weights_only=True)
            self.optimizer.load_state_dict(trainer["optimizer"])
            self.scheduler.load_state_dict(trainer["scheduler"])
            set_rng_state(trainer["rng"])
        except Exception as e:
            raise GPVError(f"cannot resume from {folder}: trainer.pt is not this run's trainer state "
                           f"({type(e).__name__}; only tensors and plain data are read from it)",
                           hint=hint) from e
        self.state = io.read_json(folder / runs.STATE, "checkpoint state")
        self.saved_step = self.state["step"]
        self.drop_metrics_after(self.state["step"])

    def drop_metrics_after(self, step: int) -> None:
        """Forget metrics.jsonl records of steps after the checkpoint (the resumed run logs them again)
        and a last line cut short by a kill."""
        path = self.run_dir / runs.METRICS
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
            io.append_line(self.run_dir / runs.METRICS, json.dumps(record))
            self.events.add(record)
