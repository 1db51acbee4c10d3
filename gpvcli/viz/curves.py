"""A run's training curves, drawn with matplotlib from its metrics.jsonl.

`draw_curves(metrics_jsonl, out_png) -> Path | None` writes one PNG of three panels against the optimizer
step: every loss term (unscaled, the total `loss` in black; log scale), the learning rate of each parameter
group, and each validation metric (every task's score on the validation subset, and the selection metric).
It returns None when the file holds no logged step.

`TensorBoardLog(folder)` mirrors the same records into TensorBoard event files when the `tensorboard`
package is installed (`pip install gpvcli[tensorboard]`); without it, it does nothing.
"""

from __future__ import annotations

import io as bytes_io
import json
from pathlib import Path

from gpvcli import io


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict]]:
    """The step records and the validation records of a metrics.jsonl, in file order (a last line cut short
    by a kill is skipped)."""
    steps, validations = [], []
    path = Path(path)
    if not path.is_file():
        return steps, validations
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        (validations if "validation" in record else steps).append(record)
    return steps, validations


def scalars(record: dict) -> dict[str, float]:
    """One metrics.jsonl record as named scalars: `loss/NAME` (unscaled terms), `lr/GROUP`,
    `val/TASK` (a task's score, or a pretraining stage's metric) and `val/selection`."""
    if "validation" in record:
        result = record["validation"]
        out = {}
        for task, row in result["tasks"].items():   # GPV: a row per task; pretraining stages: a number per metric
            value = row.get("all") if isinstance(row, dict) else row
            if value is not None:
                out[f"val/{task}"] = value
        out["val/selection"] = result["selection"]
        return out
    out = {f"loss/{k}": v for k, v in record.items() if k.startswith("loss") and not k.endswith("_scaled")}
    out.update({f"lr/{group}": lr for group, lr in record.get("lr", {}).items()})
    return out


def _series(records: list[dict], prefix: str) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        for name, value in scalars(record).items():
            if name.startswith(prefix) and value is not None:
                xs, ys = series.setdefault(name[len(prefix):], ([], []))
                xs.append(record["step"])
                ys.append(value)
    return series


def curves_png(path: str | Path) -> bytes | None:
    """The curves of metrics.jsonl `path` as PNG bytes (None without a logged step)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    steps, validations = read_metrics(path)
    if not steps:
        return None
    fig = Figure(figsize=(15, 4.2), dpi=100, layout="constrained")
    panels = fig.subplots(1, 3)
    for ax, (title, prefix, records) in zip(panels, [("Loss terms (unscaled)", "loss/", steps),
                                                     ("Learning rate", "lr/", steps),
                                                     ("Validation", "val/", validations)]):
        for name, (xs, ys) in sorted(_series(records, prefix).items()):
            style = {"color": "black", "linewidth": 2} if name in ("loss", "selection") else {}
            ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, label=name, **style)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax.transAxes)
        if prefix == "loss/" and all(y > 0 for line in ax.lines for y in line.get_ydata()):
            ax.set_yscale("log")
    buffer = bytes_io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def draw_curves(path: str | Path, out: str | Path) -> Path | None:
    """Write the curves of metrics.jsonl `path` to the PNG `out` (atomically); None without a logged step."""
    png = curves_png(path)
    if png is None:
        return None
    with io.atomic_path(out) as tmp:
        tmp.write_bytes(png)
    return Path(out)


class TensorBoardLog:
    """TensorBoard event files of a run's metrics.jsonl records, written to `folder` when the `tensorboard`
    package is installed (`available`); a no-op without it. `purge_step`: a resumed run's step, after which
    events of the interrupted run are dropped (they are logged again)."""

    def __init__(self, folder: str | Path, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:                      # torch's writer needs the tensorboard package
            self.writer = None
        else:
            self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)
        self.folder = Path(folder)

    @property
    def available(self) -> bool:
        return self.writer is not None

    def add(self, record: dict) -> None:
        if self.writer is None:
            return
        for name, value in scalars(record).items():
            if value is not None:
                self.writer.add_scalar(name, value, global_step=record["step"])
        self.writer.flush()


def tensorboard_log(run: Path, step: int) -> TensorBoardLog:
    """The run's TensorBoard log (RUN/tensorboard) from optimizer step `step` on; says once where it writes."""
    from gpvcli import runs

    log = TensorBoardLog(run / runs.TENSORBOARD, purge_step=step or None)
    if log.available:
        print(f"TensorBoard event files in {log.folder} (view: tensorboard --logdir {log.folder})", flush=True)
    return log
