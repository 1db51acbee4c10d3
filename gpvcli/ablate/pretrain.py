"""The variants' shared starting point: the paper's ablations all start from one pretrained DETR (and BERT).

Here that is the tiny recipe's pre-GPV stages (`gpvcli.quickstart.pretrain_encoders`: backbone warm-up,
then region-word alignment), run once for the whole ablation, or an existing align run (`--from RUN`, e.g.
the quickstart's runs/quickstart/align). Every variant starts its GPV stage from that checkpoint through
`train.init_from` (the modules a variant changes, per-task text heads and relevance conditioning, start as
initialised: the align stage does not train them) and keeps its visual encoder frozen, so the features of
the train and test images are computed once here and shared: every variant trains on the first and is scored
on the second. No variant of Tables 1-3 changes the visual encoder.

OUT/pretrained/
    settings.json         what the pretraining was started with (config, data, budget, model overrides, --from);
                          a later `gpv ablate` with other ones is refused (another --out keeps both)
    classifier/, align/   the two stages, each a `gpv train` run (without --from)
    features/train.h5     the frozen visual encoder's outputs for every train image and crop of the four tasks
    features/test.h5      the same for the test split
    done.json             written last: the checkpoint the variants start from, and the seconds taken
A killed pretraining resumes where it stopped; a finished one is reused.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from gpvcli import io, locks, quickstart, runs
from gpvcli.config import DEFAULT_PRESET
from gpvcli.errors import GPVError
from gpvcli.train.distributed import launched_rank

FOLDER = "pretrained"
DONE = "done.json"
CACHE = Path(runs.FEATURES) / "train.h5"   # as a run folder's (`gpvcli.train.trainer`)
TEST_CACHE = Path(runs.FEATURES) / "test.h5"


def folder_of(out: Path) -> Path:
    return Path(out) / FOLDER


def pretrains(config: str) -> bool:
    """Whether the ablation of preset `config` pretrains its encoders itself (the tiny recipe's stages
    exist for the tiny preset; other presets start from their own pretrained weights)."""
    return config == DEFAULT_PRESET


def start_of(out: Path, *, config: str, source: str | Path | None) -> Path | None:
    """The checkpoint folder every variant starts from: `source`'s (an align run, --from), else the shared
    pretraining's align/last/ (tiny preset), else None (the preset's own pretrained weights)."""
    if source is not None:
        from gpvcli.model.checkpoint import WEIGHTS

        last = Path(source) / runs.LAST     # a run folder: its last/, as the quickstart's GPV stage takes it
        checkpoint = last if (last / WEIGHTS).is_file() else runs.resolve_checkpoint(source)
        stage = _stage_of(checkpoint)
        if stage not in (None, "align"):
            raise GPVError(f"--from {source} is a {stage} run: the variants start from an align run's encoders",
                           hint="give an align run, e.g. runs/quickstart/align (a gpv run's co-attention and "
                                "heads have trained on tasks that some variants leave out)")
        return checkpoint.resolve()
    if pretrains(config):
        return (folder_of(out) / "align" / runs.LAST).resolve()
    return None


def _stage_of(checkpoint: Path) -> str | None:
    for folder in (checkpoint, checkpoint.parent):
        if (folder / runs.RECORD).is_file():
            return io.read_json(folder / runs.RECORD, "run record").get("stage")
    return None


def model_sets(sets: list[str]) -> list[str]:
    """The --set overrides the pretraining takes too: the model's (a variant loads its weights whole)."""
    return [s for s in sets if s.split("=", 1)[0].strip().startswith("model.")]


def settings_of(settings: dict) -> dict:
    """What decides the shared pretraining (saved as OUT/pretrained/settings.json)."""
    return {"config": settings["config"], "data_dir": settings["data_dir"], "budget": settings["budget"],
            "sets": model_sets(settings["sets"]), "from": settings["from"], "start": settings["start"]}


