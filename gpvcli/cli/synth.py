"""`gpv synth`: write the synthetic COCO-format world (images, instances, captions, VQA, refexp)."""

from __future__ import annotations

from pathlib import Path

import typer

from gpvcli.cli.common import console, print_table
from gpvcli.errors import GPVError


def parse_image_size(text: str) -> tuple[int, int]:
    """"640x480" -> (640, 480): width and height in pixels."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise GPVError(f"--image-size {text!r} is not WxH", hint="e.g. --image-size 640x480")
    return int(parts[0]), int(parts[1])


def synth_command(
    out: Path | None = typer.Argument(None, help="Output folder; default $GPV_HOME/synth."),
    train_images: int = typer.Option(2000, "--train-images", help="Images in train2014."),
    val_images: int = typer.Option(500, "--val-images", help="Images in val2014."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same arguments give the same files."),
    width: int = typer.Option(128, "--width", help="Image width in pixels."),
    height: int = typer.Option(96, "--height", help="Image height in pixels."),
    image_size: str | None = typer.Option(None, "--image-size", help="WxH in pixels, e.g. 640x480 (COCO's "
                                          "typical size); replaces --width and --height."),
) -> None:
    """Generate the synthetic world in the COCO 2014 / VQA v2 file formats, with its shortcut baselines.

    Example: gpv synth data/synth --train-images 2000 --val-images 500 --seed 0
    Example: gpv synth data/synth640 --train-images 200 --val-images 50 --image-size 640x480
    """
    from gpvcli.paths import default_synth_dir
    from gpvcli.synth.world import generate

    if image_size is not None:
        width, height = parse_image_size(image_size)
    summary = generate(out or default_synth_dir(), train_images=train_images, val_images=val_images,
                       seed=seed, width=width, height=height, show_progress=True)
    splits = ("train2014", "val2014")
    kinds = {"images": "images/{s}", "instances": "instances_{s}.json", "captions": "captions_{s}.json",
             "questions": "v2_OpenEnded_mscoco_{s}_questions.json", "refexps": "refexp_{s}.json"}
    rows = [[kind, *(summary["counts"][name.format(s=s)] for s in splits)] for kind, name in kinds.items()]
    print_table("Synthetic world", list(splits), rows)
    b = summary["baselines"]
    console.print(f"image-blind answer prior, VQA accuracy on val: {b['answer_prior_vqa_accuracy']:.3f}")
    console.print(f"class-blind localizer, AP@0.5 on val: {b['class_blind_localizer_ap50']:.3f}")
    console.print(f"written to {summary['out_dir']} in {summary['seconds']:.1f} s")
