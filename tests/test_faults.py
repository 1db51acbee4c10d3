"""Faults a cluster user meets: a full disk, two writers on one folder, resuming a run without its --data
(preemption by SIGTERM is in test_kill_resume.py, beside the kill tests).

A full disk is a size-limited tmpfs where this process may mount one (root, mount allowed), otherwise
writes that fail with ENOSPC (and a free-space probe that says how little is left)."""

import contextlib
import errno
import json
import os
import pathlib
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FAST_TRAIN, hold_lock
from typer.testing import CliRunner

from gpvcli import io, locks, runs
from gpvcli.cli.app import app
from gpvcli.data import prepare as prepare_module
from gpvcli.errors import DiskFullError, GPVError
from gpvcli.model import checkpoint
from gpvcli.train.trainer import train

KB = 1024


@contextlib.contextmanager
def small_filesystem(folder: Path, size: int):
    """Mount a tmpfs of `size` bytes on `folder` where allowed; yields whether it did."""
    folder.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    mounted = os.name == "posix" and os.geteuid() == 0 and shutil.which("mount") is not None and \
        subprocess.run(command, check=False, capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


def fail_writes_beyond(monkeypatch, folder: Path, size: int) -> None:
    """Make `folder` behave as a filesystem of `size` bytes (the fallback of a tmpfs): a write through
    `Path.write_bytes` beyond what its files leave free fails with ENOSPC, and the free-space probe says
    what is left."""
    real = pathlib.Path.write_bytes

    def free(path=None) -> int:
        return max(0, size - io.size_of(folder))

    def write_bytes(self, data):
        if not Path(self).absolute().is_relative_to(folder.absolute()) or len(data) <= free():
            return real(self, data)
        real(self, bytes(data)[:free()])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    monkeypatch.setattr(io, "free_bytes", free)


def snapshot(folder: Path) -> dict:
    """Every file under `folder` (names of temporaries included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


# ---- a full disk ----------------------------------------------------------------------------------

def test_a_write_on_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    disk = tmp_path / "disk"
    big = {"values": list(range(40_000))}                 # about 270 KB of JSON
    with small_filesystem(disk, 64 * KB) as mounted:
        if not mounted:
            fail_writes_beyond(monkeypatch, disk, 64 * KB)
        io.write_json(disk / "metrics.json", {"old": 1})
        with io.atomic_dir(disk / "last") as tmp:
            io.write_text(tmp / "state.json", "1")
        before = snapshot(disk)

        with pytest.raises(DiskFullError) as e:
            io.write_json(disk / "metrics.json", big)
        assert e.value.path == disk / "metrics.json"
        assert e.value.needed >= len(io.json_text(big))
        with pytest.raises(DiskFullError) as e, io.atomic_dir(disk / "last") as tmp:   # named at its final place
            io.write_text(tmp / "state.json", "2")
            io.write_json(tmp / "weights.json", big)
        assert e.value.path == disk / "last" / "weights.json"
        assert str(e.value).startswith(f"no space left on device while writing {disk / 'last' / 'weights.json'} "
                                       "(about ")
        assert "MB needed" in str(e.value) and "MB free; free space or choose another --out)" in str(e.value)
        assert snapshot(disk) == before                     # old versions intact, no temporary left
        if mounted:                                         # an append cut short leaves the log as it was
            io.write_bytes(disk / "filler", b"x" * (io.free_bytes(disk) - 100))
            with pytest.raises(DiskFullError):
                io.append_line(disk / "metrics.jsonl", json.dumps(big))
            assert not (disk / "metrics.jsonl").exists() or (disk / "metrics.jsonl").read_bytes() == b""


@pytest.mark.parametrize("when", ["checked before", "while writing"])
def test_prepare_on_a_full_disk(tiny_world, mini_coco, tmp_path, monkeypatch, when):
    needed = io.size_of(tiny_world["data"])                  # what the prepared folder takes
    disk = tmp_path / "disk"
    with small_filesystem(disk, 4 * KB + needed // 2) as mounted:
        out = disk / "sce"
        prepare_module.prepare("sce", coco_dir=mini_coco, out_dir=out, seed=0)    # an earlier, smaller one
        before = snapshot(disk)
        if not mounted:
            fail_writes_beyond(monkeypatch, disk, 4 * KB + needed // 2)
        if when == "while writing":
            monkeypatch.setattr(io, "check_space", lambda path, needed: None)
        result = CliRunner().invoke(app, ["prepare", "--split", "sce", "--coco-dir", str(tiny_world["coco"]),
                                          "--out", str(out)])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.output
        named = f"{out} " if when == "checked before" else f"{out}/"       # the folder, or a file in it
        assert " ".join(lines[0].split()).startswith(f"error: no space left on device while writing {named}")
        assert "MB needed" in lines[0] and "choose another --out)" in lines[0]
        assert snapshot(disk) == before                     # the earlier folder intact, no temporary, no lock


def test_prepare_replaces_only_a_folder_of_its_own(mini_coco, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".test.h5.host-1.abcdefgh.tmp").write_bytes(b"left by an older gpvcli")
    prepare_module.prepare("sce", coco_dir=mini_coco, out_dir=out, seed=0)
    assert sorted(p.name for p in out.iterdir()) == sorted(prepare_module.PREPARED_FILES)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(GPVError, match="holds files that `gpv prepare` did not write \\(notes.txt\\)"):
        prepare_module.prepare("sce", coco_dir=mini_coco, out_dir=out, seed=0)
    assert (out / "notes.txt").read_text() == "mine"


def test_a_checkpoint_on_a_full_disk_keeps_the_previous_one(tiny_world, tiny_run, tmp_path, monkeypatch):
    size = io.size_of(tiny_run / runs.LAST)                 # one checkpoint of this config
    disk = tmp_path / "disk"
    with small_filesystem(disk, size * 3 // 2) as mounted:  # room for one checkpoint, not for two
        if not mounted:
            calls = []
            real = checkpoint.save_safetensors

            def save(model, path):
                calls.append(path)
                if len(calls) > 1:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
                return real(model, path)
            monkeypatch.setattr(checkpoint, "save_safetensors", save)
        run = disk / "run"
        with pytest.raises(DiskFullError) as e:
            train(run, data_dir=tiny_world["data"], show_progress=False,
                  overrides=FAST_TRAIN + ["train.max_steps=2", "train.save_every=1"])
        assert run / runs.LAST in (e.value.path, e.value.path.parent)      # the folder, or a file in it
        assert json.loads((run / runs.LAST / runs.STATE).read_text())["step"] == 1
        checkpoint.load_model(run / runs.LAST)              # the step-1 checkpoint reads back
        assert sorted(p.name for p in disk.iterdir()) == ["run"]
        left = sorted(p.name for p in run.iterdir() if p.name != runs.TENSORBOARD)   # (with tensorboard installed)
        assert left == [runs.CONFIG, runs.LAST, runs.METRICS, runs.RECORD]


def test_evaluation_on_a_full_disk(tiny_run, tmp_path, monkeypatch):
    from gpvcli.eval.evaluate import evaluate

    disk = tmp_path / "disk"
    with small_filesystem(disk, 4 * KB) as mounted:
        if not mounted:
            fail_writes_beyond(monkeypatch, disk, 4 * KB)
        with pytest.raises(DiskFullError) as e:
            evaluate(tiny_run, out_dir=disk / "eval", limit=16, show_progress=False)
        assert e.value.path.parent == disk / "eval"
        assert [p.name for p in (disk / "eval").iterdir() if p.name.startswith(".")] == []


# ---- one writer per folder ------------------------------------------------------------------------

def test_a_second_writer_stops_at_once_and_changes_nothing(tiny_run, tiny_world, tmp_path, caplog):
    run = tmp_path / "runs" / "c"
    shutil.copytree(tiny_run, run)
    before = snapshot(tmp_path)
    holder = hold_lock(run)
    try:
        result = CliRunner().invoke(app, ["train", "--run", str(run), "--resume"])
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert text.startswith(f"error: {run} is being written by pid {holder.pid} on host {locks.HOST} since ")
        assert text.endswith("(wait for it, or use another --run)")
        with pytest.raises(GPVError, match=f"being written by pid {holder.pid}"):
            train(run, data_dir=tiny_world["data"], overrides=FAST_TRAIN)
        assert {k: v for k, v in snapshot(tmp_path).items() if not k.endswith(".lock")} == before
    finally:
        holder.kill()
        holder.wait()
    assert locks.lock_file(run).exists()                    # left by the killed holder: taken over, and said
    with caplog.at_level("WARNING", logger="gpvcli.locks"), locks.writing(run, option="--run"):
        pass
    assert f"taking over the lock left by pid {holder.pid} on host {locks.HOST}" in caplog.text
    assert not locks.lock_file(run).exists()


def test_prepare_and_ablate_folders_are_locked(mini_coco, tmp_path):
    from gpvcli.ablate import study

    for folder in (tmp_path / "sce", tmp_path / "ablate"):
        holder = hold_lock(folder)
        try:
            with pytest.raises(GPVError, match=f"being written by pid {holder.pid}.*another --out"):
                if folder.name == "sce":
                    prepare_module.prepare("sce", coco_dir=mini_coco, out_dir=folder)
                else:
                    study.collect(folder)
            assert not folder.exists()
        finally:
            holder.kill()
            holder.wait()


# ---- resume takes the run's data ------------------------------------------------------------------

@pytest.fixture
def moved_run(tiny_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def test_resume_without_data_trains_on_the_recorded_data(moved_run, tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv("GPV_HOME", str(tmp_path / "home"))             # the default data: absent
    result = train(moved_run, resume=True, show_progress=False)
    assert result["steps"] == 2
    assert not (tmp_path / "home").exists()
    assert runs.recorded_data_dir(moved_run) == tiny_world["data"].resolve()


def test_resume_refuses_other_data_and_names_moved_data(moved_run, tiny_world, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_world["data"], other)
    (other / "vocab.json").write_text(json.dumps({"words": ["[PAD]", "a"], "min_count": 1}))
    result = CliRunner().invoke(app, ["train", "--run", str(moved_run), "--resume", "--data", str(other)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"--data {other} is not the data {moved_run} was trained on ({tiny_world['data'].resolve()})" \
        in " ".join(result.output.split())

    record = json.loads((moved_run / runs.RECORD).read_text())
    gone = tmp_path / "gone"                                # the data moved away from where the run recorded
    (moved_run / runs.RECORD).write_text(json.dumps({**record, "data_dir": str(gone)}))
    with pytest.raises(GPVError, match=f"trained on the prepared data in {gone}, which is no longer there"):
        train(moved_run, resume=True, show_progress=False)
    with pytest.raises(GPVError, match="does not hold the data"):
        train(moved_run, data_dir=other, resume=True, show_progress=False)
    train(moved_run, data_dir=tiny_world["data"], resume=True, show_progress=False)   # its new place
    assert runs.recorded_data_dir(moved_run) == tiny_world["data"].resolve()
