"""SIGKILL `gpv prepare`, `gpv train` and `gpv ablate` at a seeded random point; the rerun ends where an
uninterrupted run does (prepared HDF5 contents, final weights bit for bit, per-variant results) and leaves
no temporary or unreadable file behind. SIGTERM (a scheduler's preemption) stops `gpv train` after the
step under way with last/ saved and exit status 143; `--resume` then ends bit for bit where an
uninterrupted run does."""

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
from typer.testing import CliRunner

from gpvcli.ablate import study
from gpvcli.cli.app import app
from gpvcli.data.prepare import prepare
from gpvcli.errors import Interrupted
from gpvcli.train.trainer import Trainer, train

SEED = 20240601
ATTEMPTS = 3            # a kill that comes after the command finished is tried again with the next seed
TEMPORARY = re.compile(r"^\..+(\.[A-Za-z0-9-]*-\d+\.[a-z0-9_]{8}(\.tmp)?|\.old)$")     # see gpvcli.io
TRAIN = FAST_TRAIN + ["train.max_steps=6", "train.save_every=2", "model.dropout=0.2"]
# 6 steps of the tiny recipe with checkpoints at steps 2, 4 and 6 (the four-task model's steps: enough to be
# killed part-way); the steps are the ablation's to set, not --set's
ABLATE = {"tasks": "vqa", "budget": 0.004, "schedule": "steps", "eval_samples": 6,
          "sets": [s for s in FAST_TRAIN if not s.startswith("train.epochs")] + ["train.save_every=2"],
          "show_progress": False}
VARIANT = "vqa_rel_modality_s0"


def gpv(*args) -> list[str]:
    return [sys.executable, "-m", "gpvcli", *map(str, args)]


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def kill_at_random_point(cmd: list[str], ready: Callable[[], bool], delay: float, env: dict, log: Path,
                         sig: int = signal.SIGKILL, meanwhile: Callable[[], None] | None = None) -> int | None:
    """Start `cmd`; once `ready()` (a progress marker on disk) holds, call `meanwhile()`, wait `delay` seconds
    and send it `sig`. Its exit status when it was still running at that moment, else None."""
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **env})
        deadline = time.monotonic() + 300
        while proc.poll() is None and not ready():
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"no progress marker within 300 s: {cmd}")
            time.sleep(0.005)
        if meanwhile is not None and proc.poll() is None:
            meanwhile()
        time.sleep(delay)
        running = proc.poll() is None
        proc.send_signal(sig)
        proc.wait()
    assert running or proc.returncode == 0, log.read_text()
    return proc.returncode if running else None


