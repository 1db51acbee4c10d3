"""`gpv evaluate`: decode a prepared split with a checkpoint and score it.

Writes into `OUT` (default `RUN/eval/<split>/`):
    metrics.json       per task: all / seen / unseen and per category group (S, H_vqa,cap, H_cls,loc),
                       plus the protocol (split, decoding, max lengths, metric variants, checkpoint hash)
    predictions.jsonl  one line per sample: sample_id, task, query, prediction, target, score, unseen,
                       and the top-10 boxes (pixel xyxy) with relevance
    captions_results.json  COCO captions results format [{"image_id", "caption"}] (one per caption sample)
    detections.json        COCO detection results format [{"image_id", "category_id", "bbox" xywh, "score"}]
    vqa_results.json       VQA results format [{"question_id", "answer"}]
    boxes.npz              every sample's boxes (N, Q, 4) pixel xyxy, sorted by relevance, and relevance (N, Q)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch.utils.data import DataLoader

from gpvcli import io, runs
from gpvcli.data.dataset import Collator, GPVDataset
from gpvcli.data.store import SplitStore
from gpvcli.device import pick_device
from gpvcli.errors import GPVError
from gpvcli.eval import runner
from gpvcli.progress import progress_bar

if TYPE_CHECKING:
    from gpvcli.model.config import ModelConfig

TOP_BOXES = 10


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def evaluate(run_or_checkpoint: str | Path, *, split: str = "test", data_dir: str | Path | None = None,
             out_dir: str | Path | None = None, batch_size: int = 64, beam_size: int = 1, cls_mask: bool = False,
             limit: int | None = None, tasks: list[str] | None = None, device: str = "auto",
             show_progress: bool = True) -> dict:
    """Decode and score `split` (only `tasks`, when given; only the first `limit` of those samples, when
    given); returns the metrics dict written to metrics.json."""
    from gpvcli.model.checkpoint import WEIGHTS

    if split not in ("test", "val"):
        raise GPVError(f"unknown split {split!r}", hint="use test or val")
    checkpoint = runs.resolve_checkpoint(run_or_checkpoint)
    data_dir = runs.data_of(checkpoint, data_dir)
    store = SplitStore(data_dir / f"{split}.h5")
    indices = np.arange(len(store)) if tasks is None else np.flatnonzero(np.isin(np.asarray(store.tasks), tasks))
    indices = indices[:limit]
    with progress_bar(show_progress) as progress:
        bar = progress.add_task(f"evaluating {split}", total=len(indices), info="")
        preds, cfg = decode_samples(checkpoint, store, indices, device=device, batch_size=batch_size,
                                    beam_size=beam_size, cls_mask=cls_mask, progress=lambda n: progress.advance(bar, n))
    table, scores = runner.score(store, preds)
    result = {
        "tasks": table,
        "protocol": {
            "split": split, "dataset": store.dataset, "data_dir": str(data_dir), "samples": len(preds),
            "decoding": "greedy" if beam_size == 1 else f"beam {beam_size}", "cls_mask": cls_mask,
            "max_answer_len": cfg.max_answer_len,
            "metrics": {"vqa": "official VQA v2 accuracy", "cap": "CIDEr-D (pure-Python PTB-style tokens)",
                        "loc": "per-sample AP@0.5 on corner boxes (corrected GPV-1 metric)",
                        "cls": "exact match of category name or synonym"},
            "checkpoint": str(checkpoint), "checkpoint_sha256": file_hash(checkpoint / WEIGHTS),
            "data_sha256": file_hash(data_dir / f"{split}.h5"),
        },
    }
    out = Path(out_dir) if out_dir else checkpoint.parent / runs.EVAL / split
    write_outputs(out, store, preds, scores, result)
    result["out_dir"] = str(out)
    return result


def decode_samples(checkpoint: Path, store: SplitStore, indices: np.ndarray, *, device: str = "auto",
                   batch_size: int = 64, beam_size: int = 1, cls_mask: bool = False,
                   progress: Callable[[int], None] | None = None) -> tuple[list[dict], ModelConfig]:
    """Decode store samples `indices` with the checkpoint's model on `device`, in one-task batches:
    `runner.predict` records (boxes normalized cxcywh sorted by relevance) and the model's config."""
    from gpvcli.model.checkpoint import load_model

    dev = pick_device(device)
    model, cfg, vocab, tokenizer = load_model(checkpoint, device=str(dev))
    dataset = GPVDataset(store, vocab, image_size=tuple(cfg.visual.image_size), max_answer_len=cfg.max_answer_len,
                         indices=np.asarray(indices))
    loader = DataLoader(dataset, batch_sampler=runner.task_batches(dataset.tasks, batch_size),
                        collate_fn=Collator(tokenizer))
    return runner.predict(model, loader, vocab, device=dev, beam_size=beam_size, cls_mask=cls_mask,
                          progress=progress), cfg


