"""`gpv report`: one self-contained HTML page of qualitative results, as in the paper's examples.

`build_report(run, n=10, split="test", out=None, seed=0, data_dir=None, top_k=5) -> Path` draws `n` images
of a prepared split (seeded), decodes every sample of those images, across all tasks, with the run's
checkpoint (the decoding and per-sample metric of `gpv evaluate`), and writes the page atomically
(default RUN/report.html).

The page: a header (run, checkpoint, data, split, seed), the run's training curves (`gpvcli.viz.curves`, also
saved as RUN/curves.png), a legend, a per-task summary of the page's samples, the grounding checks of the
run's `gpv evaluate` on that split when it has been evaluated with this checkpoint (each task's score with
its image or query swapped, and the dependence), then one section per image with one card per sample. A
card shows the task, a seen/unseen tag, the
sample's score, the picture the model saw (the crop for cls) with its `top_k` most relevant boxes (solid,
coloured, labelled with relevance) and, for loc/refexp, the ground-truth boxes (dashed black and white),
the query, the model's answer and the ground truth (vqa: the answers with counts; cap: the image's reference
captions, the sample's own in bold; cls: the category; loc/refexp: the boxes). Captions are scored by
CIDEr-D with document frequencies from the page's own captions, so they differ from `gpv evaluate`'s.

Self-contained: pictures are JPEG data URIs (the curves a PNG one), the CSS is inline, no scripts, fonts
or links; all text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io as bytes_io
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from gpvcli import boxes as box_ops
from gpvcli import io, runs
from gpvcli.data import categories as cats
from gpvcli.data.images import crop, load_image
from gpvcli.data.prompts import BOX_TASKS, TASKS
from gpvcli.data.store import SplitStore
from gpvcli.errors import GPVError
from gpvcli.eval import runner
from gpvcli.viz.draw import draw_prediction

PICTURE_SIDE = 320      # longer side of every card picture, pixels
JPEG_QUALITY = 85

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0;
       background: #f4f5f7; color: #1d2330; }
main { max-width: 1400px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 24px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 0 0 10px; }
.meta { color: #555; font-size: 13px; margin: 2px 0; word-break: break-all; }
.legend { font-size: 13px; margin: 10px 0; }
.legend .solid { border: 3px solid #e6194b; padding: 0 6px; }
.legend .dashed { border: 3px dashed #111; padding: 0 6px; }
table.summary { border-collapse: collapse; font-size: 13px; margin: 8px 0 16px; background: white; }
table.summary th, table.summary td { border: 1px solid #d6d9de; padding: 4px 10px; text-align: right; }
table.summary th:first-child, table.summary td:first-child { text-align: left; }
section.image { background: white; border: 1px solid #d6d9de; border-radius: 8px; padding: 14px;
                margin: 18px 0; }
section.image .sub { color: #666; font-weight: normal; font-size: 13px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 12px; }
article.card { border: 1px solid #e1e4e8; border-radius: 6px; padding: 8px; background: #fbfbfc;
               font-size: 13px; display: flex; flex-direction: column; gap: 6px; min-width: 0; }
.card header { display: flex; align-items: center; gap: 6px; flex-wrap: wrap; }
.task { font-weight: bold; text-transform: uppercase; font-size: 11px; padding: 2px 6px; border-radius: 4px;
        color: white; }
.task-vqa { background: #4363d8; } .task-cap { background: #3cb44b; } .task-loc { background: #e6194b; }
.task-cls { background: #f58231; } .task-refexp { background: #911eb4; }
.tag { font-size: 11px; padding: 1px 6px; border-radius: 10px; border: 1px solid; }
.tag.seen { color: #2f6f3e; border-color: #2f6f3e; } .tag.unseen { color: #a4262c; border-color: #a4262c; }
.score { margin-left: auto; font-variant-numeric: tabular-nums; font-weight: bold; }
.score.good { color: #2f6f3e; } .score.fair { color: #9a6700; } .score.poor { color: #a4262c; }
.pic { aspect-ratio: 4 / 3; display: flex; align-items: center; justify-content: center; background: #eceef1;
       border-radius: 4px; }
.pic img { max-width: 100%; max-height: 100%; }
dl { margin: 0; display: grid; grid-template-columns: max-content 1fr; gap: 2px 8px; }
dt { color: #666; } dd { margin: 0; overflow-wrap: anywhere; }
dd.answer { font-weight: bold; }
dd ul { margin: 0; padding-left: 16px; }
.sid { color: #999; font-size: 11px; overflow-wrap: anywhere; }
.curves img { max-width: 100%; background: white; border: 1px solid #d6d9de; border-radius: 8px; }
"""


