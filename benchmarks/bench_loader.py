"""Samples/s that the real input pipeline delivers, from `gpv prepare`d data of a 640x480 world to batched
tensors (what the trainer's DataLoader hands to the device), at the gpv1 preset's input size (480x640):

1. the pipeline as the trainer builds it (GPVDataset + Collator: decode, crop, resize, tokenize; uint8
   pixels), with 1, 2, ... workers: samples/s and samples/s per worker; and in this process, one thread,
   per second of its CPU time (what one worker core delivers when nothing else runs on it);
2. the same with 1 worker, images normalized to float32 in the worker (the pipeline before issue 15), as a
   ratio to 1.;
3. decoding alone in this process, whole images at the small preset's 192x256: the full JPEG decode then
   resize, against PIL's reduced-size decode (`load_image(reduce_to=...)`), as a ratio.

Without --data it makes a world (gpv synth --image-size 640x480) and prepares it in a temporary folder.
Goal (issue 15): at least 80 samples/s per worker core.

    python benchmarks/bench_loader.py [--data DIR] [--workers 1,2] [--batches 20] [--batch 32] [--json FILE]
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
from gpvcli.data.images import crop, load_image, normalize, pixels
from gpvcli.data.store import SplitStore
from gpvcli.data.vocab import Vocab
from gpvcli.model.text import build_tokenizer
from gpvcli.train.config import load_run_config

SMALL_SIZE = (192, 256)


class FloatImages(GPVDataset):
    """The pipeline before issue 15: float32 normalized images made in the worker."""

    def __getitem__(self, k: int) -> dict:
        item = super().__getitem__(k)
        item["image"] = normalize(item["image"]).contiguous()
        return item


def make_data(root: Path, images: int) -> Path:
    from gpvcli.data.prepare import prepare
    from gpvcli.synth.world import generate

    generate(root / "coco", train_images=images, val_images=max(8, images // 4), seed=0, width=640, height=480)
    prepare("sce", coco_dir=root / "coco", out_dir=root / "sce", seed=0)
    return root / "sce"


def rate(dataset, collate, batches: list[list[int]], workers: int, clock=time.perf_counter) -> float:
    """Samples/s of a DataLoader over `batches` after its first batch (worker start-up excluded); with
    clock=time.process_time and no workers, samples per second of this process's CPU time (a figure per core
    that other load on the machine does not lower)."""
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers,
                        pin_memory=torch.cuda.is_available(), prefetch_factor=4 if workers else None)
    it = iter(loader)
    next(it)
    start, n = clock(), 0
    for batch in it:
        n += len(batch["task"])
    return n / (clock() - start)


def decode_rate(store: SplitStore, indices: list[int], reduce: bool) -> float:
    start = time.perf_counter()
    for i in indices:
        img = load_image(store.image_path(i), reduce_to=SMALL_SIZE[::-1] if reduce else None)
        pixels(img, SMALL_SIZE)
    return len(indices) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="prepared data of a 640x480 world (default: made here)")
    ap.add_argument("--images", type=int, default=160, help="train images of the world made without --data")
    ap.add_argument("--workers", default=None, help="comma-separated worker counts (default 1, 2, 4, ... cores)")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    workers = ([int(w) for w in args.workers.split(",")] if args.workers
               else sorted({w for w in (1, 2, 4, 8, 16) if w <= cores}))
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or make_data(Path(tmp), args.images)
        cfg = load_run_config("gpv1", ["model.text.pretrained=null", "model.visual.pretrained=null"])
        store = SplitStore(data / "train.h5")
        vocab = Vocab.load(data / "vocab.json")
        collate = Collator(build_tokenizer(cfg.model.text, data / "query_vocab.txt"))
        size = tuple(cfg.model.visual.image_size)
        kw = {"image_size": size, "max_answer_len": cfg.model.max_answer_len}
        rng = np.random.default_rng(0)
        order = rng.permutation(len(store))                       # uniform over samples, as train.sampling
        need = args.batches * args.batch
        order = np.resize(order, need)
        batches = [order[s:s + args.batch].tolist() for s in range(0, need, args.batch)]
        dataset = GPVDataset(store, vocab, **kw)
        rows = []
        for w in workers:
            r = rate(dataset, collate, batches, w)
            rows.append({"pipeline": "uint8 pixels", "workers": w, "samples_per_s": r, "per_worker": r / w})
        torch.set_num_threads(1)
        cpu = rate(dataset, collate, batches, 0, clock=time.process_time)
        rows.append({"pipeline": "uint8, in this process, per CPU s", "workers": 0, "samples_per_s": cpu,
                     "per_worker": cpu})
        before = rate(FloatImages(store, vocab, **kw), collate, batches, 1)
        rows.append({"pipeline": "float32 in the worker (before)", "workers": 1, "samples_per_s": before,
                     "per_worker": before})
        whole = [i for i in order[:100].tolist() if np.isnan(store.crop[i]).any()]
        full, reduced = decode_rate(store, whole, False), decode_rate(store, whole, True)
        crops = [i for i in order[:100].tolist() if not np.isnan(store.crop[i]).any()]
        start = time.perf_counter()
        for i in crops:
            pixels(crop(load_image(store.image_path(i)), store.crop[i]), size)
        crop_rate = len(crops) / (time.perf_counter() - start)
    one = rows[0]["samples_per_s"] if rows[0]["workers"] == 1 else None
    print(f"input pipeline, 640x480 JPEGs -> batches of {args.batch} at {size[0]}x{size[1]} "
          f"({cores} CPU cores here; mixed tasks, cls samples crop and enlarge)")
    print(f"{'pipeline':34s} {'workers':>7s} {'samples/s':>10s} {'per worker':>10s} {'vs 1 worker':>11s}")
    for r in rows:
        ratio = f"{r['samples_per_s'] / one:.2f}" if one else "-"
        print(f"{r['pipeline']:34.34s} {r['workers']:7d} {r['samples_per_s']:10.1f} {r['per_worker']:10.1f} {ratio:>11s}")
    print(f"crops in this process: {crop_rate:.1f} samples/s (crop, enlarge to {size[0]}x{size[1]})")
    print(f"decoding whole images for {SMALL_SIZE[0]}x{SMALL_SIZE[1]} in this process: full decode + resize "
          f"{full:.1f}/s, reduced-size decode {reduced:.1f}/s ({reduced / full:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "batch": args.batch, "rows": rows, "crop_rate": crop_rate,
                                         "decode_full": full, "decode_reduced": reduced}, indent=2))


if __name__ == "__main__":
    main()
