"""Training-step speed of GPV presets on this machine, in one run:

1. samples/s of a full train step (forward, the GPV criterion, backward, AdamW) on a mixed-task batch,
   the FLOPs of that step (torch.utils.flop_counter), and the achieved FLOP/s as a fraction of the
   machine's dense fp32 matmul peak measured in the same run (model FLOPs utilization, MFU);
2. the same step with the visual encoder frozen, from images and from cached visual features
   (the frozen-visual stage of the recipe), as a ratio.

    python benchmarks/bench_train.py [--configs tiny,small] [--batch 32] [--steps 5] [--threads 0]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from gpvcli.data.vocab import SPECIALS, START, Vocab
from gpvcli.model.config import load_model_config, without_pretrained
from gpvcli.model.gpv import build_model
from gpvcli.train.losses import GPVCriterion

TASKS = ("vqa", "cap", "loc", "cls")


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Dense fp32 matmul FLOP/s (best of `repeats`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def make_batch(cfg, batch: int, vocab_size: int, generator: torch.Generator) -> dict:
    H, W = cfg.visual.image_size
    task = [TASKS[i % len(TASKS)] for i in range(batch)]
    targets = torch.randint(4, vocab_size, (batch, 8), generator=generator)
    targets[:, 6:] = 0
    targets[:, 5] = 2
    boxes = [torch.rand(3, 4, generator=generator) * 0.4 + 0.2 if t == "loc" else torch.zeros(0, 4) for t in task]
    return {"task": task, "images": torch.randn(batch, 3, H, W, generator=generator),
            "query_ids": torch.randint(5, 300, (batch, 10), generator=generator),
            "query_mask": torch.ones(batch, 10, dtype=torch.long),
            "answer_inputs": torch.cat([torch.full((batch, 1), START), targets[:, :-1]], 1),
            "text_targets": targets, "boxes": boxes}


def step_fn(model, criterion, optimizer, batch, visual=None):
    def step():
        inputs = {"visual": visual} if visual is not None else {"images": batch["images"]}
        out = model(query_ids=batch["query_ids"], query_mask=batch["query_mask"], task=batch["task"],
                    answer_inputs=batch["answer_inputs"], **inputs)
        loss = criterion(out, batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def timed(step, steps: int) -> float:
    step()                                            # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def bench(name: str, batch: int, steps: int, vocab_size: int, peak: float) -> None:
    cfg = without_pretrained(load_model_config(name))  # speed does not depend on the weights: nothing downloaded
    torch.manual_seed(0)
    vocab = Vocab([*SPECIALS, *(f"w{i}" for i in range(vocab_size - 4))])
    model = build_model(cfg, vocab)
    criterion = GPVCriterion()
    g = torch.Generator().manual_seed(0)
    data = make_batch(cfg, batch, vocab_size, g)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    step = step_fn(model, criterion, optimizer, data)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    seconds = timed(step, steps)
    print(f"[{name}] batch {batch}: {seconds * 1000:.0f} ms/step, {batch / seconds:.1f} samples/s, "
          f"{flops / 1e9:.2f} GFLOP/step, {flops / seconds / 1e9:.1f} GFLOP/s = MFU {flops / seconds / peak:.1%}")

    model.visual.set_trainable(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    frozen_images = timed(step_fn(model, criterion, optimizer, data), steps)
    with torch.no_grad():
        cached = {k: v.detach() for k, v in model.visual(data["images"]).items()}
    from_cache = timed(step_fn(model, criterion, optimizer, data, visual=cached), steps)
    print(f"[{name}] frozen visual: from images {frozen_images * 1000:.0f} ms/step, from cached features "
          f"{from_cache * 1000:.0f} ms/step: cache speed-up {frozen_images / from_cache:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="tiny")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--vocab", type=int, default=400)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_peak()
    print(f"threads {torch.get_num_threads()}; dense fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    for name in args.configs.split(","):
        bench(name, args.batch, args.steps, args.vocab, peak)


if __name__ == "__main__":
    main()