def pick_images(store: SplitStore, n: int, seed: int) -> list[int]:
    """Rows of `n` images (all if fewer) holding at least one sample, drawn with `seed`, in row order."""
    rows = np.unique(store.image)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(rows, size=min(n, len(rows)), replace=False).tolist())


def decode(checkpoint: Path, store: SplitStore, indices: list[int], *, device: str = "auto",
           batch_size: int = 32) -> tuple[dict[int, dict], dict[int, float]]:
    """Greedy predictions (`runner.predict` records, boxes normalized cxcywh sorted by relevance) and
    per-sample scores (`runner.sample_scores`) of store samples `indices`, both keyed by store index."""
    from gpvcli.eval.evaluate import Decoder

    records = Decoder(checkpoint, device=device)(store, np.asarray(indices), batch_size=batch_size)
    return {r["index"]: r for r in records}, runner.sample_scores(store, records)


def draw_dashed_boxes(image: Image.Image, boxes_xyxy: np.ndarray, *, dash: int = 6) -> Image.Image:
    """Draw pixel xyxy boxes on `image` in place as black lines with white dashes (the ground-truth style)."""
    draw = ImageDraw.Draw(image)
    for x0, y0, x1, y1 in np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4):
        draw.rectangle([x0, y0, x1, y1], outline="black", width=4)
        for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
            length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
            for s in np.arange(0.0, length, 2 * dash):
                t0, t1 = s / max(length, 1e-6), min(s + dash, length) / max(length, 1e-6)
                draw.line([a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0,
                           a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1], fill="white", width=2)
    return image


def card_picture(store: SplitStore, sample: dict, record: dict, top_k: int) -> Image.Image:
    """The picture the model saw (the crop for cls), resized so its longer side is PICTURE_SIDE, with the
    `top_k` most relevant predicted boxes and, for box tasks, the ground-truth boxes."""
    image = load_image(store.image_path(sample["index"]))
    full_w, full_h = image.size
    if sample["crop"] is not None:
        image = crop(image, sample["crop"])
    scale = PICTURE_SIDE / max(image.size)
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    image = image.resize((w, h), Image.BILINEAR)
    top = box_ops.cxcywh_to_xyxy(torch.as_tensor(record["boxes"][:top_k], dtype=torch.float32)).clamp(0, 1)
    picture = draw_prediction(image, (top * torch.tensor([w, h, w, h])).tolist(), record["relevance"][:top_k],
                              min_side=min(w, h))
    if sample["task"] in BOX_TASKS and len(sample["boxes"]):
        draw_dashed_boxes(picture, sample["boxes"] * np.array([w / full_w, h / full_h] * 2))
    return picture


def data_uri(picture: Image.Image) -> str:
    buffer = bytes_io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _ground_truth_html(sample: dict) -> str:
    e = html.escape
    task = sample["task"]
    if task == "vqa":
        counts = Counter(sample["answers"]).most_common()
        return " · ".join(f"{e(a)} <small>×{k}</small>" for a, k in counts) or e(sample["target"])
    if task == "cap":
        items = "".join(f"<li><b>{e(r)}</b></li>" if r == sample["target"] else f"<li>{e(r)}</li>"
                        for r in sample["references"])
        return f"<ul>{items}</ul>"
    if task == "cls":
        return e(sample["target"])
    n = len(sample["boxes"])
    if task == "refexp":
        return f"the referred box{'es' if n != 1 else ''} (dashed)"
    return f"{n} box{'es' if n != 1 else ''} of {e(cats.by_id()[sample['category_id']].name)} (dashed)"


def _answer_html(sample: dict, record: dict, top_k: int) -> str:
    if sample["task"] in BOX_TASKS:
        rel = record["relevance"][:top_k]
        if len(rel) == 0:
            return "no boxes drawn"
        return f"top {len(rel)} boxes, relevance {float(rel[0]):.2f} … {float(rel[-1]):.2f}"
    return html.escape(record["text"]) if record["text"] else "<i>(empty)</i>"


