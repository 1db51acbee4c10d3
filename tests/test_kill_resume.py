"""SIGKILL `gpv prepare`, `gpv train` and `gpv ablate` at a seeded random point; the rerun ends where an
uninterrupted run does (prepared HDF5 contents, final weights bit for bit, per-variant results) and leaves
no temporary or unreadable file behind."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import FAST_TRAIN
from safetensors.torch import load_file

from gpvcli.ablate import study
from gpvcli.data.prepare import prepare
from gpvcli.train.trainer import train

SEED = 20240601
ATTEMPTS = 3            # a kill that comes after the command finished is tried again with the next seed
TEMPORARY = re.compile(r"^\..+(\.[A-Za-z0-9-]*-\d+\.[a-z0-9_]{8}(\.tmp)?|\.old)$")     # see gpvcli.io
TRAIN = FAST_TRAIN + ["train.max_steps=6", "train.save_every=2", "model.dropout=0.2"]
# 6 steps of the tiny recipe with checkpoints at steps 2, 4 and 6
ABLATE = {"tasks": "vqa", "budget": 0.01, "eval_samples": 6, "sets": FAST_TRAIN + ["train.save_every=2"],
          "show_progress": False}
VARIANT = "vqa_rel_modality_s0"


def gpv(*args) -> list[str]:
    return [sys.executable, "-m", "gpvcli", *map(str, args)]


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def kill_at_random_point(cmd: list[str], ready: Callable[[], bool], delay: float, env: dict, log: Path) -> bool:
    """Start `cmd`; once `ready()` (a progress marker on disk) holds, wait `delay` seconds and SIGKILL it.
    True when it was still running at that moment."""
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **env})
        deadline = time.monotonic() + 300
        while proc.poll() is None and not ready():
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"no progress marker within 300 s: {cmd}")
            time.sleep(0.005)
        time.sleep(delay)
        running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert running or proc.returncode == 0, log.read_text()
    return running


def kill_with_retries(cmd: list[str], folder: Path, ready: Callable[[], bool], max_delay: float,
                      env: dict) -> bool:
    """Kill `cmd` (which writes `folder`) a seeded random delay in [0, max_delay) after its marker, trying
    again with the next seed when it finished first. True once a kill interrupted it."""
    for attempt in range(ATTEMPTS):
        delay = np.random.default_rng([SEED, attempt]).uniform(0, max_delay)
        if kill_at_random_point(cmd, ready, delay, env, folder.with_name(f"{folder.name}.stderr")):
            return True
        shutil.rmtree(folder)
    return False


def _step(run: Path) -> int:
    """The step of the last/ checkpoint in a run folder (-1 when none)."""
    try:
        return json.loads((run / "last" / "state.json").read_text())["step"]
    except (OSError, ValueError):
        return -1


@pytest.fixture(scope="module")
def killed(tiny_world, tmp_path_factory) -> dict:
    """`gpv prepare`, `gpv train` and `gpv ablate` started together (their slow imports overlap with one
    another and with the tests' uninterrupted reference runs), each killed at a seeded random point once its
    progress marker is on disk: {command: (the folder it wrote, a future that is True once killed)}."""
    root = tmp_path_factory.mktemp("killed")
    rng = np.random.default_rng(SEED)
    train_at, ablate_at = int(rng.choice([2, 4])), int(rng.choice([2, 4, 6]))   # ablate 6: while evaluating
    prepared, run, ablation = root / "prepare", root / "train", root / "ablate"
    data = tiny_world["data"]
    jobs = {
        "prepare": (gpv("prepare", "--split", "sce", "--coco-dir", tiny_world["coco"], "--out", prepared),
                    prepared, prepared.is_dir, 0.05),
        "train": (gpv("train", "--run", run, "--data", data, *sets(TRAIN)),
                  run, lambda: _step(run) >= train_at, 0.5),
        "ablate": (gpv("ablate", "--tasks", ABLATE["tasks"], "--data", data, "--budget", ABLATE["budget"],
                       "--eval-samples", ABLATE["eval_samples"], "--out", ablation, *sets(ABLATE["sets"])),
                   ablation, lambda: _step(ablation / VARIANT) >= ablate_at, 0.5),
    }
    env = {"GPV_HOME": str(root / "home")}
    with ThreadPoolExecutor(len(jobs)) as pool:
        yield {name: (job[1], pool.submit(kill_with_retries, *job, env)) for name, job in jobs.items()}


def check_clean(folder: Path) -> None:
    """No temporary left, and every file the toolkit writes reads back."""
    for p in folder.rglob("*"):
        assert not TEMPORARY.match(p.name), p
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".jsonl":
            [json.loads(line) for line in p.read_text().splitlines()]
        elif p.suffix == ".h5":
            with h5py.File(p, "r"):
                pass
        elif p.suffix == ".safetensors":
            load_file(p)


def h5_contents(path: Path) -> tuple[dict, dict]:
    """(root attributes, {dataset name: values}) of an HDF5 file."""
    datasets = {}
    with h5py.File(path, "r") as f:
        attrs = {k: np.asarray(v).tolist() for k, v in f.attrs.items()}
        f.visititems(lambda name, obj: datasets.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
    return attrs, datasets


def assert_same_h5(a: Path, b: Path) -> None:
    (attrs_a, data_a), (attrs_b, data_b) = h5_contents(a), h5_contents(b)
    assert attrs_a == attrs_b and data_a.keys() == data_b.keys(), a
    for name, x in data_a.items():
        assert np.array_equal(x, data_b[name], equal_nan=x.dtype.kind == "f"), (a, name)


def test_prepare_killed_then_rerun(killed, tiny_world, tmp_path):
    reference = tmp_path / "reference"
    prepare("sce", coco_dir=tiny_world["coco"], out_dir=reference, seed=0)
    out, interrupted = killed["prepare"]
    assert interrupted.result(), f"prepare finished before each of {ATTEMPTS} kills"
    prepare("sce", coco_dir=tiny_world["coco"], out_dir=out, seed=0)
    check_clean(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    for split in ("train", "val", "test"):
        assert_same_h5(out / f"{split}.h5", reference / f"{split}.h5")
    for name in ("vocab.json", "query_vocab.txt", "stats.json"):
        assert (out / name).read_text() == (reference / name).read_text(), name


def test_train_killed_then_resumed(killed, tiny_world, tmp_path):
    reference = tmp_path / "reference"
    train(reference, data_dir=tiny_world["data"], overrides=TRAIN, show_progress=False)
    run, interrupted = killed["train"]
    assert interrupted.result(), f"train finished before each of {ATTEMPTS} kills"
    assert _step(run) >= 2
    train(run, data_dir=tiny_world["data"], resume=True, show_progress=False)
    check_clean(run)
    a = load_file(reference / "last" / "model.safetensors")
    b = load_file(run / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ablate_killed_then_rerun(killed, tiny_world, tmp_path):
    data = tiny_world["data"]
    expected = study.run_ablation(out=tmp_path / "reference", data_dir=data, **ABLATE)["results"][VARIANT]
    out, interrupted = killed["ablate"]
    assert interrupted.result(), f"ablate finished before each of {ATTEMPTS} kills"
    result = study.run_ablation(out=out, data_dir=data, **ABLATE)["results"][VARIANT]
    check_clean(out)
    timing = ("train_seconds", "eval_seconds")
    assert {k: v for k, v in result.items() if k not in timing} == \
        {k: v for k, v in expected.items() if k not in timing}
