"""One prepared script for a GPU machine (under 8 minutes on one H200): the gpv1 preset (random weights, no
downloads), bf16, global batch 120, on one GPU, fed by the real input pipeline from a 640x480 world it makes:

    train step, images       samples/s of the full train step (visual encoder trained), fed by the real loader
    train step, cached       samples/s of the frozen-visual stage's step from cached visual features
                             (the cache is built first: its samples/s is reported too)
    evaluation (test)        samples/s of greedy decoding of the test split, batched, under inference_mode
each train row with and without train.compile, with the peak GPU memory of the row. It prints one table and
writes it as JSON. Goals on one H200 (issue 15): >= 600 samples/s end to end, >= 3,000 from cached features,
<= 40 GB.

On a machine without CUDA it runs a reduced size (the tiny preset, a small world, a few steps, torch.compile
with the aot_eager backend) so that CI can smoke-test it; its figures say nothing about a GPU.

    python benchmarks/bench_gpu.py [--out bench_gpu.json] [--images N] [--steps N] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from gpvcli.data.dataset import Collator, GPVDataset
from gpvcli.data.store import SplitStore
from gpvcli.device import use_fast_math
from gpvcli.eval import runner
from gpvcli.train import distributed
from gpvcli.train.config import load_run_config
from gpvcli.train.stages import GPVStage
from gpvcli.train.trainer import Trainer

GPU = {"preset": "gpv1", "batch": 120, "images": 400, "size": (640, 480), "steps": 20, "warmup": 5,
       "backend": "inductor"}
CPU = {"preset": "tiny", "batch": 8, "images": 24, "size": (128, 96), "steps": 2, "warmup": 1,
       "backend": "aot_eager"}
GOALS = {"train step, images": 600.0, "train step, cached": 3000.0, "peak_gb": 40.0}


def make_data(root: Path, images: int, size: tuple[int, int]) -> Path:
    from gpvcli.data.prepare import prepare
    from gpvcli.synth.world import generate

    generate(root / "coco", train_images=images, val_images=max(8, images // 4), seed=0, width=size[0],
             height=size[1])
    prepare("sce", coco_dir=root / "coco", out_dir=root / "sce", seed=0)
    return root / "sce"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def train_rate(trainer: Trainer, *, frozen: bool, cache_dir: Path, steps: int, warmup: int) -> dict:
    """Samples/s of `steps` optimizer steps after `warmup` ones (compilation and worker start-up there)."""
    device = trainer.dist.device
    epoch = 0 if frozen else trainer.cfg.train.frozen_visual_epochs
    start = time.perf_counter()
    trainer.stage.start_epoch(epoch, frozen_visual=frozen, cache_dir=cache_dir, dist=trainer.dist,
                              show_progress=False)
    prepare_s = time.perf_counter() - start
    trainer.model.train()
    trainer.state["step_in_epoch"] = 0                     # each row reads its epoch from the first batch
    reset_peak(device)
    seen, clock = 0, time.perf_counter()
    for k, batch in enumerate(trainer.epoch_loader(epoch)):
        if k == warmup:
            sync(device)
            warm_s, seen, clock = time.perf_counter() - clock, 0, time.perf_counter()
        if k == warmup + steps:
            break
        trainer.backward(batch, sync=True)
        trainer.optimizer_step(clip=not frozen)
        seen += len(batch["task"])
    else:
        raise SystemExit(f"the world has too few batches for {warmup} + {steps} steps: raise --images")
    sync(device)
    return {"samples_per_s": seen / (time.perf_counter() - clock), "peak_gb": peak_gb(device),
            "warmup_s": warm_s, "prepare_s": prepare_s}


def eval_rate(stage: GPVStage, data: Path, *, batch: int, samples: int, workers: int) -> dict:
    device = stage.device
    store = SplitStore(data / "test.h5")
    dataset = GPVDataset(store, stage.vocab, image_size=tuple(stage.cfg.model.visual.image_size),
                         max_answer_len=stage.cfg.model.max_answer_len,
                         indices=np.random.default_rng(0).permutation(len(store))[:samples])
    loader = DataLoader(dataset, batch_sampler=runner.task_batches(dataset.tasks, batch),
                        collate_fn=Collator(stage.tokenizer), num_workers=workers, pin_memory=device.type == "cuda")
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    records = runner.predict(stage.model, loader, stage.vocab, device=device)
    sync(device)
    return {"samples_per_s": len(records) / (time.perf_counter() - start), "peak_gb": peak_gb(device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_gpu.json"))
    ap.add_argument("--data", type=Path, help="prepared data of a world (default: made here)")
    ap.add_argument("--images", type=int, help="train images of the world made here")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--workers", type=int, help="DataLoader workers (default: cores - 2, at most 16)")
    ap.add_argument("--no-compile", action="store_true", help="skip the train.compile rows")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    size = GPU if cuda else CPU
    steps, warmup = args.steps or size["steps"], args.warmup if args.warmup is not None else size["warmup"]
    workers = args.workers if args.workers is not None else (min(16, max(1, (os.cpu_count() or 2) - 2)) if cuda else 0)
    device = torch.device("cuda" if cuda else "cpu")
    use_fast_math(device)
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data or make_data(tmp / "world", args.images or size["images"], size["size"])
        for compiled in (False,) if args.no_compile else (False, True):
            overrides = ["model.visual.pretrained=null", "model.text.pretrained=null", "train.precision=bf16",
                         f"train.batch_size={size['batch']}", f"train.val_batch_size={size['batch']}",
                         f"train.num_workers={workers}", f"train.device={device.type}", "train.frozen_visual_epochs=1",
                         "train.cache_features=true"]
            cfg = load_run_config(size["preset"], overrides)
            torch.manual_seed(0)
            stage = GPVStage(cfg, data, device)
            trainer = Trainer(stage, cfg, tmp / "run", distributed.setup(device.type), show_progress=False)
            if compiled:
                torch._dynamo.reset()
                stage.model.compile_parts(backend=size["backend"])        # what train.compile does, its backend named
            for frozen, name in ((False, "train step, images"), (True, "train step, cached")):
                r = train_rate(trainer, frozen=frozen, cache_dir=tmp / "features", steps=steps, warmup=warmup)
                rows.append({"row": name, "compile": compiled, **r})
                if frozen and not compiled:
                    keys = len(trainer.stage.features)
                    rows[-1]["cache_build_samples_per_s"] = keys / r["prepare_s"]
            if not compiled:
                r = eval_rate(stage, data, batch=size["batch"], samples=steps * size["batch"], workers=workers)
                rows.append({"row": "evaluation (test)", "compile": False, **r})
            del trainer, stage
            if cuda:
                torch.cuda.empty_cache()
    result = {"device": torch.cuda.get_device_name(device) if cuda else "cpu (reduced size: not GPU figures)",
              "preset": size["preset"], "batch": size["batch"], "precision": "bf16", "workers": workers,
              "cpu_cores": os.cpu_count(), "steps": steps, "warmup": warmup, "compile_backend": size["backend"],
              "goals": GOALS, "rows": rows, "seconds": time.perf_counter() - started}
    print(f"{result['device']}: {size['preset']} preset, bf16, batch {size['batch']}, {workers} loader workers, "
          f"{steps} timed steps after {warmup}")
    print(f"{'row':24s} {'compile':>7s} {'samples/s':>10s} {'peak GB':>8s} {'warm-up s':>9s}")
    for r in rows:
        peak = "-" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
        print(f"{r['row']:24s} {r['compile']!s:>7s} {r['samples_per_s']:10.1f} {peak:>8s} "
              f"{r.get('warmup_s', 0):9.1f}")
    cached = next(r for r in rows if "cache_build_samples_per_s" in r)
    print(f"feature cache built at {cached['cache_build_samples_per_s']:.1f} images and crops/s; "
          f"total {result['seconds']:.0f} s")
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