def _score_html(task: str, score: float | None) -> str:
    if score is None:
        return ""
    grade = "good" if score >= 0.7 else "fair" if score >= 0.3 else "poor"
    return f'<span class="score {grade}">{html.escape(runner.METRIC_NAMES[task])} {score:.2f}</span>'


def card_html(store: SplitStore, sample: dict, record: dict, score: float | None, top_k: int) -> str:
    e = html.escape
    task = sample["task"]
    tag = "unseen" if sample["unseen"] else "seen"
    return (
        f'<article class="card" data-task="{e(task)}">'
        f'<header><span class="task task-{e(task)}">{e(task)}</span><span class="tag {tag}">{tag}</span>'
        f"{_score_html(task, score)}</header>"
        f'<div class="pic"><img src="{data_uri(card_picture(store, sample, record, top_k))}" '
        f'alt="{e(task)}: {e(sample["query"])}"></div>'
        f"<dl><dt>Query</dt><dd>{e(sample['query'])}</dd>"
        f'<dt>GPV</dt><dd class="answer">{_answer_html(sample, record, top_k)}</dd>'
        f"<dt>Truth</dt><dd>{_ground_truth_html(sample)}</dd></dl>"
        f'<div class="sid">{e(sample["sample_id"])}</div></article>'
    )


def summary_html(samples: list[dict], scores: dict[int, float]) -> str:
    """A table: per task, the page's samples, unseen among them, and their mean score."""
    rows = []
    for task in TASKS:
        of_task = [s for s in samples if s["task"] == task]
        if not of_task:
            continue
        mean = np.mean([scores[s["index"]] for s in of_task])
        rows.append(f"<tr><td>{task}</td><td>{len(of_task)}</td><td>{sum(s['unseen'] for s in of_task)}</td>"
                    f"<td>{html.escape(runner.METRIC_NAMES[task])}</td><td>{mean:.3f}</td></tr>")
    return ('<table class="summary"><tr><th>Task</th><th>Samples</th><th>Unseen</th><th>Metric</th>'
            f"<th>Mean</th></tr>{''.join(rows)}</table>")


def grounding_html(evaluation: dict | None) -> str:
    """The grounding checks of an evaluation's metrics.json (see gpvcli.eval.grounding), or how to get them."""
    if evaluation is None:
        return ('<p class="meta"><b>Grounding checks:</b> not measured for this checkpoint; '
                "run <code>gpv evaluate RUN</code> on this split to add them.</p>")
    rows = []
    for task, row in evaluation["tasks"].items():
        g = row.get("grounding")
        if not g:
            continue
        verdict = "within noise of zero" if g["within_noise"] else "depends on it"
        rows.append(f"<tr><td>{task}</td><td>{g['swap']}</td><td>{g['n']}</td><td>{g['true']:.3f}</td>"
                    f"<td>{g['swapped']:.3f}</td><td>{g['dependence']:+.3f} ± {2 * g['se']:.3f}</td>"
                    f"<td>{verdict}</td></tr>")
    return ("<h2>Grounding checks (whole split, <code>gpv evaluate</code>)</h2>"
            '<table class="summary"><tr><th>Task</th><th>Swapped input</th><th>Samples</th><th>True</th>'
            f"<th>Swapped</th><th>Dependence ± 2 s.e.</th><th>Verdict</th></tr>{''.join(rows)}</table>")


def curves_html(png: bytes | None) -> str:
    """The training curves (PNG bytes of `curves.curves_png`) as a figure; a note when the run logged none."""
    if png is None:
        return '<p class="meta">No training curves: the run logged no step.</p>'
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (f'<figure class="curves"><img src="{uri}" alt="training curves: loss terms, learning rates, '
            "validation metrics\"></figure>")


