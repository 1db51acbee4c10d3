"""The Python API in three lines:

    from gpvcli import api
    model = api.load("runs/tiny")                       # a run folder or a checkpoint folder
    out = model.predict("photo.jpg", "Locate dog.")     # out.text, out.boxes (pixel xyxy), out.scores

Over files: `image_text_pairs("photos/", "What is this?")` (one image, a folder, or a JSONL of
{"image", "text"} lines) and `model.predict_files(pairs)`, which yields (path, text, image, prediction).

The task is inferred from the words (a Table 4 captioning / classification / localization prompt, else a
question); pass `task=` to say it yourself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gpvcli import boxes as box_ops
from gpvcli.data.dataset import MAX_QUERY_TOKENS
from gpvcli.data.images import load_image, to_rgb, to_tensor
from gpvcli.data.prompts import BOX_TASKS, CAPTION_PROMPTS, CLASSIFICATION_PROMPTS, TASKS
from gpvcli.errors import GPVError
from gpvcli.runs import latest_run, resolve_checkpoint

_LOCATE = re.compile(r"^\s*(locate|find)\b", re.IGNORECASE)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
FILE_BATCH = 16             # images read and predicted together by `predict_files`


def infer_task(text: str) -> str:
    """cap / cls for their Table 4 prompts, loc for "Locate ..." / "Find ...", else vqa."""
    t = text.strip()
    if t in CAPTION_PROMPTS:
        return "cap"
    if t in CLASSIFICATION_PROMPTS:
        return "cls"
    if _LOCATE.match(t):
        return "loc"
    return "vqa"


@dataclass
class Prediction:
    text: str
    task: str
    boxes: list[list[float]] = field(default_factory=list)    # pixel xyxy, most relevant first
    scores: list[float] = field(default_factory=list)         # relevance of each box

    def to_dict(self) -> dict:
        return {"task": self.task, "text": self.text,
                "boxes": [[round(v, 2) for v in b] for b in self.boxes], "scores": [round(s, 4) for s in self.scores]}

    def caption(self, query: str) -> str:
        """What a person reads beside the result: `query -> text` for a text task; for a box task (loc,
        refexp) the query alone, since the boxes and their relevance are the answer."""
        return query if self.task in BOX_TASKS else f"{query}  ->  {self.text or '(empty)'}"


class GPVPredictor:
    def __init__(self, model, cfg, vocab, tokenizer, device: torch.device, checkpoint: Path):
        self.model, self.cfg, self.vocab, self.tokenizer = model, cfg, vocab, tokenizer
        self.device, self.checkpoint = device, checkpoint

    @torch.no_grad()
    def predict_batch(self, images: list[Image.Image | str | Path], texts: list[str], *, tasks: list[str] | None = None,
                      top_k: int = 5, beam_size: int = 1) -> list[Prediction]:
        if len(images) != len(texts):
            raise GPVError(f"{len(images)} images but {len(texts)} texts")
        for t in texts:
            if not t or not t.strip():
                raise GPVError("the task text is empty", hint='say what to do, e.g. "Locate dog."')
        if top_k < 0 or beam_size < 1:
            raise GPVError(f"top-k {top_k}, beam size {beam_size}: the top-k must be 0 or more and the beam size "
                           "1 or more", hint="e.g. --top-k 5 --beam 1")
        tasks = tasks or [infer_task(t) for t in texts]
        for task in tasks:
            if task not in TASKS:
                raise GPVError(f"unknown task {task!r}", hint=f"tasks: {', '.join(TASKS)}")
        enc = self.tokenizer([t.strip() for t in texts], padding=True, truncation=True,
                             max_length=MAX_QUERY_TOKENS + 1, return_tensors="pt")
        if enc["input_ids"].shape[1] > MAX_QUERY_TOKENS:
            long = texts[int(enc["attention_mask"].sum(1).argmax())].strip()
            raise GPVError(f"the task text {long[:40]!r}... ({len(long):,} characters) is longer than the "
                           f"{MAX_QUERY_TOKENS} tokens the model reads", hint="shorten it to a sentence or two")
        pil = [to_rgb(im) if isinstance(im, Image.Image) else load_image(im) for im in images]
        batch = torch.stack([to_tensor(im, tuple(self.cfg.visual.image_size)) for im in pil]).to(self.device)
        out = self.model.generate(query_ids=enc["input_ids"].to(self.device),
                                  query_mask=enc["attention_mask"].to(self.device), task=tasks, images=batch,
                                  beam_size=beam_size)
        order = torch.sort(out["relevance"], dim=1, descending=True, stable=True).indices
        results = []
        for b, (im, task) in enumerate(zip(pil, tasks)):
            keep = order[b, :top_k]
            xyxy = box_ops.cxcywh_to_xyxy(out["boxes"][b, keep].float().cpu()).numpy()
            xyxy = np.clip(xyxy, 0, 1) * np.array([im.width, im.height] * 2, np.float32)
            results.append(Prediction(text=self.vocab.decode(out["tokens"][b].tolist()), task=task,
                                      boxes=xyxy.astype(float).tolist(),
                                      scores=out["relevance"][b, keep].float().cpu().tolist()))
        return results

    def predict(self, image: Image.Image | str | Path, text: str, *, task: str | None = None, top_k: int = 5,
                beam_size: int = 1) -> Prediction:
        return self.predict_batch([image], [text], tasks=[task] if task else None, top_k=top_k,
                                  beam_size=beam_size)[0]

    def predict_files(self, pairs: list[tuple[Path, str]], *, task: str | None = None, top_k: int = 5,
                      beam_size: int = 1) -> Iterator[tuple[Path, str, Image.Image, Prediction]]:
        """(path, text, image, prediction) for each (image file, text) pair, in order, read and predicted
        FILE_BATCH at a time."""
        for start in range(0, len(pairs), FILE_BATCH):
            chunk = pairs[start:start + FILE_BATCH]
            images = [load_image(p) for p, _ in chunk]
            preds = self.predict_batch(images, [t for _, t in chunk], tasks=[task] * len(chunk) if task else None,
                                       top_k=top_k, beam_size=beam_size)
            for (path, text), image, pred in zip(chunk, images, preds):
                yield path, text, image, pred


def image_text_pairs(source: str | Path, text: str | None = None) -> list[tuple[Path, str]]:
    """(image, text) pairs: one image with `text`, every image of a folder with `text`, or the lines of a
    JSONL file ({"image": path relative to the file or absolute, "text": ..., `text` when absent}).
    Every image is checked to exist."""
    source = Path(source)
    if source.suffix == ".jsonl":
        pairs = _jsonl_pairs(source, text)
    elif text is None:
        raise GPVError("give the task text after the image", hint='e.g. gpv predict img.jpg "Locate dog."')
    elif source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise GPVError(f"no images in {source}",
                           hint=f"give a folder of {', '.join(sorted(IMAGE_SUFFIXES))} files")
        pairs = [(p, text) for p in files]
    else:
        pairs = [(source, text)]
    missing = next((p for p, _ in pairs if not p.is_file()), None)
    if missing is not None:
        raise GPVError(f"image not found: {missing}", hint="check the path")
    return pairs


def _jsonl_pairs(path: Path, text: str | None) -> list[tuple[Path, str]]:
    hint = 'write one {"image": "a.jpg", "text": "What is this?"} per line'
    if not path.is_file():
        raise GPVError(f"JSONL file not found: {path}", hint="check the path")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise GPVError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})", hint="save it as UTF-8")
    pairs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            image, query = Path(row["image"]), row.get("text") or text or ""
            if not isinstance(query, str):
                raise TypeError(query)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise GPVError(f"{path} line {n} is not a JSON object with an 'image' (and 'text') string", hint=hint)
        pairs.append((image if image.is_absolute() else (path.parent / image).resolve(), query))
    if not pairs:
        raise GPVError(f"{path} has no lines", hint=hint)
    return pairs


def load(run_or_checkpoint: str | Path | None = None, *, device: str = "auto") -> GPVPredictor:
    """A predictor from a run folder (its best/ checkpoint, else last/) or a checkpoint folder;
    with None, the latest run under ./runs."""
    from gpvcli.device import pick_device
    from gpvcli.model.checkpoint import load_model

    checkpoint = resolve_checkpoint(run_or_checkpoint if run_or_checkpoint is not None else latest_run())
    dev = pick_device(device)
    model, cfg, vocab, tokenizer = load_model(checkpoint, device=str(dev))
    model.eval()
    return GPVPredictor(model, cfg, vocab, tokenizer, dev, checkpoint)
