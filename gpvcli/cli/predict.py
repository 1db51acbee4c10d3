"""`gpv predict`: answer a task on your own image (or a folder, or a JSONL of image/text pairs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gpvcli.cli.common import console
from gpvcli.errors import GPVError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _pairs(image: Path, text: str | None) -> list[tuple[Path, str]]:
    """(image, text) pairs: one image, every image of a folder, or the lines of a JSONL file."""
    if image.suffix == ".jsonl":
        if not image.is_file():
            raise GPVError(f"JSONL file not found: {image}", hint="check the path")
        try:
            lines = image.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise GPVError(f"{image} is not UTF-8 text (byte {e.start}: {e.reason})", hint="save it as UTF-8")
        pairs = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                path, query = Path(row["image"]), row.get("text") or text or ""
                if not isinstance(query, str):
                    raise TypeError(query)
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise GPVError(f"{image} line {n} is not a JSON object with an 'image' (and 'text') string",
                               hint='write one {"image": "a.jpg", "text": "What is this?"} per line')
            pairs.append((path if path.is_absolute() else (image.parent / path).resolve(), query))
        if not pairs:
            raise GPVError(f"{image} has no lines",
                           hint='write one {"image": "a.jpg", "text": "What is this?"} per line')
        return pairs
    if text is None:
        raise GPVError("give the task text after the image", hint='e.g. gpv predict img.jpg "Locate dog."')
    if image.is_dir():
        files = sorted(p for p in image.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise GPVError(f"no images in {image}",
                           hint=f"give a folder of {', '.join(sorted(IMAGE_SUFFIXES))} files")
        return [(p, text) for p in files]
    return [(image, text)]


def predict_command(
    image: Path = typer.Argument(..., help="An image, a folder of images, or a JSONL of {image, text} lines."),
    text: str | None = typer.Argument(None, help='The task in words, e.g. "Locate dog." or "What is this?".'),
    run: Path | None = typer.Option(None, "--run", help="Run folder (default: the latest under ./runs)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A checkpoint folder (best/ or last/)."),
    task: str | None = typer.Option(None, "--task", help="vqa, cap, loc, cls or refexp; default: from the words."),
    top_k: int = typer.Option(5, "--top-k", help="Boxes to report."),
    beam: int = typer.Option(1, "--beam", help="Beam size (1 = greedy)."),
    out: Path | None = typer.Option(None, "--out", help="Draw the top boxes and the answer: a file, or a folder "
                                    "in batch mode."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one line per prediction)."),
) -> None:
    """Answer with text and relevance-scored boxes (pixel xyxy).

    Example: gpv predict photo.jpg "Locate dog." --out annotated.jpg
    """
    from gpvcli import api
    from gpvcli.data.images import load_image
    from gpvcli.io import atomic_path
    from gpvcli.viz.draw import draw_prediction

    if run is not None and checkpoint is not None:
        raise GPVError("give --run or --checkpoint, not both")
    pairs = _pairs(image, text)
    missing = next((p for p, _ in pairs if not p.is_file()), None)
    if missing is not None:                      # before the model loads and before anything is drawn
        raise GPVError(f"image not found: {missing}", hint="check the path")
    predictor = api.load(checkpoint or run)
    batch_mode = len(pairs) > 1 or image.is_dir() or image.suffix == ".jsonl"
    for start in range(0, len(pairs), 16):
        chunk = pairs[start:start + 16]
        images = [load_image(p) for p, _ in chunk]
        preds = predictor.predict_batch(images, [t for _, t in chunk], tasks=[task] * len(chunk) if task else None,
                                        top_k=top_k, beam_size=beam)
        for (path, query), img, pred in zip(chunk, images, preds):
            if out is not None:
                target = out / f"{path.stem}.annotated.jpg" if batch_mode else out
                drawn = draw_prediction(img, pred.boxes, pred.scores, f"{query}  ->  {pred.text}")
                with atomic_path(target) as tmp:
                    drawn.save(tmp, format="PNG" if target.suffix.lower() == ".png" else "JPEG", quality=92)
            if as_json:
                typer.echo(json.dumps({"image": str(path), "query": query, **pred.to_dict()}))
            else:
                console.print(f"[bold]{path.name}[/] {query!r} ({pred.task}) -> [green]{pred.text or '(empty)'}[/]")
                for box, score in zip(pred.boxes, pred.scores):
                    console.print(f"  {score:.3f}  [{', '.join(f'{v:.1f}' for v in box)}]")
    if out is not None and not as_json:
        console.print(f"drawn to {out}")
