"""The run folder: the one owner of its layout, asked by every command that writes or reads a run.

A run folder (`runs/NAME/`, written by `gpv train`) holds:
    config.yaml      the resolved run config (model + train), written when the run starts
    run.json         the run record: the prepared data it trains on ("data_dir", "data_fingerprint"), its
                     "stage" and the load report of each pretrained encoder ("weights"); `--resume` trains on
                     that data again
    metrics.jsonl    one JSON line per log step and per validation
    last/, best/     checkpoints: the stage's weights (for GPV `gpvcli.model.checkpoint`'s model.safetensors,
                     model_config.yaml, vocab, tokenizer), trainer.pt (optimizer, scheduler and RNG states)
                     and state.json (epoch, step, best metric)
    features/        the visual feature cache of the frozen-visual epochs (when used)
    tensorboard/     TensorBoard event files of metrics.jsonl (when the tensorboard package is installed)
    eval/SPLIT/      `gpv evaluate` outputs
    report.html      `gpv report`'s page, which opens with curves.png, the training curves of metrics.jsonl
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from gpvcli import io, paths
from gpvcli.errors import GPVError

CONFIG = "config.yaml"
RECORD = "run.json"
METRICS = "metrics.jsonl"
LAST, BEST = "last", "best"
STATE = "state.json"
TRAINER_STATE = "trainer.pt"
FEATURES = "features"
EVAL = "eval"
REPORT = "report.html"
CURVES = "curves.png"
TENSORBOARD = "tensorboard"


def restore_checkpoints(run: Path) -> Path:
    """Restore last/ and best/ of a save cut short by a kill (see `io.atomic_dir`); returns last/."""
    for name in (LAST, BEST):
        io.restore_interrupted(run / name)
    return run / LAST


def write_record(run: Path, *, data_dir: Path, stage: str, weights: dict | None = None) -> None:
    """run.json: the prepared data, the stage and the load report of each pretrained encoder ("weights";
    None keeps the one recorded, when the record is rewritten because the data moved)."""
    if weights is None:
        weights = io.read_json(run / RECORD, "run record").get("weights", {}) if (run / RECORD).is_file() else {}
    io.write_json(run / RECORD, {"data_dir": str(data_dir.resolve()), "data_fingerprint": data_fingerprint(data_dir),
                                 "stage": stage, "weights": weights})


def data_fingerprint(data_dir: Path) -> str:
    """sha256 over the files of a prepared folder that fix a model's vocabularies and the sample counts."""
    digest = hashlib.sha256()
    for name in ("vocab.json", "query_vocab.txt", "stats.json"):
        if (data_dir / name).is_file():
            digest.update((data_dir / name).read_bytes())
    return digest.hexdigest()


def resume_data(run: Path, data_dir: str | Path | None) -> Path | None:
    """The prepared data to resume `run` on: the folder its run.json names (None for a run without one: then
    `data_dir`). A `data_dir` is accepted only when it is that folder or, when that folder has gone, holds
    the same data (same `data_fingerprint`: moved or copied elsewhere)."""
    if not (run / RECORD).is_file():
        return Path(data_dir) if data_dir else None
    record = io.read_json(run / RECORD, "run record")
    recorded = Path(record["data_dir"])
    present = (recorded / "train.h5").is_file()
    if data_dir is None:
        if not present:
            raise GPVError(f"{run} was trained on the prepared data in {recorded}, which is no longer there",
                           hint="if it moved, pass its new place as --data")
        return recorded
    given = Path(data_dir).resolve()
    if given == recorded:
        return given
    if present:
        raise GPVError(f"--data {data_dir} is not the data {run} was trained on ({recorded})",
                       hint="resume without --data, or start a new run in another --run")
    if record.get("data_fingerprint") not in (None, data_fingerprint(given)):
        raise GPVError(f"--data {data_dir} does not hold the data {run} was trained on (in {recorded}, now gone): "
                       "its vocabularies or sample counts differ", hint="pass the folder that data moved to")
    return given


def recorded_data_dir(run_or_checkpoint: Path) -> Path | None:
    """The prepared data a run was trained on (in its run.json), from the run or one of its checkpoints."""
    for folder in (run_or_checkpoint, run_or_checkpoint.parent):
        meta = folder / RECORD
        if meta.is_file():
            return Path(io.read_json(meta, "run record")["data_dir"])
    return None


def data_of(checkpoint: Path, data_dir: str | Path | None = None) -> Path:
    """The prepared data to read with a checkpoint: `data_dir`, else the run's (run.json), else the default."""
    return Path(data_dir) if data_dir else recorded_data_dir(checkpoint) or paths.default_prepared_dir("sce")


def steps_done(run: Path) -> int | None:
    """The optimizer steps of the run's last/ checkpoint (None without one), restoring an interrupted save."""
    state = restore_checkpoints(run) / STATE
    return json.loads(state.read_text())["step"] if state.is_file() else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A GPV checkpoint folder from a run folder (best/, else last/) or a checkpoint folder itself."""
    from gpvcli.model.checkpoint import WEIGHTS

    path = Path(path)
    for candidate in (path, path / BEST, path / LAST):
        if (candidate / WEIGHTS).is_file():
            return candidate
    hint = f"give a run folder written by `gpv train` or one of its {BEST}/ or {LAST}/ folders"
    if not path.exists():
        raise GPVError(f"no run or checkpoint at {path}", hint=hint)
    raise GPVError(f"{path} holds no GPV checkpoint ({WEIGHTS})", hint=hint)


def latest_run(root: str | Path = "runs") -> Path:
    """The most recently written run folder under `root` that holds a GPV checkpoint."""
    from gpvcli.model.checkpoint import WEIGHTS

    root = Path(root)
    runs = [p for p in root.glob("*") if (p / BEST / WEIGHTS).is_file()
            or (p / LAST / WEIGHTS).is_file()] if root.is_dir() else []
    if not runs:
        raise GPVError(f"no trained run under {root}/", hint="train one with `gpv train` (or `gpv quickstart`), "
                                                             "or pass --run / --checkpoint")
    return max(runs, key=lambda p: max(f.stat().st_mtime for f in p.glob(f"*/{WEIGHTS}")))