def kill_with_retries(cmd: list[str], folder: Path, ready: Callable[[], bool], max_delay: float,
                      env: dict, **how) -> int | None:
    """Kill `cmd` (which writes `folder`) a seeded random delay in [0, max_delay) after its marker (`how`:
    `kill_at_random_point`'s sig and meanwhile), trying again with the next seed when it finished first.
    Its exit status once a kill interrupted it, else None."""
    for attempt in range(ATTEMPTS):
        delay = np.random.default_rng([SEED, attempt]).uniform(0, max_delay)
        status = kill_at_random_point(cmd, ready, delay, env, folder.with_name(f"{folder.name}.stderr"), **how)
        if status is not None:
            return status
        shutil.rmtree(folder)
    return None


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
                    prepared, lambda: any(p.is_dir() for p in root.glob(".prepare.*")), 0.05),   # its temporary
        "train": (gpv("train", "--run", run, "--data", data, *sets(TRAIN)),
                  run, lambda: _step(run) >= train_at, 0.5),
        "ablate": (gpv("ablate", "--tasks", ABLATE["tasks"], "--data", data, "--budget", ABLATE["budget"],
                       "--schedule", ABLATE["schedule"],
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
    assert not [p for p in out.parent.glob(".prepare.*") if TEMPORARY.match(p.name)]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    for split in ("train", "val", "test"):
        assert_same_h5(out / f"{split}.h5", reference / f"{split}.h5")
    for name in ("vocab.json", "query_vocab.txt", "stats.json"):
        assert (out / name).read_text() == (reference / name).read_text(), name


@pytest.fixture(scope="module")
def train_reference(tiny_world, tmp_path_factory) -> Path:
    """An uninterrupted run of TRAIN."""
    reference = tmp_path_factory.mktemp("reference") / "run"
    train(reference, data_dir=tiny_world["data"], overrides=TRAIN, show_progress=False)
    return reference


def assert_same_weights(a: Path, b: Path) -> None:
    a, b = load_file(a / "last" / "model.safetensors"), load_file(b / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_killed_then_resumed(killed, tiny_world, train_reference):
    run, interrupted = killed["train"]
    assert interrupted.result(), f"train finished before each of {ATTEMPTS} kills"
    assert _step(run) >= 2
    train(run, data_dir=tiny_world["data"], resume=True, show_progress=False)
    check_clean(run)
    assert_same_weights(train_reference, run)


def _logged_step(run: Path) -> int:
    """The last step logged in metrics.jsonl (-1 when none)."""
    try:
        return max(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines())
    except (OSError, ValueError):
        return -1


def test_train_terminated_then_resumed_without_data(tiny_world, train_reference, tmp_path, monkeypatch):
    """SIGTERM at a seeded random step (while a second `gpv train` on the folder is refused), then --resume
    without --data."""
    run, data = tmp_path / "run", tiny_world["data"]
    at = int(np.random.default_rng([SEED, int(signal.SIGTERM)]).choice([1, 3, 5]))   # not a periodic save (2, 4)
    second = []

    def second_writer() -> None:
        second.append(CliRunner().invoke(app, ["train", "--run", str(run), "--data", str(data), *sets(TRAIN)]))

    status = kill_with_retries(gpv("train", "--run", run, "--data", data, *sets(TRAIN)), run,
                               lambda: _logged_step(run) >= at, 0.3, {"GPV_HOME": str(tmp_path / "home")},
                               sig=signal.SIGTERM, meanwhile=second_writer)
    assert status == 143, f"train finished before each of {ATTEMPTS} signals"
    step = _step(run)
    assert at <= step < 6 and _logged_step(run) == step           # last/ holds the step it stopped after
    stderr = " ".join(run.with_name("run.stderr").read_text().split())
    assert f"stopped: by SIGTERM after step {step} of 6; {run / 'last'} saved" in stderr
    assert second[-1].exit_code == 2 and "is being written by pid" in second[-1].output
    monkeypatch.setenv("GPV_HOME", str(tmp_path / "home"))    # no default data: --resume takes the recorded
    train(run, resume=True, show_progress=False)
    check_clean(run)
    assert_same_weights(train_reference, run)
    assert not (tmp_path / "home").exists()


def test_a_second_signal_during_the_final_save_is_ignored(tiny_world, tmp_path, monkeypatch):
    at = int(np.random.default_rng([SEED, int(signal.SIGINT)]).choice([1, 3, 5]))
    signalled = []

    def after_step(self, *args):
        after(self, *args)
        if self.state["step"] == at:
            os.kill(os.getpid(), signal.SIGTERM)

    def save(self, name):
        if self.signals.signum is not None and not signalled:       # the save on the way out
            assert signal.getsignal(signal.SIGTERM) == self.signals.note
            signalled.append(name)
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
        saved(self, name)

    after, saved = Trainer.after_step, Trainer.save
    monkeypatch.setattr(Trainer, "after_step", after_step)
    monkeypatch.setattr(Trainer, "save", save)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as e:
        train(tmp_path / "run", data_dir=tiny_world["data"], overrides=TRAIN, show_progress=False)
    assert e.value.exit_code == 143 and signalled == ["last"] and _step(tmp_path / "run") == at
    check_clean(tmp_path / "run")
    assert signal.getsignal(signal.SIGTERM) == handler                # restored


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
