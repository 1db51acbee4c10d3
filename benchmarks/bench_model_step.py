"""Time one training step of a preset (forward + backward + AdamW step) on the CPU.

Prints the median and best wall-clock time per step, from images and from cached
visual features. Inputs are random: a 12-token query, a 6-token answer, mixed tasks.

    python benchmarks/bench_model_step.py [--config tiny] [--batch 32] [--steps 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from gpvcli.data.vocab import SPECIALS, Vocab
from gpvcli.model.config import load_model_config
from gpvcli.model.gpv import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_model_config(args.config)
    vocab = Vocab([*SPECIALS, *(f"w{i}" for i in range(args.vocab_size - len(SPECIALS)))])
    model = build_model(cfg, vocab).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    B, T, S = args.batch, 12, 6
    H, W = cfg.visual.image_size
    tasks = ["vqa", "cap", "loc", "cls"] * (B // 4) + ["vqa"] * (B % 4)
    query_ids = torch.randint(5, min(cfg.text.vocab_size, 1000), (B, T))
    query_mask = torch.ones(B, T, dtype=torch.long)
    images = torch.randn(B, 3, H, W)
    targets = torch.randint(4, len(vocab), (B, S))
    answer_inputs = torch.cat([torch.ones(B, 1, dtype=torch.long), targets[:, :-1]], dim=1)
    with torch.no_grad():
        cached = {k: v.detach() for k, v in model.visual(images).items()}

    def step(**visual_input) -> float:
        start = time.perf_counter()
        out = model(query_ids=query_ids, query_mask=query_mask, task=tasks, answer_inputs=answer_inputs,
                    **visual_input)
        loss = F.cross_entropy(out["text_logits"].flatten(0, 1), targets.flatten())
        loss = loss + F.cross_entropy(out["relevance_logits"].flatten(0, 1),
                                      torch.zeros(B * out["relevance_logits"].shape[1], dtype=torch.long))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    n_params = sum(p.numel() for p in model.parameters())
    print(f"config {args.config}: {n_params / 1e6:.2f}M parameters, batch {B}, images {H}x{W}, "
          f"{torch.get_num_threads()} threads")
    for name, visual_input in (("from images", {"images": images}), ("from cached features", {"visual": cached})):
        times = [step(**visual_input) for _ in range(args.steps + 2)][2:]  # two warm-up steps
        print(f"train step {name}: median {statistics.median(times) * 1000:.0f} ms, "
              f"best {min(times) * 1000:.0f} ms over {len(times)} steps")


if __name__ == "__main__":
    main()