def write_outputs(out: Path, store: SplitStore, preds: list[dict], scores: dict[int, float], result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    io.write_json(out / "metrics.json", result)
    lines, captions, detections, vqa = [], [], [], []
    all_boxes, all_rel = [], []
    for p in preds:
        i = p["index"]
        s = store.sample(i)
        px = runner.pixel_boxes(store, i, p["boxes"])
        all_boxes.append(px)
        all_rel.append(p["relevance"])
        lines.append(json.dumps({
            "sample_id": s["sample_id"], "task": s["task"], "image_id": s["image_id"], "query": s["query"],
            "prediction": p["text"], "target": s["target"], "score": scores.get(i), "unseen": s["unseen"],
            "boxes": np.round(px[:TOP_BOXES].astype(np.float64), 2).tolist(),
            "relevance": np.round(p["relevance"][:TOP_BOXES].astype(np.float64), 4).tolist()}))
        if s["task"] == "cap":
            captions.append({"image_id": s["image_id"], "caption": p["text"]})
        elif s["task"] == "vqa":
            vqa.append({"question_id": int(s["sample_id"].split("/")[1]), "answer": p["text"]})
        elif s["task"] == "loc":
            xywh = np.concatenate([px[:, :2], px[:, 2:] - px[:, :2]], 1)
            detections.extend({"image_id": s["image_id"], "category_id": s["category_id"],
                               "bbox": [round(float(v), 2) for v in b], "score": round(float(r), 5)}
                              for b, r in zip(xywh, p["relevance"]))
    io.write_text(out / "predictions.jsonl", "\n".join(lines) + "\n")
    io.write_json(out / "captions_results.json", captions, indent=None)
    io.write_json(out / "detections.json", detections, indent=None)
    io.write_json(out / "vqa_results.json", vqa, indent=None)
    with io.atomic_path(out / "boxes.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, index=np.array([p["index"] for p in preds]),
                            boxes=np.stack(all_boxes) if all_boxes else np.zeros((0, 0, 4)),
                            relevance=np.stack(all_rel) if all_rel else np.zeros((0, 0)))


TABLE_COLUMNS = [("vqa", "VQA"), ("cap", "Captioning"), ("loc", "Localization"), ("cls", "Classification")]


def format_metric(task: str, value: float | None) -> str:
    """CIDEr-D as is (3 decimals), the other metrics in percent (1 decimal), "-" for none."""
    if value is None:
        return "-"
    return f"{value:.3f}" if task == "cap" else f"{100 * value:.1f}"


def table1_row(tasks: dict) -> tuple[list[str], list[str]]:
    """Header and cells of one row of the seed's Table 1 (Test / Seen / Unseen per task)."""
    header, cells = [], []
    for task, name in TABLE_COLUMNS:
        row = tasks.get(task)
        for col in ("all", "seen", "unseen"):
            header.append(f"{name} {'Test' if col == 'all' else col.capitalize()}")
            cells.append(format_metric(task, None if row is None else row[col]))
    return header, cells