def ensure(out: Path, settings: dict, *, variant_config, show_progress: bool = True,
           log: Callable[[str], None] = lambda message: None) -> dict | None:
    """Run (or resume, or reuse) the shared pretraining and the shared feature cache in OUT/pretrained/;
    returns done.json (None on the non-zero ranks of a torchrun launch, which only train).
    `variant_config`: the resolved run config of the four-task variant (whose train set's features are
    cached)."""
    folder = folder_of(out)
    wanted = settings_of(settings)
    rank0 = launched_rank() == 0
    done = finished(folder, wanted)     # read without the lock: the variants of a job array start side by side
    if done is not None:
        return done
    with locks.writing(folder, option="--out") if rank0 else nullcontext():
        done = finished(folder, wanted)
        if done is not None:
            return done
        saved = folder / "settings.json"
        if rank0:
            io.write_json(saved, wanted)
        data = Path(settings["data_dir"])
        start, seconds = time.perf_counter(), {}
        if settings["from"] is None and pretrains(settings["config"]):
            log("shared pretraining: backbone warm-up and alignment (the quickstart's stages)")
            quickstart.pretrain_encoders(folder, data, budget=settings["budget"], sets=wanted["sets"],
                                         show_progress=show_progress, rerun="gpv ablate")
            seconds["stages"] = round(time.perf_counter() - start, 1)
        if not rank0:
            return None
        cached = time.perf_counter()
        if settings["start"] is not None and uses_cache(variant_config):
            log("shared visual feature caches of the train and test splits")
            build_caches(folder, variant_config, data, show_progress=show_progress)
            seconds["feature_cache"] = round(time.perf_counter() - cached, 1)
        done = {"start": settings["start"], "from": settings["from"], "seconds": seconds,
                "feature_cache": str(folder / CACHE) if (folder / CACHE).is_file() else None,
                "test_features": str(folder / TEST_CACHE) if (folder / TEST_CACHE).is_file() else None}
        io.write_json(folder / DONE, done)
        return done


def finished(folder: Path, wanted: dict) -> dict | None:
    """done.json of a finished pretraining in `folder` (None when unfinished); refuses one started with other
    settings than `wanted`."""
    saved = folder / "settings.json"
    old = io.read_json(saved, "pretraining settings") if saved.is_file() else wanted
    if old != wanted:
        differ = [k for k in wanted if old.get(k) != wanted[k]]
        raise GPVError(f"{folder} was pretrained with other settings ({', '.join(differ)} differ)",
                       hint="use the same --config/--data/--budget/--set/--from as before, or another --out")
    return io.read_json(folder / DONE, "pretraining record") if (folder / DONE).is_file() else None


def uses_cache(cfg) -> bool:
    """Whether a GPV run of `cfg` reads a feature cache (all its steps with the visual encoder frozen)."""
    t = cfg.train
    return t.cache_features and t.frozen_visual_epochs > 0


def build_caches(folder: Path, cfg, data: Path, *, show_progress: bool) -> None:
    """The feature cache that a GPV run of `cfg` builds for itself (`gpvcli.train.stages.ensure_feature_cache`),
    and the same for the test samples of its tasks."""
    from gpvcli.data.store import SplitStore
    from gpvcli.device import pick_device
    from gpvcli.train.distributed import Dist
    from gpvcli.train.stages import GPVStage, ensure_feature_cache

    device = pick_device(cfg.train.device)
    stage = GPVStage(cfg, data, device)
    dist = Dist(device=device)
    ensure_feature_cache(stage.visual, cfg, stage.train_set, folder / CACHE, dist, show_progress)
    test = SplitStore(data / "test.h5")
    ensure_feature_cache(stage.visual, cfg, stage.dataset(test, cfg.train.tasks), folder / TEST_CACHE, dist,
                         show_progress)


def test_features(out: Path) -> Path | None:
    """The shared feature cache of the test split, when the pretraining made one."""
    path = folder_of(out) / TEST_CACHE
    return path if path.is_file() else None


def link_cache(out: Path, run: Path) -> None:
    """Give a fresh variant folder the shared feature cache (a hard link; a copy across file systems). The
    run still checks its fingerprint and rebuilds a cache made by another encoder."""
    shared = folder_of(out) / CACHE
    if not shared.is_file():
        return
    target = run / CACHE
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(shared, target)
    except OSError:
        with io.atomic_path(target) as tmp:
            shutil.copyfile(shared, tmp)
