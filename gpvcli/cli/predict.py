"""`gpv predict`: answer a task on your own image (or a folder, or a JSONL of image/text pairs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gpvcli.cli.common import beam_option, console, json_option, print_prediction
from gpvcli.errors import GPVError


def predict_command(
    image: Path = typer.Argument(..., help="An image, a folder of images, or a JSONL of {image, text} lines."),
    text: str | None = typer.Argument(None, help='The task in words, e.g. "Locate dog." or "What is this?".'),
    run: Path | None = typer.Option(None, "--run", help="Run folder (default: the latest under ./runs)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A checkpoint folder (best/ or last/)."),
    task: str | None = typer.Option(None, "--task", help="vqa, cap, loc, cls or refexp; default: from the words."),
    top_k: int = typer.Option(5, "--top-k", help="Boxes to report."),
    beam: int = beam_option(),
    out: Path | None = typer.Option(None, "--out", help="Draw the top boxes and the answer: a file, or a folder "
                                    "in batch mode."),
    as_json: bool = json_option("JSON (one line per prediction)"),
) -> None:
    """Answer with text and relevance-scored boxes (pixel xyxy); box tasks (loc, refexp) show boxes only.

    Example: gpv predict photo.jpg "Locate dog." --out annotated.jpg
    """
    from gpvcli import api
    from gpvcli.viz.draw import save_drawing

    if run is not None and checkpoint is not None:
        raise GPVError("give --run or --checkpoint, not both")
    pairs = api.image_text_pairs(image, text)      # before the model loads and before anything is drawn
    predictor = api.load(checkpoint or run)
    batch_mode = len(pairs) > 1 or image.is_dir() or image.suffix == ".jsonl"
    for path, query, img, pred in predictor.predict_files(pairs, task=task, top_k=top_k, beam_size=beam):
        if out is not None:
            save_drawing(img, pred.boxes, pred.scores, pred.caption(query),
                         out / f"{path.stem}.annotated.jpg" if batch_mode else out)
        if as_json:
            typer.echo(json.dumps({"image": str(path), "query": query, **pred.to_dict()}))
        else:
            print_prediction(query, pred, label=path.name)
    if out is not None and not as_json:
        console.print(f"drawn to {out}")
