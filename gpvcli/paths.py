"""Where the toolkit keeps things when the user does not say.

GPV_HOME (default `~/.cache/gpvcli`) holds the generated synthetic world
(`$GPV_HOME/synth`) and prepared data (`$GPV_HOME/prepared/<split>`).
Runs go to `runs/NAME` under the current folder.
"""

from __future__ import annotations

import os
from pathlib import Path


def gpv_home() -> Path:
    return Path(os.environ.get("GPV_HOME", Path.home() / ".cache" / "gpvcli")).expanduser()


def default_synth_dir() -> Path:
    return gpv_home() / "synth"


def default_prepared_dir(split: str) -> Path:
    return gpv_home() / "prepared" / split
