"""`gpv report`: a self-contained HTML page of qualitative results on seeded test images."""

from __future__ import annotations

from pathlib import Path

import typer

from gpvcli.cli.common import console, run_argument, run_data_option


def report_command(
    run: Path = run_argument(),
    n: int = typer.Option(10, "--n", help="Number of images; every sample of each is shown."),
    out: Path | None = typer.Option(None, "--out", help="HTML file to write; default RUN/report.html."),
    split: str = typer.Option("test", "--split", help="test, val or train."),
    seed: int = typer.Option(0, "--seed", help="Seed of the image draw."),
    data: Path | None = run_data_option(),
    top_k: int = typer.Option(5, "--top-k", help="Most relevant boxes drawn per sample."),
) -> None:
    """Write one HTML file (images embedded, no external files) with the model's answers and boxes beside
    the ground truth for every sample of N randomly drawn images.

    Example: gpv report runs/tiny --n 10 --out report.html
    """
    from gpvcli.viz.report import build_report

    path = build_report(run, n=n, split=split, out=out, seed=seed, data_dir=data, top_k=top_k)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")
