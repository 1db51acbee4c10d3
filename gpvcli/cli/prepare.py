"""`gpv prepare`: build COCO or COCO-SCE samples, the answer vocabulary and Table 5."""

from __future__ import annotations

from pathlib import Path

import typer

from gpvcli.cli.common import console, print_table


def prepare_command(
    split: str = typer.Option("sce", "--split", help="coco (original split) or sce (COCO-SCE)."),
    coco_dir: Path | None = typer.Option(
        None, "--coco-dir", help="Folder with real COCO 2014 + VQA v2 files; default: the synthetic world "
        "in $GPV_HOME/synth, generated on first use."),
    out: Path | None = typer.Option(None, "--out", help="Output folder; default $GPV_HOME/prepared/SPLIT."),
    seed: int = typer.Option(0, "--seed", help="Seed of the prompt draws and the train/val image split."),
    min_count: int = typer.Option(1, "--min-count", help="Keep answer words seen at least this often."),
    image_split_file: Path | None = typer.Option(
        None, "--image-split-file", help='JSON {"train": [ids], "val": [ids]} to split train2014 for sce.'),
) -> None:
    """Build the prepared data (HDF5 per split, vocab.json, stats.json).

    Example: gpv prepare --split sce
    """
    from gpvcli.data.prepare import prepare
    from gpvcli.default_data import synth_world
    from gpvcli.paths import default_prepared_dir

    stats = prepare(split, coco_dir=coco_dir or synth_world(), out_dir=out, seed=seed, min_count=min_count,
                    image_split_file=image_split_file)
    cols = stats["columns"]
    print_table(f"Dataset sizes ({split}; seed Table 5)", cols,
                [[task, *(row[c] for c in cols)] for task, row in stats["rows"].items()], first_column="Task")
    console.print(f"answer vocabulary: {stats['answer_vocab_size']} words; "
                  f"written to {out or default_prepared_dir(split)}")
