"""Diagnostics of an align (or detector) run: does each detected region know its category?

For the first `--images` validation images: every ground-truth box whose best predicted box overlaps it at
IoU >= 0.5 counts; the script prints how often the category scored highest for that region is the box's
(top-1, and the median rank of the right one), and, for an align run, how alike the text encoder's phrase
embeddings of the named categories are (mean and extreme pairwise cosine; near 1 means the phrases cannot
be told apart). Prints figures only; nothing is asserted.

    python benchmarks/probe_align.py runs/quickstart/align [--images 192]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from gpvcli import boxes as box_ops
from gpvcli import runs
from gpvcli.train.config import load_run_config
from gpvcli.train.stages import STAGES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--images", type=int, default=192)
    args = parser.parse_args()
    cfg = load_run_config(args.run / runs.CONFIG)
    stage = STAGES[cfg.train.stage](cfg, runs.data_of(args.run), torch.device("cpu"))
    stage.load_weights(args.run / runs.LAST)
    stage.model.eval()
    loader = DataLoader(Subset(stage.val_set, range(min(args.images, len(stage.val_set)))), batch_size=64,
                        collate_fn=stage.collate)
    ranks = []
    with torch.no_grad():
        for batch in loader:
            if cfg.train.stage == "align":
                out, logits = stage.model(batch["images"], *stage.phrases(0))
                category = stage.phrase_of                      # label -> column of `logits`
            else:
                out = stage.model(batch["images"])
                logits, category = out["objectness"][..., :-1], torch.arange(out["objectness"].shape[-1] - 1)
            pred = box_ops.cxcywh_to_xyxy(out["boxes"])
            for b, (gt, labels) in enumerate(zip(batch["boxes"], batch["labels"])):
                iou = box_ops.box_iou(box_ops.cxcywh_to_xyxy(gt), pred[b])              # (N, Q)
                for g in range(len(gt)):
                    q, right = int(iou[g].argmax()), int(category[labels[g]])
                    if iou[g, q] >= 0.5 and right >= 0:
                        ranks.append(int((logits[b, q] > logits[b, q, right]).sum()))
    ranks = np.array(ranks)
    print(f"{args.run}: {len(ranks)} boxes found at IoU >= 0.5; right category first for {np.mean(ranks == 0):.3f}, "
          f"median rank {np.median(ranks):.0f} of {logits.shape[-1]}")
    if cfg.train.stage == "align":
        with torch.no_grad():
            ids, mask = stage.phrases(0)
            phrases = torch.nn.functional.normalize(stage.gpv.text(ids, mask).mul(mask[..., None]).sum(1), dim=-1)
        cos = (phrases @ phrases.T)[~torch.eye(len(phrases), dtype=torch.bool)]
        print(f"phrase embeddings: pairwise cosine mean {cos.mean():.3f}, min {cos.min():.3f}, max {cos.max():.3f}")


if __name__ == "__main__":
    main()