def render(*, store: SplitStore, rows: list[int], records: dict[int, dict], scores: dict[int, float],
           top_k: int, header: dict[str, str], curves: bytes | None = None, evaluation: dict | None = None) -> str:
    """The whole page for image `rows` of `store`; `header` lines are shown as "key: value"; `curves` the
    training curves PNG (None: a note that there are none); `evaluation` the metrics.json whose grounding
    checks are shown (None: how to get them)."""
    e = html.escape
    by_row: dict[int, list[dict]] = {r: [] for r in rows}
    for i in sorted(records):
        by_row[int(store.image[i])].append(store.sample(i))
    sections = []
    for row in rows:
        samples = sorted(by_row[row], key=lambda s: (TASKS.index(s["task"]), s["index"]))
        w, h = int(store.image_width[row]), int(store.image_height[row])
        cards = "".join(card_html(store, s, records[s["index"]], scores.get(s["index"]), top_k) for s in samples)
        sections.append(
            f'<section class="image" id="image-{int(store.image_id[row])}"><h2>Image {int(store.image_id[row])} '
            f'<span class="sub">{e(store.image_file[row])} · {w}×{h} · {len(samples)} samples</span></h2>'
            f'<div class="cards">{cards}</div></section>')
    all_samples = [s for row in rows for s in by_row[row]]
    meta = "".join(f'<p class="meta"><b>{e(k)}:</b> {e(v)}</p>' for k, v in header.items())
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>GPV qualitative results</title><style>{CSS}</style></head><body><main>"
        f"<h1>GPV qualitative results</h1>{meta}{curves_html(curves)}"
        '<p class="legend"><span class="solid">solid coloured</span> the model\'s most relevant boxes, labelled '
        'with relevance · <span class="dashed">dashed</span> ground-truth boxes (loc, refexp) · '
        "cls pictures are the crop the model saw · cap scores use document frequencies of this page's "
        "captions</p>"
        f"{summary_html(all_samples, scores)}{grounding_html(evaluation)}{''.join(sections)}</main></body></html>\n"
    )


def checkpoint_evaluation(checkpoint: Path, split: str) -> dict | None:
    """The run's saved `gpv evaluate` result on `split` (RUN/eval/SPLIT/metrics.json) when it scored this
    very checkpoint with the grounding checks, else None."""
    from gpvcli.eval.evaluate import file_hash
    from gpvcli.model.checkpoint import WEIGHTS

    path = checkpoint.parent / runs.EVAL / split / "metrics.json"
    if not path.is_file():
        return None
    result = io.read_json(path, "evaluation")
    protocol = result.get("protocol", {})
    if not protocol.get("grounding_checks") or \
            protocol.get("checkpoint_sha256") != file_hash(checkpoint / WEIGHTS):
        return None
    return result


def draw_run_curves(run: Path) -> bytes | None:
    """The run's curves as PNG bytes, also written to RUN/curves.png (None when it logged no step)."""
    from gpvcli import runs
    from gpvcli.viz.curves import draw_curves

    path = draw_curves(run / runs.METRICS, run / runs.CURVES)
    return None if path is None else path.read_bytes()


def build_report(run: str | Path, *, n: int = 10, split: str = "test", out: str | Path | None = None, seed: int = 0,
                 data_dir: str | Path | None = None, top_k: int = 5, device: str = "auto") -> Path:
    """Write the report of `n` seeded images of `split` for a run or checkpoint folder; returns its path."""

    if n < 1:
        raise GPVError(f"--n must be at least 1 (got {n})")
    if top_k < 0:
        raise GPVError(f"--top-k must be 0 or more (got {top_k})")
    if split not in ("train", "val", "test"):
        raise GPVError(f"unknown split {split!r}", hint="use test, val or train")
    checkpoint = runs.resolve_checkpoint(run)
    data_dir = runs.data_of(checkpoint, data_dir)
    store = SplitStore(data_dir / f"{split}.h5")
    rows = pick_images(store, n, seed)
    indices = np.flatnonzero(np.isin(store.image, rows)).tolist()
    records, scores = decode(checkpoint, store, indices, device=device)
    header = {"run": str(checkpoint.parent), "checkpoint": checkpoint.name, "data": str(data_dir),
              "split": f"{split} ({store.dataset})", "images": f"{len(rows)} of {len(np.unique(store.image))}, "
              f"seed {seed}", "samples": str(len(indices))}
    curves_png = draw_run_curves(checkpoint.parent)
    page = render(store=store, rows=rows, records=records, scores=scores, top_k=top_k, header=header,
                  curves=curves_png, evaluation=checkpoint_evaluation(checkpoint, split))
    return io.write_text(Path(out) if out else checkpoint.parent / runs.REPORT, page)
