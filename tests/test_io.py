"""Atomic folder replacement survives a kill at any point."""

import os

import pytest

from gpvcli import io


def _write_version(path, text):
    with io.atomic_dir(path) as tmp:
        (tmp / "state.json").write_text(text)


def test_atomic_dir_replaces_and_leaves_nothing_beside(tmp_path):
    last = tmp_path / "last"
    _write_version(last, "1")
    _write_version(last, "2")
    assert (last / "state.json").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_a_kill_between_the_two_renames_keeps_the_previous_version(tmp_path):
    last = tmp_path / "last"
    _write_version(last, "1")
    os.replace(last, tmp_path / ".last.old")      # where a kill after atomic_dir's first rename leaves it
    assert io.restore_interrupted(last) == last
    assert (last / "state.json").read_text() == "1"
    assert not (tmp_path / ".last.old").exists()

    os.replace(last, tmp_path / ".last.old")
    _write_version(last, "2")                     # the next save also restores first, then replaces
    assert (last / "state.json").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_a_failed_write_keeps_the_old_folder(tmp_path):
    last = tmp_path / "last"
    _write_version(last, "1")
    with pytest.raises(RuntimeError), io.atomic_dir(last) as tmp:
        (tmp / "state.json").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (last / "state.json").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_files_and_folders_follow_the_umask(tmp_path, umask):
    import h5py
    import torch

    old = os.umask(umask)
    try:
        io.write_json(tmp_path / "run.json", {"a": 1})
        with io.atomic_path(tmp_path / "train.h5") as tmp, h5py.File(tmp, "w") as f:   # prepared data
            f["x"] = [1, 2]
        with io.atomic_dir(tmp_path / "last") as tmp:                                  # a checkpoint folder
            torch.save({"step": 1}, tmp / "trainer.pt")
            (tmp / "tokenizer").mkdir()
            (tmp / "tokenizer" / "vocab.txt").write_text("a")
            os.chmod(tmp / "tokenizer" / "vocab.txt", 0o600)                 # a writer that makes files private
    finally:
        os.umask(old)
    file_mode, folder_mode = 0o666 & ~umask, 0o777 & ~umask
    for name in ("run.json", "train.h5", "last/trainer.pt", "last/tokenizer/vocab.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == file_mode, name
    for name in ("last", "last/tokenizer"):
        assert (tmp_path / name).stat().st_mode & 0o777 == folder_mode, name


def test_a_trained_run_is_readable_under_the_umask(tiny_run):
    """Every file and folder of a run (checkpoints, config, metrics) has the mode a new one gets here."""
    paths = [p for p in tiny_run.rglob("*")]
    assert any(p.name == "last" for p in paths) and any(p.suffix == ".safetensors" for p in paths)
    for p in paths:
        assert p.stat().st_mode & 0o777 == io.umask_mode(folder=p.is_dir()), p
