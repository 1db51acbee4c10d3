"""The embedded default data (DESIGN.md section 6): the synthetic world in $GPV_HOME/synth and its
COCO-SCE preparation in $GPV_HOME/prepared/sce, each made on first use."""

from __future__ import annotations

from pathlib import Path

from gpvcli import paths
from gpvcli.data.prepare import STATS_FILE, prepare
from gpvcli.errors import GPVError
from gpvcli.synth.world import WORLD_MARK, generate


def synth_world(*, show_progress: bool = True) -> Path:
    """The default synthetic world's folder, generated on first use."""
    folder = paths.default_synth_dir()
    if not (folder / WORLD_MARK).is_file():
        generate(folder, show_progress=show_progress)
    return folder


def prepared_data(data_dir: str | Path | None = None, *, prepare_missing: bool = True,
                  show_progress: bool = True) -> Path:
    """The prepared data folder `data_dir` (resolved); without one, the default COCO-SCE folder, prepared
    from the default synthetic world on first use when `prepare_missing`."""
    if data_dir is None:
        data_dir = paths.default_prepared_dir("sce")
        if prepare_missing and not (data_dir / STATS_FILE).is_file():
            prepare("sce", coco_dir=synth_world(show_progress=show_progress), out_dir=data_dir)
    data_dir = Path(data_dir).resolve()
    if not (data_dir / "train.h5").is_file():
        raise GPVError(f"no prepared data in {data_dir}", hint="run `gpv prepare` or pass --data")
    return data_dir
